"""One research iteration: propose -> patch -> build -> run -> evaluate -> audit -> select.

A step that stops the iteration on the candidate's merits returns a Halt, recorded as
the proposal's decision. Several iterations may run at once (flows.campaign): a
candidate's challenge of the champion runs alongside the others', and its decision is
taken under a lock only if the champion it challenged is still the champion; otherwise
it challenges the new one. So a candidate is always crowned against the champion of its
moment.
"""

from __future__ import annotations

from prefect import flow

from autolab.lab import Lab
from autolab.records import Decision
from autolab.stats import next_seed_count
from flows import FLOW_RESULTS
from tasks import Halt
from tasks.audit import audit
from tasks.build import build
from tasks.challenge import challenge_champion
from tasks.evaluate import evaluate
from tasks.patch import patch
from tasks.propose import propose
from tasks.run import run_matched
from tasks.select import record_halt, select


@flow(name="iteration", flow_run_name="iteration-{index}", validate_parameters=False,
      persist_result=False,
      result_storage=FLOW_RESULTS)
def iteration(lab: Lab, index: int) -> Decision:
    proposal = propose(lab, index)
    if isinstance(proposal, Halt):
        return record_halt(lab, proposal)
    candidate = patch(lab, proposal)
    if isinstance(candidate, Halt):
        return record_halt(lab, candidate)
    candidate = build(lab, proposal, candidate)  # audit level 0: the static scan
    if isinstance(candidate, Halt):
        return record_halt(lab, candidate)
    lab.activity.proposed(index)  # its trials are asked for next

    parent, seen = proposal.parents[0], 0
    while True:  # sequential looks; the parent runs the same seeds (matched pairs)
        seeds = lab.seeds(next_seed_count(lab.design, seen))
        trials = run_matched(lab, proposal, candidate.id, parent, seeds)
        if isinstance(trials, Halt):
            return record_halt(lab, trials)
        with lab.activity.phase("decision"):
            evaluation = evaluate(lab, candidate.id, parent)
        if evaluation.decision != "more" or len(trials) >= lab.design.max_seeds:
            break
        seen = len(trials)

    with lab.activity.phase("decision"):
        verdict = audit(lab, candidate.id, evaluation)  # level 1: runtime integrity
    while True:  # level 2 against the champion of the moment, then the decision
        challenge = challenge_champion(lab, candidate.id, evaluation, verdict)
        with lab.decide_lock:
            if challenge is None or challenge.vs_champion.reference_id == lab.champion():
                return select(lab, proposal, evaluation, verdict, challenge)
        # another iteration was crowned meanwhile: challenge the new champion
