"""Campaign parameters: params.yaml, validated before anything runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from autolab.records import content_key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


CAMPAIGN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a folder name and an MLflow run name


class CampaignParams(_Strict):
    name: str = Field("tinylm-default", pattern=CAMPAIGN_NAME)
    benchmark: str = "tinylm"

    @field_validator("benchmark")
    @classmethod
    def _known(cls, name: str) -> str:
        from benchmarks import BENCHMARK_NAMES, FAMILY_NAMES

        family, _, member = name.partition("/")
        if name in BENCHMARK_NAMES or name in FAMILY_NAMES or (member and family in
                                                                FAMILY_NAMES):
            return name
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_NAMES)}; "
                         f"families: {', '.join(FAMILY_NAMES)} (a member: FAMILY/MEMBER)")

    seed_variant: str = "default"
    threads: int = Field(2, ge=1, le=64)
    max_proposals: int = Field(16, ge=0, description="iterations to run, the seed excluded")
    max_wall_clock_min: float = Field(60.0, gt=0)
    patience: int = Field(
        0, ge=0, description="stop after this many proposals without a new champion; 0 = never"
    )
    random_seed: int = 0
    learn_from: list[str] = Field(
        default_factory=list, description="earlier campaigns on this benchmark (names, in this "
        "workdir or archive database) whose decided proposals are the proposer's prior: "
        "what they accepted is tried first, what they rejected less often")

    @field_validator("learn_from")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for n in names:
            if not re.match(CAMPAIGN_NAME, n):
                raise ValueError(f"{n!r} is not a campaign name")
        return list(dict.fromkeys(names))


class BudgetOverride(_Strict):
    """Optional overrides of the benchmark's own trial budget."""

    amount: int | None = Field(None, gt=0)
    wall_clock_s: float | None = Field(None, gt=0)
    memory_mb: int | None = Field(None, gt=0)


class EvaluationParams(_Strict):
    alpha: float = Field(0.01, gt=0, lt=0.5, description="false-accept rate over all looks")
    min_seeds: int = Field(3, ge=2)
    max_seeds: int = Field(5, ge=2)
    test_seeds: int = Field(3, ge=2)
    parallel_trials: int = Field(1, ge=1, description="trials at once; also seeds per look")
    screen: bool = Field(False, description="reject after one seed a candidate behind its parent")
    min_gain: float = Field(
        0.0, ge=0, description="a gain must exceed this, in the metric's units, to be accepted"
    )
    seeds_base: int = Field(1000, ge=0, description="selection seeds are seeds_base + i")

    @model_validator(mode="after")
    def _seeds_ordered(self) -> EvaluationParams:
        if self.max_seeds < self.min_seeds:
            raise ValueError(
                f"max_seeds ({self.max_seeds}) must be >= min_seeds ({self.min_seeds})"
            )
        return self


class AuditParams(_Strict):
    replication_seeds: int = Field(4, ge=2, description="fresh seeds for a would-be champion")
    replication_alpha: float = Field(
        0.05, gt=0, lt=0.5, description="the k-th champion must replicate at this / k"
    )
    static_scan: bool = Field(
        True, description="level 0; off only to test the defences behind it (autolab redteam "
        "--without-static-scan)"
    )


class SandboxParams(_Strict):
    isolation: Literal["auto", "bwrap", "unshare", "none"] = "auto"
    allow_unisolated: bool = Field(
        False, description="let a free-form proposer's code run where files cannot be hidden"
    )


OperatorName = Literal["tune", "improve", "crossover", "draft", "debug"]


class Price(_Strict):
    """Dollars per million tokens, for each of the four kinds a response reports."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_read: float = Field(ge=0)


def _default_prices() -> dict[str, Price]:
    sonnet = Price(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)
    opus = Price(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50)
    haiku = Price(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10)
    return {"claude-sonnet-4-6": sonnet, "claude-sonnet-4-5": sonnet, "claude-opus-4-8": opus,
            "claude-opus-4-7": opus, "claude-haiku-4-5": haiku}


class ClaudeParams(_Strict):
    model: str = "claude-sonnet-4-6"


class OpenAICompatParams(_Strict):
    """A chat-completions server with tool calls (vLLM, Ollama, llama.cpp...)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = Field("", description="the model the server serves; required for this kind")
    api_key_env: str = Field("", description="name of an environment variable holding a key, "
                             "if the server wants one (never the key itself)")


class ProposerParams(_Strict):
    kind: Literal["auto", "offline", "claude", "openai_compat", "aa"] = "auto"
    operators: dict[OperatorName, float] = Field(
        default_factory=lambda: {"tune": 0.3, "improve": 0.55, "crossover": 0.15,
                                 "draft": 0.1, "debug": 0.3},
        description="relative odds; each proposer uses the operators it has",
    )
    claude: ClaudeParams = ClaudeParams()
    openai_compat: OpenAICompatParams = OpenAICompatParams()
    max_tokens: int = Field(8192, ge=256, description="per response")
    max_turns: int = Field(12, ge=1, le=100, description="responses per proposal")
    max_tool_errors: int = Field(3, ge=1, description="bad tool calls before a proposal fails")
    max_retries: int = Field(4, ge=0, le=20, description="client retries of 429/5xx/timeouts")
    timeout_s: float = Field(300.0, gt=0, description="per request")
    context_tokens: int = Field(12_000, ge=1000, description="budget of the research memory")
    max_usd_per_campaign: float | None = Field(10.0, ge=0, description="null: no cap")
    max_usd_per_day: float | None = Field(25.0, ge=0, description="over every campaign under "
                                          "paths.workdir and in the same archive database, "
                                          "UTC days; null: no cap")
    max_consecutive_failures: int = Field(5, ge=0, description="stop proposing after this many "
                                          "proposer failures in a row; 0 = never")
    offline_delay_s: float = Field(0.0, ge=0, le=3600, description="the offline proposer "
                                   "waits this long per proposal, standing for a language "
                                   "model's time in measurements of the engine")
    prices: dict[str, Price] = Field(default_factory=_default_prices,
                                     description="$ per million tokens, per model")

    @model_validator(mode="after")
    def _weights(self) -> ProposerParams:
        if any(w < 0 for w in self.operators.values()) or sum(self.operators.values()) <= 0:
            raise ValueError("operator weights must be >= 0 and not all zero")
        return self

    @model_validator(mode="after")
    def _priced(self) -> ProposerParams:
        """A cap means nothing for a model whose tokens have no price."""
        if self.kind in ("auto", "claude") and self.claude.model not in self.prices:
            raise ValueError(
                f"claude.model {self.claude.model!r} has no entry in proposer.prices; add its "
                "$ per million tokens (input, output, cache_write, cache_read) so the spending "
                "caps can be enforced"
            )
        if self.kind == "openai_compat" and not self.openai_compat.model:
            raise ValueError("openai_compat.model is required with kind openai_compat")
        return self

    def price(self, model: str) -> Price | None:
        return self.prices.get(model)


class PathParams(_Strict):
    data_dir: Path = Path("../shared/data")
    workdir: Path = Path("runs")
    prepared_dir: Path = Path("artifacts")
    mlruns: Path = Path("mlruns")
    reports: Path = Path("reports")


class TrackingParams(_Strict):
    mlflow: bool = True


class ArchiveParams(_Strict):
    """Where the campaign's records live: null is a SQLite file in the campaign's folder
    (`paths.workdir/<name>/archive/archive.db`); a PostgreSQL URL puts them in a database
    that campaigns on several hosts can share. Its password is hidden wherever params are
    shown or logged; better, leave it out and use ~/.pgpass or PGPASSWORD."""

    url: str | None = Field(None, description="postgresql://USER@HOST[:PORT]/DBNAME, "
                            "sqlite:///PATH, or null")

    @field_validator("url")
    @classmethod
    def _database(cls, url: str | None) -> str | None:
        from autolab.db.engine import check_url

        return None if url is None else check_url(url)

    @field_serializer("url")
    def _hide_password(self, url: str | None) -> str | None:
        from autolab.db.engine import shown

        return None if url is None else shown(url)


class FamilyParams(_Strict):
    """For a benchmark that is a family of problems: which members, and how the campaign
    goes round them (each member's campaign resumed for a few proposals per round)."""

    members: list[str] | None = Field(None, description="null: every member")
    rounds: int = Field(3, ge=1)
    proposals_per_round: int = Field(2, ge=1, description="per member and round")
    prewarm_jobs: int = Field(0, ge=0, le=64, description="members whose untimed preparation "
                              "(the benchmark's `prewarm`, e.g. compiling a reference) runs "
                              "side by side, in processes of their own, a window of this "
                              "many just before their first round; 0: none")
    prewarm_memory_gb: float | None = Field(None, gt=0, description="accelerator memory the "
                                            "side-by-side prewarms may declare together (a "
                                            "benchmark's `prewarm_memory`); about 80 % of "
                                            "one GPU's; null: no bound")


class EngineParams(_Strict):
    """Where trials run: slots on a Dask cluster, and how far the proposing runs ahead."""

    address: str | None = Field(None, description="a Dask scheduler (tcp://HOST:8786) whose "
                                "workers on one or many hosts are the slots; null: a local "
                                "in-process cluster of this host's slots")
    slots: int | None = Field(None, ge=1, le=1024, description="local slots; null: one per "
                              "GPU group for a GPU benchmark, evaluation.parallel_trials for "
                              "a CPU one")
    gpus_per_slot: int | None = Field(None, ge=1, le=64, description="null: the benchmark's "
                                      "own (speedrun: its ranks)")
    ahead: int = Field(1, ge=0, le=64, description="iterations in flight beyond those that "
                       "fill the slots, at least: their proposals are made while trials run; "
                       "more are kept when trials come back faster than proposals are made. "
                       "0: none")
    max_in_flight: int | None = Field(None, ge=1, le=256, description="iterations at once, "
                                      "at most; null: slots + ahead. 1: one after another, "
                                      "each proposal seeing every earlier decision")
    sample_s: float = Field(0.2, gt=0, le=10, description="duty-cycle sampling interval")


class Params(_Strict):
    campaign: CampaignParams = CampaignParams()
    budget: BudgetOverride = BudgetOverride()
    evaluation: EvaluationParams = EvaluationParams()
    audit: AuditParams = AuditParams()
    sandbox: SandboxParams = SandboxParams()
    proposer: ProposerParams = ProposerParams()
    paths: PathParams = PathParams()
    tracking: TrackingParams = TrackingParams()
    family: FamilyParams = FamilyParams()
    archive: ArchiveParams = ArchiveParams()
    engine: EngineParams = EngineParams()

    @model_validator(mode="after")
    def _static_scan_off_only_for_known_code(self) -> Params:
        if not self.audit.static_scan and self.proposer.kind not in ("offline", "aa"):
            raise ValueError(
                "audit.static_scan: false is for testing the defences behind it; it needs "
                f"proposer.kind offline or aa (got {self.proposer.kind!r}), whose code is known"
            )
        return self

    def key(self) -> str:
        return content_key(self.model_dump(mode="json"))

    def fixed(self) -> dict[str, object]:
        """The settings a campaign keeps for life: what its results and decisions mean.
        The proposer, limits on proposals and time, paths and tracking may change."""
        d = self.model_dump(mode="json")
        out = {f"campaign.{k}": d["campaign"][k] for k in ("benchmark", "seed_variant")}
        for section in ("budget", "evaluation", "audit"):
            out |= {f"{section}.{k}": v for k, v in d[section].items()}
        out["sandbox.isolation"] = d["sandbox"]["isolation"]
        return out


def fixed_changes(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """One line per fixed setting that differs: 'evaluation.alpha: 0.01 -> 0.05'."""
    return [
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]


class ParamsError(ValueError):
    """params.yaml is unusable; the message names each bad key and what is wrong."""


def _format(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s)"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against params.yaml's documented keys)"
        got = e.get("input")
        if key.startswith("archive") and isinstance(got, str):
            from autolab.db.engine import shown

            got = shown(got)  # a password in a bad URL is not echoed
        shown = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  - {key}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(data: object, source: str = "params") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format(err, source)) from None


def load_params(path: Path | str = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate params.yaml; `overrides` is a nested dict merged on top."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    if overrides:
        data = merge(data, overrides)
    return parse_params(data, str(path))


def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
