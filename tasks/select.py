"""select: record the decision, move the champion, mirror it to MLflow."""

from __future__ import annotations

import logging

from prefect import task

from autolab.lab import Lab
from autolab.records import AuditVerdict, Candidate, Decision, Evaluation, Proposal, content_key
from autolab.selection import search_state
from tasks import Halt
from tasks.evaluate import compare_trials, reference_trials

log = logging.getLogger(__name__)


def beats_champion(lab: Lab, candidate_id: str, evaluation: Evaluation) -> tuple[bool, str]:
    """A new champion must be significantly better than the current one, not only its parent."""
    champion = search_state(lab.archive, lab.campaign.seed_candidate, lab.bench.metric).champion_id
    if champion == evaluation.reference_id:
        return True, "beats its parent, the champion"
    vs = compare_trials(
        lab,
        candidate_id,
        reference_trials(lab, candidate_id),
        champion,
        reference_trials(lab, champion),
    )
    lab.archive.put(vs)
    ok = vs.p_value is not None and vs.p_value < lab.params.evaluation.alpha
    p_text = f"{vs.p_value:.2g}" if vs.p_value is not None else "undefined"
    return ok, f"vs champion {champion[:8]}: p={p_text}"


def decide(
    lab: Lab, proposal: Proposal, evaluation: Evaluation, verdict: AuditVerdict | None
) -> Decision:
    cand = evaluation.candidate_id
    champion, outcome, reason = False, "rejected", evaluation.reason
    if evaluation.decision == "failed":
        outcome = "failed"
    elif evaluation.decision == "accept" and verdict is not None and not verdict.passed:
        failed = [c.name for c in verdict.checks if not c.passed]
        reason = f"audit level {verdict.level} failed: {', '.join(failed)}"
    elif evaluation.decision == "accept":
        outcome = "accepted"
        champion, why = beats_champion(lab, cand, evaluation)
        reason = f"{evaluation.reason}; {why}"
    return Decision(
        id=content_key("decision", proposal.id),
        campaign=lab.name,
        thread=proposal.thread,
        proposal_id=proposal.id,
        candidate_id=cand,
        outcome=outcome,
        reason=reason,
        champion=champion,
        evaluation_id=evaluation.id,
        audit_id=verdict.id if verdict else None,
    )


def mirror(
    lab: Lab,
    decision: Decision,
    proposal: Proposal,
    evaluation: Evaluation | None,
    verdict: AuditVerdict | None,
) -> None:
    """MLflow is a view of the archive: a tracking outage must not stop the research."""
    if decision.candidate_id is None:
        return
    try:
        lab.tracker.log_candidate(
            lab.campaign,
            lab.archive.get(Candidate, decision.candidate_id),
            proposal,
            reference_trials(lab, decision.candidate_id),
            evaluation,
            verdict,
            decision,
            lab.bench.metric,
        )
    except Exception as err:  # noqa: BLE001
        log.warning("MLflow mirror failed for %s: %s", decision.candidate_id, err)


@task(name="select")
def select(
    lab: Lab, proposal: Proposal, evaluation: Evaluation, verdict: AuditVerdict | None
) -> Decision:
    decision = decide(lab, proposal, evaluation, verdict)
    lab.archive.put(decision)
    mirror(lab, decision, proposal, evaluation, verdict)
    return decision


@task(name="record-halt")
def record_halt(lab: Lab, proposal: Proposal, candidate_id: str | None, halt: Halt) -> Decision:
    decision = Decision(
        id=content_key("decision", proposal.id),
        campaign=lab.name,
        thread=proposal.thread,
        proposal_id=proposal.id,
        candidate_id=candidate_id,
        outcome=halt.outcome,
        reason=halt.reason,
    )
    lab.archive.put(decision)
    mirror(lab, decision, proposal, None, None)
    return decision
