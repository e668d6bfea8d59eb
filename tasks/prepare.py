"""prepare: the benchmark's data splits, the seed candidate and its baseline trials."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import CampaignRecord, Candidate, Trial
from autolab.workspace import make_candidate
from tasks import INFRA_RETRIES
from tasks.run import run_trials


@task(name="prepare-data", retries=INFRA_RETRIES)
def prepare_data(lab: Lab) -> dict[str, str]:
    """Idempotent: the benchmark skips work whose outputs are already there."""
    data_dir = lab.params.paths.data_dir.resolve()
    return lab.bench.prepare(data_dir if data_dir.exists() else None, lab.prepared_dir)


@task(name="register-seed")
def register_seed(lab: Lab) -> CampaignRecord:
    """Create the campaign (or reopen it) with the seed solution as its first champion."""
    files = lab.bench.seed_files(lab.params.campaign.seed_variant)
    seed = make_candidate(lab.bench.name, files, parents=[], proposal_id=None)
    if not lab.archive.has(Candidate, seed.id):
        lab.archive.put_candidate(seed, files)
    record = lab.archive.campaign()
    if record is None:
        record = CampaignRecord(
            name=lab.name,
            benchmark=lab.bench.name,
            params_hash=lab.params.key(),
            seed_candidate=seed.id,
        )
    elif record.benchmark != lab.bench.name or record.seed_candidate != seed.id:
        raise ValueError(
            f"campaign {lab.name!r} exists for benchmark {record.benchmark!r} with seed "
            f"{record.seed_candidate[:8]}; choose another campaign.name"
        )
    record = record.model_copy(update={"status": "running", "finished_at": None})
    run_id = lab.tracker.start_campaign(record, lab.params)
    record = record.model_copy(update={"mlflow_run_id": run_id})
    lab.archive.put_campaign(record)
    return record


def baseline(lab: Lab) -> list[Trial]:
    """The seed on every seed the evaluation may use: the first reference of every thread."""
    seed = lab.campaign.seed_candidate
    trials = run_trials(lab, seed, lab.seeds(lab.params.evaluation.max_seeds))
    try:
        lab.tracker.log_candidate(
            lab.campaign,
            lab.archive.get(Candidate, seed),
            None,
            trials,
            None,
            None,
            None,
            lab.bench.metric,
        )
    except Exception as err:  # noqa: BLE001 - MLflow is a mirror; the archive is the truth
        print(f"warning: MLflow could not record the seed: {err}")
    return trials
