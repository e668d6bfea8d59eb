"""A campaign: prepare, baseline the seed, iterate over threads until a stop, confirm on test.

Started or resumed the same way: everything done before is in the archive and is skipped.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from prefect import flow

from autolab.config import load_params
from autolab.evaluation import constraint_warning
from autolab.lab import Lab, open_lab
from autolab.proposers import describe
from autolab.proposing import proposer_stop
from autolab.records import Decision, Proposal, now
from benchmarks import FAMILY_NAMES
from flows import FLOW_RESULTS
from flows.iteration import iteration
from tasks.confirm import confirm_on_test, finish
from tasks.prepare import baseline, prepare_data, register_seed


def stop_reason(lab: Lab, run_started: datetime) -> str | None:
    """max_proposals counts over the campaign's life; the wall clock over this run, so a
    nightly run that resumes a campaign gets its own time. A spending cap, or a proposer
    that keeps failing, stops the proposing too."""
    c = lab.params.campaign
    decisions = lab.archive.all(Decision)
    if len(decisions) >= c.max_proposals:
        return f"reached max_proposals={c.max_proposals}"
    if now() - run_started >= timedelta(minutes=c.max_wall_clock_min):
        return f"reached max_wall_clock_min={c.max_wall_clock_min}"
    if c.patience:
        since = next((i for i, d in enumerate(reversed(decisions)) if d.champion), len(decisions))
        if since >= c.patience:
            return f"no new champion in {c.patience} proposals"
    return proposer_stop(lab)


def next_index(lab: Lab) -> int:
    """Iterations run in order, so the next one is the first without a decision."""
    return lab.archive.count(Decision)


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
    register_seed(lab)
    note = "" if not lab.unisolated else " - UNISOLATED: trials can read the host's files"
    print(f"sandbox: {lab.isolation}{note}", flush=True)
    print(describe(lab.params.proposer, lab.proposer), flush=True)
    seed_trials = baseline(lab)
    vals = [t.metrics[lab.bench.metric.name] for t in seed_trials if t.status == "ok"]
    print(
        f"seed {lab.campaign.seed_candidate[:8]}: {lab.bench.metric.name} "
        f"{statistics.fmean(vals) if vals else float('nan'):.4f} on {len(vals)} seeds",
        flush=True,
    )
    if warning := constraint_warning(lab.campaign.seed_constraints):
        print(warning, flush=True)

    while (reason := stop_reason(lab, run_started)) is None:
        index = next_index(lab)
        report_progress(lab, index, iteration(lab, index))

    test = confirm_on_test(lab) if confirm else None  # audit level 3: the held-out split
    record = finish(lab, test, reason)
    print(f"campaign {record.name} finished: {reason}", flush=True)
    return {
        "campaign": record.name,
        "champion": lab.champion(),
        "stop_reason": reason,
        "proposals": len(lab.archive.all(Proposal)),
    }
