"""The tinylm benchmark: a small byte-level GPT on a fixed token budget, judged by val bpb."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from benchmarks.protocol import (
    AuditCheck,
    Budget,
    Direction,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
)
from benchmarks.tinylm import prepare as _prepare
from benchmarks.tinylm import score as _score

HERE = Path(__file__).resolve().parent
SEED_VARIANTS = {"default": HERE / "seed"}


class TinyLM:
    """Byte-level language modelling on State of the Union addresses (bits per byte)."""

    name = "tinylm"
    metric = MetricSpec(name="bpb", direction=Direction.MINIMIZE, unit="bits/byte")
    editable_files: tuple[str, ...] = ("train.py",)
    budget = Budget(unit="train_tokens", amount=196_608, wall_clock_s=80.0, memory_mb=3000)
    hardware: Literal["cpu", "gpu"] = "cpu"

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant not in SEED_VARIANTS:
            raise KeyError(f"unknown seed variant {variant!r}; known: {sorted(SEED_VARIANTS)}")
        root = SEED_VARIANTS[variant]
        return {f: (root / f).read_text() for f in self.editable_files}

    def harness_files(self) -> list[Path]:
        return [HERE / f for f in ("harness.py", "score.py", "prepare.py", "benchmark.py")]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        return _prepare.prepare(data_dir, prepared_dir)

    def stage_inputs(self, ctx: TrialContext) -> None:
        _prepare.stage(ctx.prepared_dir, ctx.inputs_dir, ctx.budget.amount, ctx.seed, ctx.split)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        """Train on the staged stream, then write eval logits; each step sees only its input."""
        wall = ctx.budget.wall_clock_s
        eval_s = max(30.0, 0.25 * wall)
        train_s = max(wall - eval_s, 0.5 * wall)
        steps = []
        for name, timeout, rel in (
            ("train", train_s, _prepare.TRAIN_STREAM),
            ("eval", eval_s, _prepare.EVAL_FILE),
        ):
            argv = (
                ctx.python, "-m", "benchmarks.tinylm.harness", name,
                "--workspace", str(ctx.workspace), "--inputs", str(ctx.inputs_dir),
                "--seed", str(ctx.seed), "--threads", str(ctx.threads),
            )  # fmt: skip
            readable = (str(ctx.inputs_dir / Path(rel).parent),)
            steps.append(SandboxStep(name=name, argv=argv, timeout_s=timeout, readable=readable))
        return steps

    def score(self, ctx: TrialContext) -> Score:
        return _score.score(ctx)

    def audit_checks(self) -> list[AuditCheck]:
        return [_score.check_budget, _score.check_eval_complete, _score.check_causal]

    def search_space(self) -> SearchSpace:
        from benchmarks.tinylm.edits import search_space

        return search_space()
