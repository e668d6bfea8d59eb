"""propose: choose thread, parent(s) and operator, build the context, ask the proposer."""

from __future__ import annotations

import logging

from prefect import task
from prefect.context import TaskRunContext

from autolab.lab import Lab
from autolab.proposing import next_proposal
from autolab.records import Proposal, Spend
from tasks import INFRA_RETRIES, INFRA_RETRY_DELAY_S, Halt

log = logging.getLogger(__name__)


def last_attempt() -> bool:
    """Whether this run is the last the task's retries allow (or a plain function call)."""
    ctx = TaskRunContext.get()
    return ctx is None or ctx.task_run.run_count > ctx.task.retries


@task(name="propose", retries=INFRA_RETRIES, retry_delay_seconds=INFRA_RETRY_DELAY_S,
      persist_result=False)
def propose(lab: Lab, index: int) -> Proposal | Halt:
    """The proposal for iteration `index`; an existing one is reused on resume. A model that
    cannot be reached is retried by this task; after the last retry it is a recorded failure."""
    proposal = next_proposal(lab, index, last_attempt=last_attempt())
    mirror(lab, index, proposal)
    return proposal if proposal.edits else Halt("failed", proposal.rationale, proposal)


def mirror(lab: Lab, index: int, proposal: Proposal) -> None:
    """Costs and the transcript in MLflow: a view, so an outage there changes nothing."""
    try:
        spend = lab.archive.all(Spend)
        if spend or proposal.transcript:
            transcript = lab.archive.read_text(proposal.transcript) if proposal.transcript else None
            lab.tracker.log_proposal(lab.campaign, index, proposal, spend, transcript)
    except Exception as err:  # noqa: BLE001
        log.warning("MLflow mirror failed for proposal %s: %s", proposal.id, err)
