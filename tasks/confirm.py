"""confirm: the champion against the seed on the held-out test split, then export it."""

from __future__ import annotations

import json
import shutil

from prefect import task

from autolab.archive import atomic_write
from autolab.lab import Lab
from autolab.records import CampaignRecord, TestResult, now
from autolab.selection import search_state
from tasks.evaluate import compare_trials, reference_trials
from tasks.run import run_trials


def champion_id(lab: Lab) -> str:
    return search_state(lab.archive, lab.campaign.seed_candidate, lab.bench.metric).champion_id


@task(name="confirm-on-test")
def confirm_on_test(lab: Lab) -> TestResult:
    """Test-split trials are run only here, after selection is over, never to choose."""
    seeds = lab.seeds(lab.params.evaluation.test_seeds)
    seed, champ = lab.campaign.seed_candidate, champion_id(lab)
    seed_trials = run_trials(lab, seed, seeds, split="test")
    champ_trials = run_trials(lab, champ, seeds, split="test") if champ != seed else seed_trials
    evaluation = compare_trials(lab, champ, champ_trials, seed, seed_trials)
    lab.archive.put(evaluation)
    return TestResult(champion_id=champ, seed_id=seed, evaluation=evaluation)


@task(name="finish")
def finish(lab: Lab, test: TestResult, stop_reason: str) -> CampaignRecord:
    seed = lab.campaign.seed_candidate
    val = compare_trials(
        lab,
        test.champion_id,
        reference_trials(lab, test.champion_id),
        seed,
        reference_trials(lab, seed),
    )
    lab.archive.put(val)
    record = lab.campaign.model_copy(
        update={
            "status": "finished",
            "stop_reason": stop_reason,
            "val": val,
            "test": test,
            "finished_at": now(),
        }
    )
    lab.archive.put_campaign(record)
    export_champion(lab, record)
    try:
        lab.tracker.finish_campaign(record, lab.bench.metric)
    except Exception as err:  # noqa: BLE001 - MLflow is a mirror; the archive is the truth
        print(f"warning: MLflow could not record the campaign's end: {err}")
    return record


def export_champion(lab: Lab, record: CampaignRecord) -> None:
    """The champion's files and numbers, a DVC-tracked output of the campaign stage."""
    out = lab.params.paths.prepared_dir.resolve() / lab.bench.name / "champion"
    if out.exists():
        shutil.rmtree(out)  # an earlier champion's files must not linger beside the new one
    champ = record.test.champion_id if record.test else champion_id(lab)
    for path, text in lab.archive.read_files(champ).items():
        atomic_write(out / path, text.encode())
    metric = lab.bench.metric.name
    val = record.val
    summary = {
        "campaign": record.name,
        "champion": champ,
        f"val_{metric}": val.mean if val else None,
        f"val_{metric}_seed": val.reference_mean if val else None,
        "val_p_value": val.p_value if val else None,
        f"test_{metric}": record.test.evaluation.mean if record.test else None,
        f"test_{metric}_seed": record.test.evaluation.reference_mean if record.test else None,
        "test_p_value": record.test.evaluation.p_value if record.test else None,
    }
    atomic_write(out.parent / "champion.json", json.dumps(summary, indent=1).encode())
