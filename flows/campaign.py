"""A campaign: prepare, baseline the seed, iterate over threads until a stop, confirm on test.

Started or resumed the same way: everything done before is in the archive and is skipped.
Trials run on the engine's slots (autolab.engine); several iterations are in flight at once,
so proposals are made while other candidates' trials run and every slot has work. The
seed's baseline is one more job on those slots: iterations start beside it, so a slot its
last trials leave free takes a candidate's trial; a look that compares with the seed takes
the seed's trials from the finished baseline (tasks.run.run_trials).
"""

from __future__ import annotations

import contextvars
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from prefect import flow

from autolab.config import load_params
from autolab.engine import more_iterations
from autolab.evaluation import constraint_warning
from autolab.lab import Lab, open_engine, open_lab
from autolab.proposers import describe
from autolab.proposing import proposal_id, proposer_stop
from autolab.records import Decision, Proposal, now
from autolab.usage import record_usage
from benchmarks import FAMILY_NAMES
from flows import FLOW_RESULTS
from flows.iteration import iteration
from tasks.confirm import confirm_on_test, finish
from tasks.prepare import baseline, learn_from_earlier, prepare_data, register_seed

MAX_IN_FLIGHT = 256  # iterations at once, at most (each a thread of this process)
DISPATCH_EVERY_S = 0.25  # how often the slots' load is looked at between completions
USAGE_EVERY_S = 30.0  # the slots' usage is kept at least this often (and at each decision),
# so a run killed between decisions still leaves its duty cycle up to its last half minute


def stop_reason(lab: Lab, run_started: datetime,
                in_flight: set[int] | frozenset[int] = frozenset()) -> str | None:
    """max_proposals counts over the campaign's life (iterations in flight included); the
    wall clock over this run, so a nightly run that resumes a campaign gets its own time. A
    spending cap, or a proposer that keeps failing, stops the proposing too."""
    c = lab.params.campaign
    decisions = lab.archive.all(Decision)
    decided = {d.proposal_id for d in decisions}
    undecided = sum(1 for i in in_flight if proposal_id(lab.name, i) not in decided)
    if len(decisions) + undecided >= c.max_proposals:
        return f"reached max_proposals={c.max_proposals}"
    if now() - run_started >= timedelta(minutes=c.max_wall_clock_min):
        return f"reached max_wall_clock_min={c.max_wall_clock_min}"
    if c.patience:
        since = next((i for i, d in enumerate(reversed(decisions)) if d.champion), len(decisions))
        if since >= c.patience:
            return f"no new champion in {c.patience} proposals"
    return proposer_stop(lab)


def next_index(lab: Lab, running: set[int] | frozenset[int] = frozenset()) -> int:
    """The first iteration neither decided nor in flight (one cut short by a stop or a kill
    is taken up again, its proposal reused)."""
    decided = {d.proposal_id for d in lab.archive.all(Decision)}
    index = 0
    while index in running or proposal_id(lab.name, index) in decided:
        index += 1
    return index


def iterate(lab: Lab, run_started: datetime) -> str:
    """Iterations until a stop, several at once, each in its own thread: another starts
    whenever the slots would otherwise run short of trials (autolab.engine.more_iterations).
    On a stop no new one starts; those in flight finish. A failure of the seed's baseline
    running beside them (`lab.baseline`) ends the campaign at once."""
    e, reason = lab.params.engine, None
    per_iteration = lab.params.evaluation.min_seeds
    running: dict[Future, int] = {}
    lab.activity.stage = "research"
    kept = time.monotonic()
    pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="iteration")
    try:
        while True:
            while reason is None and len(running) < MAX_IN_FLIGHT:
                slots, busy, waiting = lab.engine.load()
                # ahead: at least the configured iterations, more where trials end faster
                # than proposals are made (a slow proposer, short trials, many slots);
                # 0: none, a new iteration only when slots would otherwise idle
                # (at most one iteration per slot: a slow proposer must not feed on itself)
                ahead = e.ahead and max(e.ahead, min(
                    -(-lab.activity.ending_soon() // per_iteration), max(slots, 1)))
                if not more_iterations(max(slots, 1), busy, waiting, lab.activity.proposing,
                                       len(running), per_iteration, ahead, e.max_in_flight):
                    break
                if (reason := stop_reason(lab, run_started, set(running.values()))) is not None:
                    lab.activity.stage = "stopping"
                    break
                index = next_index(lab, set(running.values()))
                lab.activity.starting(index)
                context = contextvars.copy_context()  # the run's Prefect context
                running[pool.submit(context.run, _iteration, lab, index)] = index
            if not running:
                lab.activity.stage = "stopping"
                return reason or "no iteration left"
            done, _ = wait(running, timeout=DISPATCH_EVERY_S, return_when=FIRST_COMPLETED)
            if lab.baseline is not None and lab.baseline.done() and \
                    (failed := lab.baseline.exception()) is not None:
                raise failed  # e.g. the seed failed its baseline
            for future in sorted(done, key=running.get):
                index = running.pop(future)
                report_progress(lab, index, future.result())
            if done or time.monotonic() - kept >= USAGE_EVERY_S:
                record_usage(lab, run_started)
                kept = time.monotonic()
    except BaseException:
        # an infrastructure fault (or an interrupt): the engine's trials are cancelled so
        # the iterations in flight end now instead of running to their decisions
        lab.activity.stage = "stopping"
        lab.engine.close()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _iteration(lab: Lab, index: int) -> Decision:
    """The iteration's DAG as task runs of this campaign's run. Not a subflow: a subflow's
    start and end are blocking calls to Prefect's server, and with many iterations in
    flight they queued on its database (a 16-slot campaign kept its slots 19-60% busy that
    way, 81% this way: RESULTS.md). Nor tagged: a tagged task run first asks the server for
    the tag's concurrency slot, a database write for each new tag that the server answers
    503 (retried 2 s later) whenever its own services are writing."""
    try:
        return iteration.fn(lab, index)
    finally:
        lab.activity.proposed(index)


def report_progress(lab: Lab, index: int, decision: Decision) -> None:
    proposal = lab.archive.get(Proposal, decision.proposal_id)
    steps = (
        "; ".join(
            s.name + "".join(f" {k}={v}" for k, v in s.params.items()) for s in proposal.steps
        )
        if proposal
        else ""
    )
    star = "  NEW CHAMPION" if decision.champion else ""
    print(
        f"[{index + 1}/{lab.params.campaign.max_proposals}] thread {decision.thread} "
        f"{proposal.operator if proposal else '?'}({steps}) -> {decision.outcome}: "
        f"{decision.reason[:110]}{star}",
        flush=True,
    )


@flow(name="campaign", validate_parameters=False, persist_result=False,
      result_storage=FLOW_RESULTS)
def campaign(
    benchmark: str | None = None, params_path: str = "params.yaml", overrides: dict | None = None,
    confirm: bool = True,
) -> dict:
    overrides = dict(overrides or {})
    if benchmark:
        overrides.setdefault("campaign", {})["benchmark"] = benchmark
    params = load_params(params_path, overrides)
    if params.campaign.benchmark in FAMILY_NAMES:  # many problems: a campaign for each
        from flows.family import family_campaign

        return family_campaign(params_path=params_path, overrides=overrides, confirm=confirm)
    lab = open_lab(params)
    run_started = now()

    print(f"{lab.bench.name}: {prepare_data(lab)}", flush=True)
    if lab.params.campaign.learn_from:  # refused here, before the campaign is registered
        print(f"learning from {learn_from_earlier(lab)}", flush=True)
    register_seed(lab)
    note = "" if not lab.unisolated else " - UNISOLATED: trials can read the host's files"
    print(f"sandbox: {lab.isolation}{note}", flush=True)
    print(describe(lab.params.proposer, lab.proposer), flush=True)
    lab.engine = open_engine(lab)
    try:
        return run_campaign(lab, run_started, confirm)
    finally:
        try:
            record_usage(lab, run_started, final=True)
        finally:
            lab.engine.close()
            lab.archive.close()  # SQLite folds its write-ahead log into the file now


def run_campaign(lab: Lab, run_started: datetime, confirm: bool) -> dict:
    slots = lab.engine.slot_names()
    more = " ..." if len(slots) > 8 else ""
    print(f"engine: {len(slots)} slot(s) ({', '.join(slots[:8])}{more}), "
          f"{lab.params.engine.ahead} iteration(s) ahead", flush=True)
    with ThreadPoolExecutor(1, thread_name_prefix="baseline") as pool:
        lab.baseline = pool.submit(contextvars.copy_context().run, seed_baseline, lab)
        try:
            reason = iterate(lab, run_started)
            lab.baseline.result()
        except BaseException:  # an interrupt while the baseline ends: its trials stop too
            lab.engine.close()
            raise
    test = confirm_on_test(lab) if confirm else None  # audit level 3: the held-out split
    record = finish(lab, test, reason)
    print(f"campaign {record.name} finished: {reason}", flush=True)
    return {
        "campaign": record.name,
        "champion": lab.champion(),
        "stop_reason": reason,
        "proposals": len(lab.archive.all(Proposal)),
    }


def seed_baseline(lab: Lab) -> None:
    """The seed on every seed the evaluation may use (tasks.prepare.baseline), reported."""
    seed_trials = baseline(lab)
    vals = [t.metrics[lab.bench.metric.name] for t in seed_trials if t.status == "ok"]
    print(
        f"seed {lab.campaign.seed_candidate[:8]}: {lab.bench.metric.name} "
        f"{statistics.fmean(vals) if vals else float('nan'):.4f} on {len(vals)} seeds",
        flush=True,
    )
    if warning := constraint_warning(lab.campaign.seed_constraints):
        print(warning, flush=True)
