"""The A/A proposer: every proposal is its parent with its randomness changed and nothing
else (the benchmark's `neutral_variant`). Run through the real loop, the share of such
candidates accepted is the evaluation's false-accept rate (`autolab aa-test`)."""

from __future__ import annotations

from autolab.proposers.base import Draft, ProposalRequest
from autolab.records import EditStep, FileEdit
from benchmarks import get_benchmark


class AAProposer:
    name = "aa"
    operators = frozenset({"tune", "improve", "crossover"})
    free_form = False

    def propose(self, request: ProposalRequest) -> Draft:
        parent = request.parents[0]
        index = request.rng_seed
        files = get_benchmark(request.benchmark).neutral_variant(parent.files, index)
        edits = [FileEdit(path=p, replace=t) for p, t in files.items() if parent.files.get(p) != t]
        return Draft(operator=request.operator, rationale=f"A/A variant {index}: same expected "
                     "metric as its parent, its own randomness", steps=[EditStep(name="aa",
                     params={"variant": index})], edits=edits)
