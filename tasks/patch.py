"""patch: materialise the candidate from its parent and the proposal's edits."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import Candidate, Proposal
from autolab.workspace import PatchFailed, PatchRefused, apply_edits, make_candidate
from tasks import INFRA_RETRIES, Halt


@task(name="patch", retries=INFRA_RETRIES)
def patch(lab: Lab, proposal: Proposal) -> Candidate | Halt:
    parent_files = lab.archive.read_files(proposal.parents[0])
    try:
        files = apply_edits(parent_files, proposal.edits, lab.bench.editable_files)
    except PatchRefused as err:
        return Halt("refused", str(err))
    except PatchFailed as err:
        return Halt("failed", f"patch failed: {err}")
    candidate = make_candidate(
        lab.bench.name, files, list(proposal.parents), proposal.id, parent_files=parent_files
    )
    if candidate.id in proposal.parents:
        return Halt("refused", "edit reproduces a parent")
    if (known := lab.archive.get(Candidate, candidate.id)) is not None:
        return known  # the same code reached another way: its trials are reused
    lab.archive.put_candidate(candidate, files)
    return candidate
