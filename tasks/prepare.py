"""prepare: the benchmark's data splits, the campaign record, the seed's baseline trials."""

from __future__ import annotations

import os

from prefect import task

from autolab.config import fixed_changes
from autolab.evaluation import constraint_results
from autolab.lab import Lab
from autolab.prior import LearnFromError, earlier_results, summary
from autolab.proposers import KEY_ENV
from autolab.proposing import operator_weights
from autolab.records import CampaignRecord, Candidate, Trial
from autolab.runner import clear_leftovers
from autolab.sandbox import ISOLATED, isolation_advice
from autolab.workspace import make_candidate
from tasks import INFRA_RETRIES
from tasks.run import forget_trial, run_trials


class CampaignRefused(ValueError):
    """The campaign cannot start or resume as asked; the message says why and what to do."""


class SettingsRefused(CampaignRefused):
    """Refused for its settings (changed fixed settings, isolation, proposer): the same
    for every member of a family, so a family campaign stops rather than go on without."""


@task(name="prepare-data", retries=INFRA_RETRIES, persist_result=False)
def prepare_data(lab: Lab) -> dict[str, str]:
    """Idempotent: the benchmark skips work whose outputs are already there."""
    data_dir = lab.params.paths.data_dir.resolve()
    return lab.bench.prepare(data_dir if data_dir.exists() else None, lab.prepared_dir)


def check_isolation(lab: Lab) -> None:
    """A proposer that writes free-form code runs only where files can be hidden, unless
    the user opts in (sandbox.allow_unisolated)."""
    if lab.isolation not in ISOLATED and lab.required_isolation in ISOLATED:
        raise SettingsRefused(
            f"the {lab.proposer.name} proposer writes free-form code, and this machine offers "
            f"only '{lab.isolation}' isolation, which cannot hide the data, the test split or "
            f"the project from it. {isolation_advice().capitalize()}, or set "
            "sandbox.allow_unisolated: true to run anyway (results are marked unisolated)."
        )


def check_resume(lab: Lab, record: CampaignRecord | None, seed_id: str) -> dict:
    """The campaign's fixed settings; refused when an existing campaign had others."""
    fixed = lab.params.fixed() | {"setup": lab.setup.model_dump(mode="json")}
    if record is None:
        return fixed
    if record.benchmark != lab.bench.name or record.seed_candidate != seed_id:
        raise CampaignRefused(
            f"campaign {lab.name!r} exists for benchmark {record.benchmark!r} with seed "
            f"{record.seed_candidate[:8]}; choose another campaign.name"
        )
    if changes := fixed_changes(_flat(record.fixed), _flat(fixed)):
        raise SettingsRefused(
            f"campaign {lab.name!r} was started with other settings; resuming would mix "
            "results that mean different things:\n  " + "\n  ".join(changes) +
            "\nRestore them, or choose another campaign.name to start a new campaign."
        )
    return fixed


def check_proposer(lab: Lab) -> None:
    """Claude asked for by name needs its key in the environment (never in params); the
    operator odds must give weight to an operator the proposer has."""
    if lab.params.proposer.kind == "claude" and not os.environ.get(KEY_ENV):
        raise SettingsRefused(f"proposer.kind claude needs {KEY_ENV} in the environment "
                              "(or kind auto, which falls back to the offline proposer)")
    if not any(w > 0 for w in operator_weights(lab).values()):
        have = ", ".join(sorted(getattr(lab.proposer, "operators", ())))
        raise SettingsRefused(f"proposer.operators gives no weight to an operator the "
                              f"{lab.proposer.name} proposer has ({have})")


def preflight(lab: Lab) -> None:
    """Every refusal a campaign's start can meet, checked before any flow runs, so a refusal
    is one clear line rather than a failed flow run."""
    check_proposer(lab)
    check_isolation(lab)
    learn_from_earlier(lab)
    if (record := lab.archive.campaign()) is not None:
        prepare_data.fn(lab)
        files = lab.bench.seed_files(lab.params.campaign.seed_variant)
        check_resume(lab, record, make_candidate(lab.bench.name, files, [], None).id)


def learn_from_earlier(lab: Lab) -> str:
    """Reads what the campaigns in campaign.learn_from judged into `lab.learned` (the
    proposer's prior, autolab.prior); one that cannot serve refuses the campaign."""
    try:
        lab.learned = earlier_results(lab.params)
    except LearnFromError as err:
        raise CampaignRefused(str(err)) from None
    return summary(lab.learned)


@task(name="register-seed", persist_result=False)
def register_seed(lab: Lab) -> CampaignRecord:
    """Create the campaign (or reopen it) with the seed solution as its first champion.
    A resume with different fixed settings is refused, naming each change."""
    check_proposer(lab)
    check_isolation(lab)
    files = lab.bench.seed_files(lab.params.campaign.seed_variant)
    seed = make_candidate(lab.bench.name, files, parents=[], proposal_id=None)
    if not lab.archive.has(Candidate, seed.id):
        lab.archive.put_candidate(seed, files)
    record = lab.archive.campaign()
    fixed = check_resume(lab, record, seed.id)
    if record is None:
        record = CampaignRecord(
            name=lab.name, benchmark=lab.bench.name, params_hash=lab.params.key(), fixed=fixed,
            seed_candidate=seed.id, isolation=lab.isolation, unisolated=lab.unisolated,
        )  # fmt: skip
    for stale in (lab.trials_dir.iterdir() if lab.trials_dir.exists() else ()):
        clear_leftovers(stale)  # what a run killed with its orchestrator left running
    record = record.model_copy(update={"status": "running", "finished_at": None,
                                       "params_hash": lab.params.key()})
    lab.archive.put_campaign(record)
    record = record.model_copy(update={"mlflow_run_id": start_tracking(lab, record)})
    lab.archive.put_campaign(record)
    return record


def start_tracking(lab: Lab, record: CampaignRecord) -> str | None:
    """Open the campaign's MLflow run; a store rebuilt from scratch gets the whole archive
    replayed into it. MLflow is a view: if it still fails, the campaign goes on without."""
    try:
        run_id = lab.tracker.start_campaign(record, lab.params)
        if lab.tracker.rebuilt:
            print(f"MLflow store was unusable ({lab.tracker.rebuilt}); moved aside and "
                  "rebuilt from the archive", flush=True)
            lab.tracker.sync(lab.archive, lab.params, lab.bench.metric)
        return run_id
    except Exception as err:  # noqa: BLE001
        print(f"warning: MLflow unavailable, tracking off for this run: {err}", flush=True)
        lab.tracker.enabled = False
        return None


def _flat(fixed: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in fixed.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def baseline(lab: Lab) -> list[Trial]:
    """The seed on every seed the evaluation may use: the first reference of every thread.
    A seed solution that fails there leaves nothing to compare against: the campaign stops."""
    seed = lab.campaign.seed_candidate
    jobs = [(seed, s) for s in lab.seeds(lab.params.evaluation.max_seeds)]
    trials = run_trials(lab, jobs, of_baseline=True)
    if bad := [t for t in trials if t.status != "ok"]:
        # the seed is the benchmark's own solution: a failure here has almost surely met
        # the machine (load, a kill), not its code, so it is run once more
        for t in bad:
            forget_trial(lab, t)
        trials = run_trials(lab, jobs, of_baseline=True)
    if bad := [t for t in trials if t.status != "ok"]:
        raise CampaignRefused(
            f"the seed solution failed {len(bad)} of its {len(trials)} baseline trials "
            f"(seed {bad[0].seed}: {bad[0].failure}: {bad[0].reason}); nothing can be compared "
            f"with it. See {lab.trials_dir / bad[0].id / 'log.txt'}"
        )
    if lab.bench.metric.constraints:  # the seed must meet them too, or be flagged
        checked = constraint_results(trials, lab.bench.metric, lab.params.evaluation.alpha)
        lab.archive.put_campaign(lab.campaign.model_copy(update={"seed_constraints": checked}))
    try:
        lab.tracker.log_candidate(lab.campaign, lab.archive.get(Candidate, seed), None, trials,
                                  None, None, None, lab.bench.metric)
        lab.tracker.log_seed_constraints(lab.campaign)
    except Exception as err:  # noqa: BLE001 - MLflow is a mirror; the archive is the truth
        print(f"warning: MLflow could not record the seed: {err}")
    return trials
