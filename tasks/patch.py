"""patch: materialise the candidate from its parent and the proposal's edits."""

from __future__ import annotations

from prefect import task

from autolab.lab import Lab
from autolab.records import Candidate, Decision, Proposal
from autolab.workspace import PatchFailed, PatchRefused, apply_edits, make_candidate
from tasks import INFRA_RETRIES, Halt


@task(name="patch", retries=INFRA_RETRIES, persist_result=False)
def patch(lab: Lab, proposal: Proposal) -> Candidate | Halt:
    parent_files = lab.archive.read_files(proposal.parents[0])
    try:
        files = apply_edits(parent_files, proposal.edits, lab.bench.editable_files)
    except PatchRefused as err:
        return Halt("refused", str(err), proposal)
    except PatchFailed as err:
        return Halt("failed", f"patch failed: {err}", proposal)
    candidate = make_candidate(
        lab.bench.name, files, list(proposal.parents), proposal.id, parent_files=parent_files
    )
    if candidate.id in proposal.parents:
        return Halt("refused", "edit reproduces a parent", proposal)
    with lab.patch_lock:  # the check and the write as one: two at once cannot both win
        existing = lab.archive.get(Candidate, candidate.id)
        if existing is None:
            lab.archive.put_candidate(candidate, files)
            return candidate
    if existing.proposal_id == proposal.id:
        return candidate  # written by this proposal before an interruption
    # evaluating it again would be another look at the same test
    if existing.proposal_id is None:
        return Halt("refused", f"the same code as candidate {candidate.id}, which no "
                    "proposal made (the seed)", proposal, candidate.id)
    # a refusal is no evaluation: only a decision that evaluated it counts here
    earlier = next((d for d in lab.archive.all(Decision) if d.candidate_id == candidate.id
                    and d.proposal_id != proposal.id and d.outcome != "refused"), None)
    if earlier is not None:
        return Halt("refused", f"the same code was evaluated before ({earlier.outcome})",
                    proposal, candidate.id)
    # another iteration in flight made it: its trials are the candidate's
    return Halt("refused", f"the same code is being evaluated for proposal "
                f"{existing.proposal_id}", proposal)
