"""One module per step of the iteration DAG: thin Prefect tasks over plain functions.

One convention for a step that stops an iteration on the candidate's merits: it returns
a `Halt` instead of its product, and the flow records it as the proposal's decision.
Only infrastructure faults raise, and only those are retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autolab.records import AuditVerdict, Proposal


@dataclass(frozen=True)
class Halt:
    outcome: Literal["refused", "failed", "rejected"]
    reason: str
    proposal: Proposal
    candidate_id: str | None = None
    verdict: AuditVerdict | None = None  # the audit that caught it, where one did


INFRA_RETRIES = 2
INFRA_RETRY_DELAY_S = 2
