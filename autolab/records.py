"""The nouns of a campaign as plain, serialisable records.

Every record that is stored in the archive or crosses a process boundary is one of
these pydantic models. Ids are content keys: the same work always gets the same id,
which is what makes resume and caching exact.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from benchmarks.protocol import CheckResult

Operator = Literal["seed", "draft", "improve", "debug", "crossover", "tune"]
TrialStatus = Literal["ok", "failed"]
FailureKind = Literal["crash", "timeout", "oom", "nan", "budget", "integrity", "output", "infra"]
Split = Literal["val", "audit", "test"]
Verdict = Literal["accept", "reject", "more", "failed"]


def now() -> datetime:
    return datetime.now(UTC)


def content_key(*parts: object, length: int = 16) -> str:
    """sha256 of the JSON of `parts`, shortened; the id of a piece of work."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class FileEdit(BaseModel):
    """Search/replace on one file; `search=None` replaces the whole file."""

    path: str
    search: str | None = None
    replace: str


class EditStep(BaseModel):
    """The named operation a proposer applied, kept for lineage and for learning."""

    name: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)


class Cost(BaseModel):
    """What a proposal cost: tokens as the provider reported them, priced in dollars."""

    input_tokens: int = Field(0, description="uncached input tokens")
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0
    model: str = ""

    def plus(self, other: Cost) -> Cost:
        return Cost(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            usd=self.usd + other.usd,
            seconds=self.seconds + other.seconds,
            model=self.model or other.model,
        )


class Proposal(BaseModel):
    id: str
    campaign: str
    thread: int
    operator: Operator
    parents: list[str]
    rationale: str
    steps: list[EditStep] = Field(default_factory=list)
    edits: list[FileEdit]
    proposer: str
    cost: Cost = Field(default_factory=Cost)
    transcript: str | None = Field(None, description="the conversation, relative to the archive")
    created_at: datetime = Field(default_factory=now)


class Spend(BaseModel):
    """One attempt at a proposal that called a paid model, successful or not: the ledger the
    spending caps are checked against (an attempt retried after an outage costs too)."""

    id: str
    campaign: str
    proposal_id: str
    attempt: int = 1
    proposer: str
    outcome: Literal["ok", "failed", "unavailable"]
    cost: Cost
    created_at: datetime = Field(default_factory=now)

    @staticmethod
    def key(proposal_id: str, attempt: int) -> str:
        return content_key("spend", proposal_id, attempt)


class TurnRecord(BaseModel):
    """One response of the model: its usage, price and why it stopped."""

    cost: Cost
    stop_reason: str = ""


class Transcript(BaseModel):
    """The whole conversation of one proposal attempt, as sent and as answered."""

    proposal_id: str
    attempt: int = 1
    provider: str
    model: str
    operator: str
    system: list[str] = Field(description="the cached prefix, block by block")
    tools: list[dict]
    context_notes: list[str] = Field(default_factory=list, description="what was trimmed")
    messages: list[dict] = Field(default_factory=list)
    turns: list[TurnRecord] = Field(default_factory=list)
    outcome: str = ""
    error: str = ""
    cost: Cost = Field(default_factory=Cost)
    created_at: datetime = Field(default_factory=now)


class Candidate(BaseModel):
    """A complete snapshot of the editable files; id = hash of their content."""

    id: str
    benchmark: str
    parents: list[str]
    proposal_id: str | None
    files: dict[str, str] = Field(description="path -> sha256 of the file's bytes")
    diff: str = ""
    created_at: datetime = Field(default_factory=now)

    @staticmethod
    def key(files: dict[str, str]) -> str:
        return content_key(sorted(files.items()))


class Trial(BaseModel):
    id: str
    candidate_id: str
    seed: int
    split: Split
    setup_key: str = Field("", description="TrialSetup key: trials compare only within one")
    status: TrialStatus
    failure: FailureKind | None = None
    reason: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    budget_used: float = 0.0
    evidence: dict[str, str | int | float] = Field(default_factory=dict)
    wall_s: float = 0.0
    workload_s: float = Field(0.0, description="seconds spent inside sandboxed steps")
    peak_rss_mb: float = 0.0
    harness_hash_before: str = ""
    harness_hash_after: str = ""
    isolation: str = ""
    slot: str = Field("", description="the engine's slot that ran it (empty: run in-process)")
    checks: list[CheckResult] = Field(default_factory=list)
    log_tail: str = ""
    started_at: datetime = Field(default_factory=now)
    finished_at: datetime = Field(default_factory=now)

    @staticmethod
    def key(candidate_id: str, seed: int, split: str, setup_key: str) -> str:
        return content_key("trial", candidate_id, seed, split, setup_key)


class ConstraintResult(BaseModel):
    """One constraint of the metric (benchmarks.protocol.Constraint) tested on a
    candidate's own per-seed values: a one-sided one-sample t-test of their mean against
    the target, at `level`."""

    metric: str
    op: Literal["<=", ">="]
    target: float
    values: list[float] = Field(default_factory=list)
    missing: int = Field(0, description="trials of the comparison that lacked the metric")
    mean: float | None = None
    p_value: float | None = None
    level: float = Field(description="nominal alpha of the look it was tested at")
    holds: bool = False

    @property
    def bound(self) -> str:
        return f"{self.metric} {self.op} {self.target:g}"

    def summary(self) -> str:
        """'val_loss <= 3.28: p=0.0012 (mean 3.271, 5 seeds)'."""
        if self.missing:
            return f"{self.bound}: missing from {self.missing} trial(s)"
        p = "undefined" if self.p_value is None else f"{self.p_value:.2g}"
        mean = "-" if self.mean is None else f"{self.mean:.4g}"
        return f"{self.bound}: p={p} (mean {mean}, {len(self.values)} seeds)"


class Evaluation(BaseModel):
    """A candidate's trials compared with a reference (its parent, or the champion)."""

    id: str
    candidate_id: str
    reference_id: str
    metric: str
    values: list[float]
    reference_values: list[float]
    mean: float | None = None
    reference_mean: float | None = None
    delta: float | None = Field(None, description="mean - reference_mean")
    effect_size: float | None = Field(
        None, description="Hedges' g (welch) or Cohen's d_z (paired), signed so >0 is better"
    )
    p_value: float | None = None
    test: Literal["paired", "welch"] = "welch"
    alpha: float = Field(description="the campaign's alpha, spent over the looks")
    level: float | None = Field(None, description="nominal alpha of the look that decided")
    split: Split = "val"
    constraints: list[ConstraintResult] = Field(
        default_factory=list, description="the metric's constraints on the candidate's values; "
        "accept needs the gain and every constraint (an intersection-union test)")
    decision: Verdict
    reason: str = ""
    created_at: datetime = Field(default_factory=now)

    @property
    def constraints_hold(self) -> bool:
        return all(c.holds for c in self.constraints)


class AuditVerdict(BaseModel):
    """Which checks ran at which level (0 static, 1 runtime integrity, 2 replication on
    fresh seeds and unseen inputs, 3 the held-out split) and what they found."""

    id: str
    candidate_id: str
    level: int = Field(description="the highest level that ran")
    checks: list[CheckResult]
    passed: bool
    caught_at: int | None = Field(None, description="the lowest level with a failed check")
    created_at: datetime = Field(default_factory=now)


class Decision(BaseModel):
    """What the select step did with one proposal; one per proposal."""

    id: str
    campaign: str
    thread: int
    proposal_id: str
    candidate_id: str | None
    outcome: Literal["accepted", "rejected", "failed", "refused"]
    reason: str
    champion: bool = False
    evaluation_id: str | None = None
    audit_id: str | None = None
    p_value: float | None = Field(None, description="the evaluation's p-value of the gain")
    constraint_p_values: dict[str, float | None] = Field(
        default_factory=dict, description="the evaluation's p-value of each constraint, by bound")
    created_at: datetime = Field(default_factory=now)


class TestResult(BaseModel):
    """Confirmation on the held-out split, champion vs seed, on seeds selection never used.
    One per champion: a champion is confirmed once, and their count is how many times the
    test split has been looked at."""

    id: str = ""
    champion_id: str
    seed_id: str
    seeds: list[int] = Field(default_factory=list)
    evaluation: Evaluation
    created_at: datetime = Field(default_factory=now)

    @property
    def is_look(self) -> bool:
        """A champion against the seed: a look that could confirm a gain. The seed against
        itself (a run that crowned nothing) can confirm nothing and spends nothing."""
        return self.champion_id != self.seed_id


class CampaignRecord(BaseModel):
    name: str
    benchmark: str
    params_hash: str
    fixed: dict = Field(default_factory=dict, description="settings a resume may not change")
    seed_candidate: str
    isolation: str = ""
    unisolated: bool = Field(False, description="trials ran without a hidden filesystem")
    status: Literal["running", "finished"] = "running"
    stop_reason: str = ""
    mlflow_run_id: str | None = None
    seed_constraints: list[ConstraintResult] = Field(
        default_factory=list, description="the seed's own baseline trials tested against the "
        "metric's constraints: a seed that misses them is no valid baseline")
    val: Evaluation | None = Field(None, description="champion vs seed on the val split")
    test: TestResult | None = None
    started_at: datetime = Field(default_factory=now)
    finished_at: datetime | None = None
