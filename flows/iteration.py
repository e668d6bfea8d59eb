"""One research iteration: propose -> patch -> build -> run -> evaluate -> audit -> select."""

from __future__ import annotations

from prefect import flow

from autolab.lab import Lab
from autolab.records import Decision
from tasks import Halt
from tasks.audit import audit
from tasks.build import build
from tasks.evaluate import evaluate
from tasks.patch import patch
from tasks.propose import propose
from tasks.run import run_trials
from tasks.select import record_halt, select


@flow(name="iteration", flow_run_name="iteration-{index}", validate_parameters=False)
def iteration(lab: Lab, index: int) -> Decision:
    proposal = propose(lab, index)
    if isinstance(proposal, tuple):
        return record_halt(lab, proposal[0], None, proposal[1])

    candidate = patch(lab, proposal)
    if isinstance(candidate, Halt):
        return record_halt(lab, proposal, None, candidate)

    if (halt := build(lab, candidate)) is not None:
        return record_halt(lab, proposal, candidate.id, halt)

    parent, ev = proposal.parents[0], lab.params.evaluation
    seeds = lab.seeds(ev.min_seeds)
    trials = run_trials(lab, candidate.id, seeds)
    run_trials(lab, parent, seeds)  # the parent on the same seeds: matched pairs (cached)
    evaluation = evaluate(lab, candidate.id, trials, parent)
    while evaluation.decision == "more" and len(trials) < ev.max_seeds:  # sequential testing
        seeds = lab.seeds(min(ev.parallel_trials, ev.max_seeds - len(trials)), start=len(trials))
        trials += run_trials(lab, candidate.id, seeds)
        run_trials(lab, parent, seeds)
        evaluation = evaluate(lab, candidate.id, trials, parent)

    verdict = audit(lab, candidate.id, trials) if evaluation.decision != "failed" else None
    return select(lab, proposal, evaluation, verdict)
