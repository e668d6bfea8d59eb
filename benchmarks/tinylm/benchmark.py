"""The tinylm benchmark: a small byte-level GPT on a fixed token budget, judged by val bpb."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

import numpy as np

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
from benchmarks.tinylm.contract import EVAL_LEN, INPUTS, TRAIN_STREAM

HERE = Path(__file__).resolve().parent
SEED_VARIANTS = {"default": HERE / "seed"}
STDLIB_IMPORTS = frozenset({
    "__future__", "abc", "bisect", "collections", "contextlib", "copy", "dataclasses", "enum",
    "functools", "heapq", "itertools", "math", "numbers", "random", "statistics", "time",
    "typing", "warnings",
})


class TinyLM:
    """Byte-level language modelling on State of the Union addresses (bits per byte)."""

    name = "tinylm"
    metric = MetricSpec(name="bpb", direction=Direction.MINIMIZE, unit="bits/byte")
    editable_files: tuple[str, ...] = ("train.py",)
    budget = Budget(unit="train_tokens", amount=196_608, wall_clock_s=80.0, memory_mb=3000)
    hardware: Literal["cpu", "gpu"] = "cpu"
    distributions: tuple[str, ...] = ("torch", "numpy")
    allowed_imports: frozenset[str] = STDLIB_IMPORTS | {"torch", "numpy"}

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant not in SEED_VARIANTS:
            raise KeyError(f"unknown seed variant {variant!r}; known: {sorted(SEED_VARIANTS)}")
        root = SEED_VARIANTS[variant]
        return {f: (root / f).read_text() for f in self.editable_files}

    def harness_files(self) -> list[Path]:
        names = ("__init__.py", "contract.py", "harness.py", "score.py", "prepare.py",
                 "benchmark.py")
        return [*self.sandbox_files()[:2], *(HERE / f for f in names)]

    def sandbox_files(self) -> list[Path]:
        root = HERE.parent
        return [root / "__init__.py", root / "guard.py", HERE / "__init__.py",
                HERE / "contract.py", HERE / "harness.py"]

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        return _prepare.prepare(data_dir, prepared_dir)

    def data_version(self, prepared_dir: Path) -> str:
        return _prepare.data_version(prepared_dir)

    def stage(self, ctx: TrialContext, step: str) -> None:
        """train: exactly the budget's bytes. eval: the input bytes of the windows (targets
        stay in ctx.secrets). probe: staged only after eval ran, cut at secret positions."""
        folder = ctx.inputs(step)
        folder.mkdir(parents=True, exist_ok=True)
        s = ctx.secrets
        if step == "train":
            stream = _prepare.train_stream(ctx.prepared_dir, ctx.budget.amount, ctx.seed)
            stream.tofile(folder / TRAIN_STREAM)
            s["staged_tokens"] = len(stream) - 1
            s["byte_counts"] = np.bincount(stream, minlength=256)
        elif step == "eval":
            windows = _prepare.eval_windows(ctx.prepared_dir, ctx.split)
            np.ascontiguousarray(windows[:, :EVAL_LEN]).tofile(folder / INPUTS)
            s["targets"] = windows[:, 1:]
            s["unigram_bpb"] = _prepare.unigram_bpb(s["byte_counts"], s["targets"])
        elif step == "probe":
            source = _prepare.split_bytes(ctx.prepared_dir, "val" if ctx.split == "audit"
                                          else ctx.split)
            rng = np.random.default_rng(secrets.randbits(128))  # unpredictable, unlike the seed
            windows = _prepare.eval_windows(ctx.prepared_dir, ctx.split)
            rows, order, cuts = _prepare.probe_rows(windows, source, rng)
            rows.tofile(folder / INPUTS)
            s["probe_order"], s["probe_cuts"] = order, cuts

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        """train, then eval on input bytes, then probe in a fresh process."""
        wall = ctx.budget.wall_clock_s
        predict_s = max(20.0, 0.2 * wall)
        common = ("--workspace", str(ctx.workspace), "--threads", str(ctx.threads))
        harness = (ctx.python, "-m", "benchmarks.tinylm.harness")
        model = ("--model", str(ctx.outputs("train")))
        return [
            SandboxStep(name="train", timeout_s=wall, argv=(
                *harness, "train", *common, "--seed", str(ctx.seed),
                "--inputs", str(ctx.inputs("train")), "--out", str(ctx.outputs("train")))),
            SandboxStep(name="eval", timeout_s=predict_s, reads=("train",), argv=(
                *harness, "eval", *common, *model,
                "--inputs", str(ctx.inputs("eval")), "--out", str(ctx.outputs("eval")))),
            SandboxStep(name="probe", timeout_s=predict_s, reads=("train",), argv=(
                *harness, "probe", *common, *model,
                "--inputs", str(ctx.inputs("probe")), "--out", str(ctx.outputs("probe")))),
        ]  # fmt: skip

    def score(self, ctx: TrialContext) -> Score:
        return _score.score(ctx)

    def audit_checks(self) -> list[AuditCheck]:
        return [_score.check_budget, _score.check_causal]

    def search_space(self) -> SearchSpace:
        from benchmarks.tinylm.edits import search_space

        return search_space()

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        """Reseed torch's generator from the trial's seed and `index` before the model is
        built: its own initialisation and dropout, the same expected result, the same data
        order (the harness's stream is sequential)."""
        src = files["train.py"]
        anchor = "def train(ctx) -> nn.Module:\n"
        if anchor not in src:
            raise ValueError("train.py has no `def train(ctx) -> nn.Module:` line")
        line = (f"    torch.manual_seed((torch.initial_seed() + {index + 1} * 1_000_003) % 2**63)"
                f"  # A/A variant {index}: its own random stream\n")
        return {**files, "train.py": src.replace(anchor, anchor + line, 1)}
