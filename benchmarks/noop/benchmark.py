"""noop: a trial is one short sandboxed Python process; used to time the orchestration."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Literal

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


def _halve_offset(source: str) -> str:
    if "OFFSET = OFFSET / 2" in source:
        raise EditNotApplicable("already halved")
    return source.rstrip("\n") + "\nOFFSET = OFFSET / 2\n"


def _scale_value(source: str, factor: float = 0.5) -> str:
    marker = f"VALUE = VALUE * {factor}"
    if marker in source:
        raise EditNotApplicable("already scaled by this factor")
    return source.rstrip("\n") + f"\n{marker}\n"


def _one_call(ctx: TrialContext, score: Score) -> CheckResult:
    return CheckResult(name="budget_respected", passed=score.budget_used <= ctx.budget.amount,
                       evidence=f"{score.budget_used:g} of {ctx.budget.amount} calls")


class Noop:
    name = "noop"
    metric = MetricSpec(name="value", direction=Direction.MINIMIZE)
    editable_files: tuple[str, ...] = ("solution.py",)
    budget = Budget(unit="calls", amount=1, wall_clock_s=20.0, memory_mb=512)
    hardware: Literal["cpu", "gpu"] = "cpu"

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant != "default":
            raise KeyError(f"unknown seed variant {variant!r}; known: ['default']")
        return {"solution.py": (HERE / "seed" / "solution.py").read_text()}

    def harness_files(self) -> list[Path]:
        return [HERE / "harness.py", HERE / "benchmark.py"]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        prepared_dir.mkdir(parents=True, exist_ok=True)
        (prepared_dir / "meta.json").write_text(json.dumps({"benchmark": "noop", "data": "none"}))
        return {"data": "none needed"}

    def stage_inputs(self, ctx: TrialContext) -> None:
        ctx.inputs_dir.mkdir(parents=True, exist_ok=True)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        argv = (ctx.python, "-m", "benchmarks.noop.harness", "--workspace", str(ctx.workspace))
        return [SandboxStep(name="run", argv=argv, timeout_s=ctx.budget.wall_clock_s)]

    def score(self, ctx: TrialContext) -> Score:
        path = ctx.workspace / "out" / "result.json"
        try:
            raw = json.loads(path.read_text())
            value = float(raw["VALUE"]) + float(raw["OFFSET"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TrialFailure("output", f"result.json unreadable: {err}") from None
        if not math.isfinite(value):
            raise TrialFailure("nan", f"VALUE + OFFSET is {value}")
        noise = NOISE * random.Random(f"{ctx.split}-{ctx.seed}").gauss(0, 1)
        return Score(metrics={"value": value + noise}, budget_used=1)

    def audit_checks(self) -> list[AuditCheck]:
        return [_one_call]

    def search_space(self) -> SearchSpace:
        return SearchSpace(
            knobs=(
                Knob(name="VALUE", file="solution.py", kind="float", low=0.0, high=5.0),
                Knob(name="OFFSET", file="solution.py", kind="float", low=0.0, high=1.0),
            ),
            edits=(
                CodeEdit(name="halve_offset", file="solution.py", description="halve OFFSET",
                         apply=_halve_offset),
                CodeEdit(name="scale_value", file="solution.py", description="scale VALUE",
                         params={"factor": (0.5, 0.9, 1.1)}, apply=_scale_value),
            ),
        )
