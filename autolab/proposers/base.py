"""What every proposer sees and returns: the offline search and Claude share this seam."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from autolab.records import Cost, EditStep, FileEdit, Operator
from benchmarks.protocol import MetricSpec, SearchSpace


class CandidateView(BaseModel):
    """A candidate as a proposer sees it: its files, how it scored and how it was made."""

    id: str
    files: dict[str, str]
    mean: float | None = Field(None, description="mean validation metric; None if never scored")
    n_trials: int = 0
    lineage_steps: list[EditStep] = Field(
        default_factory=list, description="every named step applied from the seed to here"
    )


class HistoryItem(BaseModel):
    """One past proposal and what became of it, failures and negative results included."""

    candidate_id: str | None
    parent_id: str
    operator: Operator
    steps: list[EditStep]
    outcome: str = Field(description="accepted | rejected | failed | refused")
    reason: str = ""
    mean: float | None = None
    parent_mean: float | None = None
    knobs: dict[str, str | int | float | bool] = Field(default_factory=dict)


class ProposalRequest(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    benchmark: str
    operator: Operator
    thread: int
    parents: list[CandidateView] = Field(description="one parent; two for crossover")
    base: CandidateView | None = Field(None, description="common ancestor, for crossover")
    editable_files: list[str]
    metric: MetricSpec
    search_space: SearchSpace
    history: list[HistoryItem] = Field(default_factory=list)
    rng_seed: int = 0


class Draft(BaseModel):
    """A proposer's answer; the patch step turns it into a candidate."""

    operator: Operator
    rationale: str
    steps: list[EditStep] = Field(default_factory=list)
    edits: list[FileEdit]
    cost: Cost = Field(default_factory=Cost)


class ProposalError(RuntimeError):
    """The proposer could not produce a usable edit (garbled reply, nothing left to try...)."""


@runtime_checkable
class Proposer(Protocol):
    name: str
    operators: frozenset[str]
    free_form: bool  # writes code of its own (needs filesystem isolation unless opted out)

    def propose(self, request: ProposalRequest) -> Draft: ...
