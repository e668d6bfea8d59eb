"""What every proposer sees and returns: the offline search and the LLMs share this seam."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from autolab.records import Cost, EditStep, FileEdit, Operator, Transcript
from benchmarks.protocol import Budget, MetricSpec, SearchSpace


class CandidateView(BaseModel):
    """A candidate as a proposer sees it: its files, how it scored and how it was made."""

    id: str
    files: dict[str, str]
    mean: float | None = Field(None, description="mean validation metric; None if never scored")
    n_trials: int = 0
    lineage_steps: list[EditStep] = Field(
        default_factory=list, description="every named step applied from the seed to here"
    )
    lineage_ids: list[str] = Field(
        default_factory=list, description="candidates from the seed down to this one"
    )


class HistoryItem(BaseModel):
    """One past proposal and what became of it, failures and negative results included."""

    candidate_id: str | None
    parent_id: str
    operator: Operator
    steps: list[EditStep]
    outcome: str = Field(description="accepted | rejected | failed | refused | pending")
    reason: str = ""
    mean: float | None = None
    parent_mean: float | None = None
    knobs: dict[str, str | int | float | bool] = Field(default_factory=dict)
    proposal_id: str = ""
    thread: int = 0
    rationale: str = ""
    p_value: float | None = Field(None, description="one-sided, against the parent")
    diff: str = Field("", description="the candidate's diff against its parent (shortened)")


NEGATIVE_OUTCOMES = ("rejected", "failed", "refused")  # a decision that did not accept


class RelatedResult(BaseModel):
    """What a related problem's campaign (in a family campaign), or an earlier campaign on
    this benchmark (`campaign.learn_from`), made of a proposal: a technique that won there
    is worth trying here first, one that lost there later."""

    member: str = Field(description="the related member, or 'campaign <name>'")
    steps: list[str] = Field(description="names of the proposal's edit steps")
    step_params: list[dict[str, str | int | float | bool]] = Field(
        default_factory=list, description="each step's parameters, in the order of steps")
    outcome: str = Field(description="accepted | rejected | failed | refused")
    champion: bool = False
    relative_gain: float | None = Field(None, description="over its parent, >0 is better")
    p_value: float | None = None
    decided_at: str = ""


class FailureNote(BaseModel):
    """Why a candidate failed, for the `debug` operator."""

    candidate_id: str
    reason: str
    log_tail: str = ""


class ProposalRequest(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    benchmark: str
    operator: Operator
    thread: int
    parents: list[CandidateView] = Field(
        description="one parent; two for crossover; for debug the last good ancestor, then "
        "the failed candidate"
    )
    base: CandidateView | None = Field(None, description="common ancestor, for crossover")
    editable_files: list[str]
    metric: MetricSpec
    search_space: SearchSpace
    history: list[HistoryItem] = Field(default_factory=list)
    rng_seed: int = 0
    seed: CandidateView | None = Field(None, description="the campaign's seed solution")
    best: list[CandidateView] = Field(default_factory=list, description="best scored, best first")
    failure: FailureNote | None = Field(None, description="for debug: what went wrong")
    profile: dict[str, float] = Field(
        default_factory=dict, description="the parent's trials: time, memory, harness figures"
    )
    usd_left: float | None = Field(None, description="spend allowed before a cap; None: no cap")
    budget: Budget | None = Field(None, description="the campaign's trial budget")
    related: list[RelatedResult] = Field(
        default_factory=list, description="results on related problems (family campaigns) "
        "and of earlier campaigns on this benchmark (campaign.learn_from)")


class Draft(BaseModel):
    """A proposer's answer; the patch step turns it into a candidate. Edits apply to the
    files of the first parent."""

    operator: Operator
    rationale: str
    steps: list[EditStep] = Field(default_factory=list)
    edits: list[FileEdit]
    cost: Cost = Field(default_factory=Cost)
    transcript: Transcript | None = None


class ProposalError(RuntimeError):
    """The proposer has nothing to offer for this operator here (nothing left to try, no
    applicable edit): another operator may be tried in the same iteration."""


class AttemptFailed(ProposalError):
    """A paid attempt that produced no usable edit (malformed tool input, a forbidden or
    unmatched edit, no edit, a cap reached): recorded as the proposal's failure, not retried."""

    def __init__(self, reason: str, cost: Cost | None = None,
                 transcript: Transcript | None = None):
        super().__init__(reason)
        self.cost = cost or Cost()
        self.transcript = transcript


class ProposerUnavailable(RuntimeError):
    """The model could not be reached after the client's own retries (429, 529, 5xx,
    timeouts): an infrastructure fault, left to the task's retries."""

    def __init__(self, reason: str, cost: Cost | None = None,
                 transcript: Transcript | None = None):
        super().__init__(reason)
        self.cost = cost or Cost()
        self.transcript = transcript


@runtime_checkable
class Proposer(Protocol):
    name: str
    operators: frozenset[str]
    free_form: bool  # writes code of its own (needs filesystem isolation unless opted out)

    def propose(self, request: ProposalRequest) -> Draft: ...
