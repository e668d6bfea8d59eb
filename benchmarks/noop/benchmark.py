"""The noop benchmark: value() of an editable file plus seeded noise; costs no compute.

It exercises every part of a trial (staging, sandbox, scoring, audit) so that the time a
campaign on it takes is the loop's own overhead. The noise comes from the trusted scorer,
so a t-test between candidates is always defined.
"""

from __future__ import annotations

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
)

HERE = Path(__file__).resolve().parent
NOISE = 1e-3


def noise(seed: int) -> float:
    """Seed-dependent measurement noise, drawn by trusted code."""
    return NOISE * float(np.random.default_rng(seed).standard_normal())


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
        result = json.loads((ctx.workspace / "out" / "result.json").read_text())
        float(result["value"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrialFailure("output", f"result.json missing or garbled: {err}") from None
    return result


def check_budget(ctx: TrialContext, score: Score) -> CheckResult:
    calls = int(_result(ctx).get("calls", 0))
    ok = 0 < calls <= ctx.budget.amount
    return CheckResult(name="budget_respected", passed=ok, evidence=f"{calls} call(s)")


class Noop:
    """Minimise value() of solution.py; trials take well under a second of work."""

    name = "noop"
    metric = MetricSpec(name="value", direction=Direction.MINIMIZE)
    editable_files: tuple[str, ...] = ("solution.py",)
    budget = Budget(unit="calls", amount=1, wall_clock_s=30.0, memory_mb=512)
    hardware: Literal["cpu", "gpu"] = "cpu"

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant != "default":
            raise KeyError(f"unknown seed variant {variant!r}; known: ['default']")
        return {f: (HERE / "seed" / f).read_text() for f in self.editable_files}

    def harness_files(self) -> list[Path]:
        return [HERE / "harness.py", HERE / "benchmark.py"]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        Path(prepared_dir).mkdir(parents=True, exist_ok=True)
        return {"data": "none"}

    def stage_inputs(self, ctx: TrialContext) -> None:
        Path(ctx.inputs_dir).mkdir(parents=True, exist_ok=True)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        argv = (ctx.python, "-m", "benchmarks.noop.harness",
                "--workspace", str(ctx.workspace), "--seed", str(ctx.seed))  # fmt: skip
        return [SandboxStep(name="run", argv=argv, timeout_s=ctx.budget.wall_clock_s)]

    def score(self, ctx: TrialContext) -> Score:
        result = _result(ctx)
        value = float(result["value"])
        if not math.isfinite(value):
            raise TrialFailure("nan", f"value() returned {value}")
        return Score(
            metrics={"value": value + noise(ctx.seed)},
            budget_used=float(result.get("calls", 1)),
            evidence={"raw_value": value},
        )

    def audit_checks(self) -> list[AuditCheck]:
        return [check_budget]

    def search_space(self) -> SearchSpace:
        return SearchSpace(knobs=KNOBS, edits=EDITS)
