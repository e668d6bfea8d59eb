"""run: one trial of one candidate on one seed, in the sandbox, recorded on completion."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import Trial
from autolab.runner import run_trial as run_in_sandbox
from tasks import INFRA_RETRIES, INFRA_RETRY_DELAY_S


def trial_id(lab: Lab, candidate_id: str, seed: int, split: str) -> str:
    return Trial.key(
        candidate_id, seed, split, lab.harness_version, lab.budget.model_dump(mode="json")
    )


def _cache_key(_context, parameters: dict) -> str:
    p = parameters
    return "trial-" + trial_id(p["lab"], p["candidate_id"], p["seed"], p.get("split", "val"))


@task(
    name="run-trial",
    task_run_name="trial-{candidate_id:.8}-{split}-{seed}",
    retries=INFRA_RETRIES,
    retry_delay_seconds=INFRA_RETRY_DELAY_S,
    cache_key_fn=_cache_key,
    persist_result=True,
)
def run_trial(lab: Lab, candidate_id: str, seed: int, split: str = "val") -> Trial:
    """Keyed by (candidate, seed, split, harness version, budget): the archive holds each
    completed trial under that key, so a resumed campaign never runs one twice."""
    key = trial_id(lab, candidate_id, seed, split)
    if (done := lab.archive.get(Trial, key)) is not None:
        return done
    trial = run_in_sandbox(
        lab.bench,
        candidate_id,
        lab.archive.read_files(candidate_id),
        seed,
        split,
        lab.budget,
        work_root=lab.trials_dir,
        prepared_dir=lab.prepared_dir,
        hidden=lab.hidden_paths,
        threads=lab.trial_threads,
    )
    assert trial.id == key, "runner and orchestrator disagree on the trial key"
    lab.archive.put(trial)
    return trial


def run_trials(lab: Lab, candidate_id: str, seeds: list[int], split: str = "val") -> list[Trial]:
    """Run seeds `parallel_trials` at a time; each trial is its own Prefect task run."""
    width = lab.params.evaluation.parallel_trials
    trials: list[Trial] = []
    for i in range(0, len(seeds), width):
        futures = [run_trial.submit(lab, candidate_id, s, split) for s in seeds[i : i + width]]
        trials += [f.result() for f in futures]
    for trial in trials:  # a result from Prefect's cache may come from another campaign
        if not lab.archive.has(Trial, trial.id):
            lab.archive.put(trial)
    return trials
