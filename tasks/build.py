"""build: cheap gates before any trial: the static scan (audit level 0)."""

from __future__ import annotations

from prefect import task

from autolab.audit import static_check, verdict
from autolab.lab import Lab
from autolab.records import Candidate, Proposal
from tasks import Halt


@task(name="build", persist_result=False)
def build(lab: Lab, proposal: Proposal, candidate: Candidate) -> Candidate | Halt:
    check = static_check(lab.bench, lab.archive.read_files(candidate.id),
                         lab.params.audit.static_scan)
    if check.passed:
        return candidate
    caught = verdict(candidate.id, [check])
    lab.archive.put(caught)
    return Halt("failed", f"build: {check.evidence}", proposal, candidate.id, caught)
