"""One module per step of the iteration DAG: thin Prefect tasks over plain functions.

A task that stops an iteration on the candidate's merits returns a `Halt` (it becomes a
recorded decision); only infrastructure faults raise, and only those are retried.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Halt:
    outcome: str  # refused | failed | rejected
    reason: str


INFRA_RETRIES = 2
INFRA_RETRY_DELAY_S = 2
