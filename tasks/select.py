"""select: record the decision, move the champion, mirror it to MLflow."""

from __future__ import annotations

import logging

from prefect import task

from autolab.lab import Lab
from autolab.records import AuditVerdict, Candidate, Decision, Evaluation, Proposal, content_key
from autolab.selection import Challenge, decide
from tasks import Halt

log = logging.getLogger(__name__)


def mirror(lab: Lab, decision: Decision, proposal: Proposal, evaluation: Evaluation | None,
           verdict: AuditVerdict | None) -> None:
    """MLflow is a view of the archive: a tracking outage must not stop the research."""
    if decision.candidate_id is None:
        return
    try:
        transcript = lab.archive.read_text(proposal.transcript) if proposal.transcript else None
        lab.tracker.log_candidate(
            lab.campaign, lab.archive.get(Candidate, decision.candidate_id), proposal,
            lab.comparable(decision.candidate_id) + lab.comparable(decision.candidate_id, "audit"),
            evaluation, verdict, decision, lab.bench.metric, transcript,
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001
        log.warning("MLflow mirror failed for %s: %s", decision.candidate_id, err)


@task(name="select", persist_result=False)
def select(lab: Lab, proposal: Proposal, evaluation: Evaluation, verdict: AuditVerdict,
           challenge: Challenge | None) -> Decision:
    outcome, reason, crowned = decide(evaluation, verdict, challenge)
    final = challenge.verdict if challenge and challenge.verdict else verdict
    decision = Decision(
        id=content_key("decision", proposal.id), campaign=lab.name, thread=proposal.thread,
        proposal_id=proposal.id, candidate_id=evaluation.candidate_id, outcome=outcome,
        reason=reason, champion=crowned, evaluation_id=evaluation.id, audit_id=final.id,
        p_value=evaluation.p_value,
        constraint_p_values={c.bound: c.p_value for c in evaluation.constraints},
    )  # fmt: skip
    lab.archive.put(decision)
    mirror(lab, decision, proposal, evaluation, final)
    return decision


@task(name="record-halt", persist_result=False)
def record_halt(lab: Lab, halt: Halt) -> Decision:
    p = halt.proposal
    decision = Decision(
        id=content_key("decision", p.id), campaign=lab.name, thread=p.thread, proposal_id=p.id,
        candidate_id=halt.candidate_id, outcome=halt.outcome, reason=halt.reason,
        audit_id=halt.verdict.id if halt.verdict else None,
    )  # fmt: skip
    lab.archive.put(decision)
    mirror(lab, decision, p, None, halt.verdict)
    return decision
