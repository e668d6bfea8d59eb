"""The noop benchmark: value() of an editable file plus realistic noise; costs no compute.

It exercises every part of a trial (staging, sandbox, scoring, audit) so that the time a
campaign on it takes is the loop's own overhead. The trusted scorer adds noise the way a
real benchmark has it: a part shared by every candidate run with the same seed (what
pairing on seeds removes) and a part of each trial's own (what it cannot), so the
sequential looks, futility stops, pairing and Welch's test all see realistic data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from benchmarks.protocol import (
    AuditCheck,
    Budget,
    CheckResult,
    CodeEdit,
    Direction,
    EditNotApplicable,
    Knob,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
    TrialFailure,
    read_output,
)

HERE = Path(__file__).resolve().parent
SHARED_NOISE = 0.05  # sd of the part every candidate shares at a seed
TRIAL_NOISE = 0.02  # sd of each trial's own part


def noise(seed: int, candidate_id: str) -> float:
    """Measurement noise drawn by trusted code: shared per seed plus the trial's own."""
    shared = np.random.default_rng(seed).standard_normal()
    own_key = int.from_bytes(hashlib.sha256(f"{candidate_id}|{seed}".encode()).digest()[:8])
    own = np.random.default_rng(own_key).standard_normal()
    return float(SHARED_NOISE * shared + TRIAL_NOISE * own)


def _edit(old: str, new: str, name: str) -> Callable[..., str]:
    def apply(source: str, **params: float) -> str:
        if source.count(old) != 1:
            raise EditNotApplicable(f"{name}: anchor {old.strip()!r} not found")
        return source.replace(old, new.format(**params), 1)

    return apply


EDITS = (
    CodeEdit(name="shrink_value", file="solution.py", description="Scale VALUE down.",
             params={"factor": (0.5, 0.8)},
             apply=_edit("    v = VALUE\n", "    v = VALUE * {factor}\n", "shrink_value")),
    CodeEdit(name="drop_offset", file="solution.py", description="Stop adding OFFSET.",
             apply=_edit("    return v + OFFSET\n", "    return v\n", "drop_offset")),
)  # fmt: skip
KNOBS = (
    Knob(name="VALUE", file="solution.py", kind="float", low=0.0, high=5.0),
    Knob(name="OFFSET", file="solution.py", kind="float", low=-1.0, high=1.0),
)


def _result(ctx: TrialContext) -> dict:
    try:
        result = json.loads(read_output(ctx.outputs("run") / "result.json", 4096))
        float(result["value"])
    except (ValueError, KeyError, TypeError) as err:
        raise TrialFailure("output", f"result.json missing or garbled: {err}") from None
    return result


def check_budget(ctx: TrialContext, score: Score) -> CheckResult:
    """The harness makes one call; the solution's own report is evidence only."""
    reported = _result(ctx).get("calls", "?")
    ok = score.budget_used <= ctx.budget.amount
    return CheckResult(name="budget_respected", passed=ok,
                       evidence=f"1 call by the harness (the step reported {reported})")


class Noop:
    """Minimise value() of solution.py; trials take well under a second of work."""

    name = "noop"
    metric = MetricSpec(name="value", direction=Direction.MINIMIZE)
    editable_files: tuple[str, ...] = ("solution.py",)
    budget = Budget(unit="calls", amount=1, wall_clock_s=30.0, memory_mb=512)
    hardware: Literal["cpu", "gpu"] = "cpu"
    distributions: tuple[str, ...] = ()
    allowed_imports: frozenset[str] = frozenset({"math", "random"})

    def work_s(self, ctx: TrialContext) -> float:
        """Seconds the harness waits, standing for a real workload: none here."""
        return 0.0

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant != "default":
            raise KeyError(f"unknown seed variant {variant!r}; known: ['default']")
        return {f: (HERE / "seed" / f).read_text() for f in self.editable_files}

    def harness_files(self) -> list[Path]:
        return [*self.sandbox_files(), HERE / "benchmark.py"]

    def sandbox_files(self) -> list[Path]:
        root = HERE.parent
        return [root / "__init__.py", root / "guard.py", HERE / "__init__.py",
                HERE / "harness.py"]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        Path(prepared_dir).mkdir(parents=True, exist_ok=True)
        return {"data": "none"}

    def data_version(self, prepared_dir: Path) -> str:
        return "none"

    def stage(self, ctx: TrialContext, step: str) -> None:
        ctx.inputs(step).mkdir(parents=True, exist_ok=True)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        argv = (ctx.python, "-m", "benchmarks.noop.harness", "--workspace", str(ctx.workspace),
                "--out", str(ctx.outputs("run")), "--seed", str(ctx.seed),
                "--sleep", str(self.work_s(ctx)))  # fmt: skip
        return [SandboxStep(name="run", argv=argv, timeout_s=ctx.budget.wall_clock_s)]

    def score(self, ctx: TrialContext) -> Score:
        result = _result(ctx)
        value = float(result["value"])
        if not math.isfinite(value):
            raise TrialFailure("nan", f"value() returned {value}")
        return Score(
            metrics={"value": value + noise(ctx.seed, ctx.candidate_id)},
            budget_used=1.0,  # one call: the harness makes exactly one
            evidence={"raw_value": value},
        )

    def audit_checks(self) -> list[AuditCheck]:
        return [check_budget]

    def search_space(self) -> SearchSpace:
        return SearchSpace(knobs=KNOBS, edits=EDITS)

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        """The same value with its own identity, hence its own trial noise."""
        src = files["solution.py"]
        return {**files, "solution.py": src.rstrip("\n") + f"\n# A/A variant {index}\n"}


class NoopSleep(Noop):
    """The noop benchmark whose trials each take a while (the harness waits budget.amount
    milliseconds): a slot kept busy at no compute, to measure how well the engine keeps
    many slots busy."""

    name = "noop-sleep"
    budget = Budget(unit="wait_ms", amount=3000, wall_clock_s=60.0, memory_mb=512)

    def work_s(self, ctx: TrialContext) -> float:
        return ctx.budget.amount / 1000
