"""run: trials of a candidate, in the sandbox, each recorded in the archive on completion.

A trial is a Prefect task run whose cache key is the trial's archive id, so a resumed
campaign never runs one twice. Prefect keeps its cache records and results inside the
campaign's folder (`<campaign>/prefect/`), never in the user's home: a different
campaign, or a fresh clone, shares nothing and runs every trial itself.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from prefect import task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.filesystems import LocalFileSystem
from prefect.futures import as_completed

from autolab.audit import runtime_verdict
from autolab.engine import TrialJob
from autolab.lab import Lab
from autolab.records import Proposal, Trial
from autolab.runner import run_trial as run_in_sandbox
from tasks import INFRA_RETRIES, INFRA_RETRY_DELAY_S, Halt

_STORAGE: dict[Path, LocalFileSystem] = {}
_STORAGE_LOCK = threading.Lock()


def trial_id(lab: Lab, candidate_id: str, seed: int, split: str) -> str:
    return Trial.key(candidate_id, seed, split, lab.setup.key())


def _cache_key(_context, parameters: dict) -> str:
    p = parameters
    return "trial-" + trial_id(p["lab"], p["candidate_id"], p["seed"], p.get("split", "val"))


@task(
    name="run-trial",
    task_run_name="trial-{candidate_id:.8}-{split}-{seed}",
    retries=INFRA_RETRIES,
    retry_delay_seconds=INFRA_RETRY_DELAY_S,
    persist_result=True,
)
def run_trial(lab: Lab, candidate_id: str, seed: int, split: str = "val") -> Trial:
    """Keyed by the candidate, seed, split and the trial setup (budget, harness, data,
    runner, threads, libraries, device, isolation)."""
    key = trial_id(lab, candidate_id, seed, split)
    if (done := lab.archive.get(Trial, key)) is not None:
        return done
    files = lab.archive.read_files(candidate_id)

    def keep(trial: Trial) -> None:
        assert trial.id == key, "runner and orchestrator disagree on the trial key"
        lab.archive.put(trial)

    if lab.engine is not None:  # on a slot the engine picks; recorded by the request that
        # placed it, before another may ask for it afresh (not again by those sharing it)
        return lab.engine.run(TrialJob(
            benchmark=lab.bench.name, candidate_id=candidate_id, files=files, seed=seed,
            split=split, setup=lab.setup.model_dump(mode="json"),
            work_root=str(lab.trials_dir), prepared_dir=str(lab.prepared_dir),
            cache_root=str(lab.root / "cache"),
        ), lookup=lambda: lab.archive.get(Trial, key), keep=keep)  # fmt: skip
    trial = run_in_sandbox(
        lab.bench, candidate_id, files, seed, split, lab.setup,
        work_root=lab.trials_dir, prepared_dir=lab.prepared_dir,
        gpu=0 if lab.bench.hardware == "gpu" else None, cache_root=lab.root / "cache",
    )
    keep(trial)
    return trial


def _campaign_task(lab: Lab):
    """run_trial with its cache and results in the campaign's own folder. The folder's
    storage block is saved on Prefect's server once per process: the iterations in flight
    that ask for it at the same time wait for that one save (each a request the server
    may answer late; many at once held every slot idle for tens of seconds)."""
    folder = lab.root / "prefect"
    with _STORAGE_LOCK:
        if folder not in _STORAGE:
            block = LocalFileSystem(basepath=str(folder / "results"))
            block.save("autolab-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16],
                       overwrite=True)
            _STORAGE[folder] = block
    policy = CacheKeyFnPolicy(cache_key_fn=_cache_key).configure(key_storage=folder / "keys")
    return run_trial.with_options(result_storage=_STORAGE[folder], cache_policy=policy)


def run_trials(lab: Lab, jobs: list[tuple[str, int]], split: str = "val",
               stop_if_fails: str | None = None, of_baseline: bool = False) -> list[Trial]:
    """(candidate, seed) jobs, each its own task run on the engine's slots (shared with the
    other iterations in flight). With `stop_if_fails` they go `parallel_trials` at a time,
    and no new batch starts once a trial of that candidate has failed; without it (the
    seed's baseline, the audit's replications, the test half) all are asked for at once,
    so that they spread over every free slot.

    While the seed's baseline runs (`lab.baseline`), the seed's val trials asked for by
    anyone else are taken from it once it has finished (its failed trials run again, or
    the campaign refused), so a look never compares with a seed trial that is about to
    be replaced, nor runs one the baseline is running."""
    runner = _campaign_task(lab)
    trials: list[Trial] = []
    todo, from_baseline = [], []
    pending = lab.baseline if not of_baseline and split == "val" else None
    if pending is not None and pending.done():
        pending = None
    seed = lab.campaign.seed_candidate if pending is not None else None
    for c, s in jobs:  # archived trials are not work: only the rest is batched
        if c == seed:
            from_baseline.append((c, s))
        elif (done := lab.archive.get(Trial, trial_id(lab, c, s, split))) is not None:
            trials.append(done)
        else:
            todo.append((c, s))
    width = lab.params.evaluation.parallel_trials if stop_if_fails else max(1, len(todo))
    if lab.engine is None:  # no engine to place them: no more at once than there are slots
        width = min(width, max(1, len(lab.slots)))
    for i in range(0, len(todo), width):
        batch = todo[i : i + width]
        lab.activity.asked(len(batch))  # the engine's load counts them from now
        returned = 0
        try:
            futures = [runner.submit(lab, c, s, split) for c, s in batch]
            done: dict[int, Trial] = {}
            for f in as_completed(futures):  # each counted back as soon as it is done
                done[id(f)] = f.result()
                returned += 1
                lab.activity.asked(-1)
            trials.extend(done[id(f)] for f in futures)
        finally:  # those not returned (an error, an interrupt) are given up on
            lab.activity.asked(returned - len(batch), returned=False)
        if stop_if_fails and any(t.candidate_id == stop_if_fails and t.status != "ok"
                                 for t in trials):
            return trials
    if from_baseline:
        pending.result()  # raises what stopped the baseline (the campaign is refused)
        trials.extend(run_trials(lab, from_baseline, split))
    return trials


def forget_trial(lab: Lab, trial: Trial) -> None:
    """Make a trial's work undone (its record kept aside, its cache entry gone), so the
    next run_trials does it again."""
    lab.archive.supersede(Trial, trial.id)
    (lab.root / "prefect" / "keys" / f"trial-{trial.id}").unlink(missing_ok=True)


def run_matched(
    lab: Lab, proposal: Proposal | None, candidate_id: str, reference_id: str,
    seeds: list[int], split: str = "val",
) -> list[Trial] | Halt:
    """The candidate and its reference on the same seeds (matched pairs). A failed trial
    of the candidate halts the iteration; an integrity or budget failure comes with the
    level-1 audit that caught it."""
    jobs = list(dict.fromkeys((c, s) for s in seeds for c in (candidate_id, reference_id)))
    ran = run_trials(lab, jobs, split, stop_if_fails=candidate_id if proposal else None)
    trials = [t for t in ran if t.candidate_id == candidate_id]
    bad = next((t for t in trials if t.status != "ok"), None)
    if bad is None or proposal is None:
        return trials
    verdict = None
    if bad.failure in ("integrity", "budget"):
        verdict = runtime_verdict(candidate_id, trials, lab.harness_version, lab.budget,
                                  lab.required_isolation)
        lab.archive.put(verdict)
    reason = f"{bad.split} seed {bad.seed}: {bad.failure}: {bad.reason}"
    return Halt("failed", reason, proposal, candidate_id, verdict)
