"""SOL-ExecBench problems as campaign benchmarks: each problem is a member of the `solexec`
family (`solexec-cpu`: the same on a CPU with shrunk shapes, so that every path runs in
the test suite). See family.py for the suite.

A trial has one sandboxed step, `kernel`: the forkserver (`worker.py --forkserver`), which
forks the workers that import and run the candidate's `solution.py`, inside the sandbox.
Its trusted companion, in the parent, drives it over the step's channel: first the build
(files, toolchain, one smoke call on the smallest workload: build.py), then the timed
evaluation of the split's workloads (evaluate.py: the clock, fresh inputs drawn from the
trial's seed, every check). The split decides the workloads: `val` the problem's own;
`audit` new workloads of the same definition, drawn in `prepare` and never shown to a
proposer (a candidate specialised to the visible shapes fails or slows there); `test`
another such draw.

The score is the problem's SOL score, maximised: the mean over the split's workloads of
S = 1 / (1 + (T_k - T_SOL) / (T_b - T_SOL)) (scoring.py). T_b and T_SOL per workload are
part of the prepared data: `prepare` measures T_b on this machine (the reference eager and
under torch.compile, the faster, each timed by a trial of its own through the kernel step
as a candidate is) and prices T_SOL with the roofline for the device in use, so a new
machine or a new estimate is a new data version.
A candidate's compiles (inductor's graphs, Triton's kernels, C++ extensions) from its
first val trial that passed are kept in its trusted store (build.keep_build_cache: read
without following any link, bounded in depth, size and time) and copied into the build
folder of each of its later val trials. A hidden split's trial, which judges the
candidate, neither keeps nor receives one: it starts from nothing the candidate left.
Nothing else carries from one trial to another: the inputs are fresh every call and the
clock is on this side, so a cache can only save compile time, which is never timed.
A trial in which any workload fails (incorrect, crashed, timed out, a hack caught) is a
failed trial, with the evaluator's reason: a fast kernel that is wrong somewhere is no gain.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import shutil
import statistics
import types
from pathlib import Path
from typing import Literal

from benchmarks.nanochat.benchmark import GPU_ENV, GPU_HOST_READ
from benchmarks.protocol import (
    AuditCheck,
    Budget,
    CheckResult,
    CodeEdit,
    Direction,
    EditNotApplicable,
    MetricSpec,
    SandboxStep,
    Score,
    SearchSpace,
    TrialContext,
    TrialFailure,
    TrialRunner,
    cuda_visible,
    gpu_device_nodes,
)
from benchmarks.solexec import launch as _launch
from benchmarks.solexec.evaluate import PROTOCOL, Timing
from benchmarks.solexec.problems import Problem, Workload, load_problems, skip_reason

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
DEFAULT_DATA = PROJECT.parent / "shared" / "data" / "sol-execbench" / "benchmark"
DATA_ENV = "AUTOLAB_SOLEXEC_DIR"  # where the problems are (the public layout)
BASELINE = "baseline.json"
PROFILE = "profile.json"  # in a candidate's trusted store: its Nsight Compute summary
EXIT_GRACE_S = 30.0  # the forkserver's time to exit once the evaluation is done
HIDDEN_PER_SPLIT = 4  # new workloads drawn for the audit split and for the test split
STDLIB_IMPORTS = frozenset({
    "__future__", "abc", "collections", "contextlib", "dataclasses", "enum", "functools",
    "itertools", "math", "operator", "typing", "warnings",
})
TIMINGS = {
    # one call a round trip: several (Timing.batch) would share the host's round trip, but
    # every input of a trip would then be in the worker's memory before its first call,
    # where the candidate's code, in the same process, can find it (evaluate.py, "Round
    # trips")
    # a trial's worker pinned, its CPU kept from halting while it sleeps between calls
    # (evaluate.awake_on): on an H100 host a trial's median time of the reference of a
    # launch-bound problem fell from 88-143 µs to 52-92 µs, trials alternating (RESULTS.md)
    "gpu": Timing(device="cuda", pin_cpus=True, awake_cpu=True),
    # on a CPU the trusted side shares a few cores with the worker (and, in the test
    # suite, with other tests): it is descheduled for milliseconds between staging and
    # the clock, which a 1 ms gap would count against the workload
    "cpu": Timing(device="cpu", warmup=1, reps=3, call_timeout_s=30.0, load_timeout_s=300.0,
                  flush_bytes=1 << 16, max_elements=256, idle_cpu_floor_ms=20.0,
                  stage_gap_s=0.05),
}


# T_b's modes: on a CPU (the test suite's preset) eager only, for inductor's C++ builds
# take minutes there; on a GPU the faster of eager and torch.compile, as the public
# benchmark's baseline
BASELINE_MODES = {"gpu": ("eager", "compile"), "cpu": ("eager",)}
PREWARMED = "prewarmed"  # in the compile cache: the device its prewarm compiled for
# T_b is measured on the path a candidate's time is: the reference run as a trial (the
# sandboxed kernel step, its worker forked there under the runtime guard); a table
# measured another way is measured again
MEASURED_AS = "trial"
# a workload timed below this share of its T_SOL fails the trial: no kernel passes the
# speed of light, so such a time is a hack or a wrong estimate, never a gain (10 % for the
# noise of the timing and of the peak figures)
BELOW_SOL = 0.9
# in turns, how far the reference's time may move T_b either way (its time in turns over
# its eager time in the table): an H100 host ran the same reference up to 3.3 times
# slower in one trial than in another; beyond that, something other than the host's speed
TURNS_CAP = 4.0
BUILD_CACHE = "build-cache"  # in a candidate's trusted store: its first val trial's compiles
KEEP_BUILD_CACHES = 8  # those of the candidates used most recently stay, in each campaign
TB_EVAL = "reference-eval.json"  # in a T_b run's trusted store: what its evaluation measured
TB_WALL_CLOCK_S = 600.0  # a T_b run's step: this, and each workload's first compiling call
# the prewarm's compile cache (baseline.cache_env) -> where a worker's build folder keeps it
# (launch.worker_env)
CACHE_PARTS = (("inductor", _launch.BUILD_CACHES["TORCHINDUCTOR_CACHE_DIR"]),
               ("triton", _launch.BUILD_CACHES["TRITON_CACHE_DIR"]))


def problems_root(data_dir: Path | None = None) -> Path:
    """The folder in the public layout: AUTOLAB_SOLEXEC_DIR, else data_dir (itself, or its
    sol-execbench/benchmark), else the shared data beside the project."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    if data_dir is not None:
        for candidate in (Path(data_dir) / "sol-execbench" / "benchmark", Path(data_dir)):
            if any((candidate / s).is_dir() for s in ("L1", "L2", "Quant", "FlashInfer-Bench")):
                return candidate
    return DEFAULT_DATA


def member_name(problem: Problem) -> str:
    """A problem's member name: its key with the subset joined by a dash (a folder name)."""
    return f"{problem.subset}-{problem.name}"


def split_workloads(problem: Problem, split: str) -> list[Workload]:
    """val: the problem's own; audit and test: new workloads of the same definition, each
    split its own draw (seeded by the problem, so every trial of a split sees the same)."""
    if split == "val":
        return list(problem.workloads)
    from benchmarks.solexec.hidden import hidden_workloads

    seed = int.from_bytes(hashlib.sha256(f"{problem.key}:{split}".encode()).digest()[:8], "big")
    drawn = hidden_workloads(problem, 2 * HIDDEN_PER_SPLIT, seed=seed)
    if split == "test":  # never a workload the audit split times
        audit = {tuple(sorted(w.axes.items())) for w in split_workloads(problem, "audit")}
        drawn = [w for w in drawn if tuple(sorted(w.axes.items())) not in audit]
    return drawn[:HIDDEN_PER_SPLIT]


def _technique_edit(problem: Problem, technique) -> CodeEdit:
    """A technique of the offline search as a whole-file edit with its launch parameters."""
    params = {name: tuple(dist.choices) for name, dist in technique.params.items()
              if hasattr(dist, "choices")}

    def apply(source: str, **chosen) -> str:
        if f"# technique: {technique.name}" in source:
            raise EditNotApplicable(f"{technique.name} is applied already")
        if not technique.feasible({**technique.defaults, **chosen}):
            raise EditNotApplicable(f"{technique.name}: {chosen} cannot run")
        try:  # one that wraps goes around the parent's `run`, whatever technique it has
            text = technique.render(problem, chosen, source)["solution.py"]
        except Exception as e:  # Unsupported and the like: this problem is not for it
            raise EditNotApplicable(f"{technique.name}: {e}") from None
        return f"# technique: {technique.name}\n{text}"

    defaults = {k: v for k, v in technique.defaults.items() if k in params}
    return CodeEdit(name=technique.name, file="solution.py", params=params, apply=apply,
                    defaults=defaults, weight=technique.weight,
                    description=f"{technique.name} (for {', '.join(technique.categories)})")


class SolExecProblem:
    """One SOL-ExecBench problem: make its `run` fast, correct on every workload."""

    metric = MetricSpec(name="sol_score", direction=Direction.MAXIMIZE, unit="")
    editable_files: tuple[str, ...] = ("solution.py",)
    distributions: tuple[str, ...] = ("torch", "numpy", "triton")
    allowed_imports: frozenset[str] = STDLIB_IMPORTS | {"torch", "numpy", "triton"}
    # torch.compile, and Triton kernels: @triton.jit and tl.load (the sandbox, not the scan,
    # keeps a `.load` from reading anything but the candidate's own files)
    allowed_attrs: frozenset[str] = frozenset({"compile", "jit", "load"})

    # on the copy whose run measures T_b (`_reference_runs`): the reference's mode
    tb_mode: str | None = None
    # runs T_b's trials as the campaign runs its trials (given by the lab, `autolab
    # prepare`, the family's prewarm: protocol.TrialRunner)
    trial_runner: TrialRunner | None = None

    def __init__(self, problem: Problem, family: str, preset: Literal["gpu", "cpu"] = "gpu"):
        self.problem = problem
        self.name = f"{family}/{member_name(problem)}"
        self.preset = preset
        self.hardware: Literal["cpu", "gpu"] = preset
        self.timing = TIMINGS[preset]
        self.budget = Budget(unit="workloads", amount=max(len(problem.workloads), HIDDEN_PER_SPLIT),
                             wall_clock_s=1800.0 if preset == "gpu" else 600.0,
                             memory_mb=48000 if preset == "gpu" else 4000)

    # -- files ----------------------------------------------------------------------------

    def seed_files(self, variant: str = "default") -> dict[str, str]:
        if variant not in ("default", "reference"):
            raise KeyError(f"unknown seed variant {variant!r}; known: default, reference")
        return {"solution.py": self.problem.reference}

    def sandbox_files(self) -> list[Path]:
        return _launch.harness_files()

    def harness_files(self) -> list[Path]:
        names = ("benchmark.py", "build.py", "evaluate.py", "hidden.py", "launch.py", "link.py",
                 "material.py", "problems.py", "results.py", "roofline.py", "scoring.py",
                 "tracing.py")
        return [*self.sandbox_files(), *(HERE / n for n in names)]

    # -- data -----------------------------------------------------------------------------

    @functools.cached_property
    def _splits(self) -> dict[str, list[Workload]]:
        """The three splits' workloads, drawn once per member object."""
        return {s: split_workloads(self.problem, s) for s in ("val", "audit", "test")}

    def prewarm_memory(self, prepared_dir: Path) -> int:
        """Device bytes the prewarm may hold at its peak: a worker's group of arenas, and
        for the largest workload its inputs drawn, copied, the reference's outputs and its
        own working memory (taken as its arena three times over), and two CUDA contexts.
        0 on a CPU, and where the prewarm has nothing to do here."""
        from benchmarks.solexec.evaluate import groups
        from benchmarks.solexec.material import estimate_bytes

        if self.timing.device == "cpu" or (
                prepared_dir is not None and self._prewarm_done(Path(prepared_dir))):
            return 0
        sizes = [estimate_bytes(self.problem, w) for ws in self._splits.values() for w in ws
                 if skip_reason(self.problem, w) is None]
        if not sizes:
            return 0
        # what groups() reads (a prewarm's round trips carry one call each:
        # baseline.prewarm_compile)
        sized = [types.SimpleNamespace(size=n, copies=1) for n in sizes]
        arenas = max(sum(g.size for g in grp)
                     for grp in groups(sized, self.timing.group_mb * 2**20))
        return int(arenas + 3 * max(sizes) + (2 << 30))

    def _prewarm_done(self, prepared_dir: Path) -> str | None:
        """Why the prewarm has nothing to do in prepared_dir, or None."""
        from benchmarks.solexec.baseline import device_name

        marker = prepared_dir / "compile-cache" / PREWARMED
        if "compile" not in BASELINE_MODES[self.preset]:
            return "nothing to compile"
        if self._measured_here(prepared_dir / BASELINE):
            return "T_b already measured here"
        if marker.exists() and marker.read_text() == device_name(self.timing.device):
            return "already prewarmed here"
        return None

    def prewarm(self, prepared_dir: Path) -> str:
        """Before prepare, and beside other members' prewarming: the compiled reference's
        graphs and kernels into the compile cache that prepare's timed run then reads.
        Nothing when T_b is already measured on this machine or the preset's T_b does not
        compile."""
        from benchmarks.solexec.baseline import device_name, prewarm_compile

        cache = Path(prepared_dir) / "compile-cache"
        if (done := self._prewarm_done(Path(prepared_dir))) is not None:
            return done
        result = prewarm_compile(self.problem, self._splits, self.timing, cache)
        if result["error"] is not None:
            return f"failed: {result['error'][:200]}"
        (cache / PREWARMED).write_text(device_name(self.timing.device))
        return "compiled"

    def _measured_here(self, table_file: Path) -> bool:
        """A T_b table that holds for this machine and for the workloads the splits draw
        now (a table from before a change to the draws times other hidden workloads)."""
        from benchmarks.solexec.baseline import device_name

        try:
            table = json.loads(table_file.read_text())
        except (OSError, ValueError):
            return False
        if table.get("device") != device_name(self.timing.device):
            return False
        if table.get("calls_per_trip", 1) != self.timing.batch or bool(table.get(
                "pin_cpus")) != self.timing.pin_cpus or bool(table.get(
                "awake_cpu")) != self.timing.awake_cpu or table.get(
                "protocol") != PROTOCOL or table.get("measured_as") != MEASURED_AS:
            return False  # timed another way than the candidates are now
        if self.timing.awake_cpu and not _kept_awake(table.get("awake")):
            return False  # its poller did not run throughout: T_b slower than it is
        if self.timing.paired and not table.get("eager_times"):
            return False  # no eager time to hold the reference's time in turns against
        if self.trial_runner is not None and table.get(
                "isolation") != self.trial_runner.isolation:
            return False  # in another sandbox than the campaign's trials run in
        splits = table.get("splits") or {}
        return all(set(splits.get(s) or {}) == {w.uuid for w in ws}
                   for s, ws in self._splits.items())

    def prepare(self, data_dir: Path | None, prepared_dir: Path) -> dict[str, str]:
        """T_b and T_SOL of every workload of the three splits, measured here once."""
        from benchmarks.solexec.baseline import baseline_table

        prepared_dir = Path(prepared_dir)
        out = prepared_dir / BASELINE
        if out.exists() and not self._measured_here(out):
            out.unlink()  # another machine's T_b, or other workloads: measured again here
        if not out.exists():
            prepared_dir.mkdir(parents=True, exist_ok=True)
            modes = BASELINE_MODES[self.preset]
            row, facts = self._reference_runs(prepared_dir, modes)
            table = baseline_table(self.problem, self._splits, self.timing, modes, row,
                                   MEASURED_AS) | facts
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
            tmp.replace(out)
        table = json.loads(out.read_text())
        if not any("t_b_ns" in w for w in table["splits"]["val"].values()):
            out.unlink()  # measured again next time, not kept as a table of failures
            why = sorted({w.get("reason", "")[:200] for w in table["splits"]["val"].values()})
            raise RuntimeError(f"{self.problem.key}: the reference has no T_b on any "
                               f"workload here: {'; '.join(why)}")
        timed = sum(1 for s in table["splits"].values() for w in s.values() if "t_b_ns" in w)
        return {"problem": self.problem.key, "device": table["device"],
                "workloads with T_b": str(timed)}

    def _reference_runs(self, prepared_dir: Path, modes: tuple[str, ...]
                        ) -> tuple[dict, dict]:
        """{mode: its evaluation as JSON} or {mode_error: why}: the reference, eager and
        under torch.compile, timed on every workload of the three splits by a trial of its
        own, run as a candidate's is (the trial runner it was given: the sandboxed kernel
        step under the campaign's isolation, its worker forked there under the runtime
        guard, this process's clock and checks), so that T_b and a candidate's time come
        from one path and the reference itself scores about 0.5. The compiled run starts
        from a copy of the prewarm's compile cache. Also what the table keeps of how it was
        measured:
        the isolation, and per mode how many files its run added to the compile caches
        (none where the prewarm's cache served every graph and kernel)."""
        from benchmarks.solexec.baseline import COMPILE_CALL_TIMEOUT_S, reference_files

        runner = self.trial_runner
        if runner is None:
            raise RuntimeError(f"{self.name}: prepare times T_b by trials of the reference, "
                               "and was given no trial runner (benchmark.trial_runner: "
                               "autolab.runner.give_trial_runner)")
        work = prepared_dir / "reference-runs"
        runner.clear(work / "trials")  # what a killed prepare left running
        shutil.rmtree(work, ignore_errors=True)
        # every workload of the three splits, each first call of a compiled one allowed
        # its compile: the step's limit is a backstop behind the calls' own timeouts
        n = sum(len(ws) for ws in self._splits.values())
        budget = self.budget.model_copy(update={"wall_clock_s": max(
            self.budget.wall_clock_s or 0.0, TB_WALL_CLOCK_S + n * COMPILE_CALL_TIMEOUT_S)})
        row: dict = {}
        facts: dict = {"isolation": runner.isolation, "compiled_in_run": {},
                       "mode_errors": {}}
        try:
            for mode in modes:
                run = copy.copy(self)
                run.tb_mode = mode
                cid = f"reference-{mode}"
                trial = runner(run, cid, reference_files(self.problem, mode), 0, "val", budget,
                               work_root=work / "trials", prepared_dir=prepared_dir,
                               cache_root=work / "store",
                               gpu=0 if self.preset == "gpu" else None)
                found = work / "store" / cid / TB_EVAL
                got = json.loads(found.read_text()) if found.exists() else {}
                if "compiled_files" in got:
                    facts["compiled_in_run"][mode] = got["compiled_files"]
                built = got.get("build") or {}
                if trial.status != "ok" or "error" in got or not built:
                    # the run itself failed (a timeout, a crash, out of memory, the guard,
                    # the evaluator): no table, rather than one without this mode
                    detail = got.get("error") or (built.get("reason") if built else "")
                    raise RuntimeError(
                        f"{self.problem.key}: the reference's T_b run ({mode}) failed: "
                        f"{trial.failure or 'evaluator'}: {trial.reason or detail}"
                        + (f" ({detail[:300]})" if detail and trial.reason else ""))
                if "eval" in got:
                    row[mode] = got["eval"]
                else:  # the reference does not build in this mode: T_b is the other's
                    why = str(built.get("reason") or "it did not build")[:500]
                    row[f"{mode}_error"] = facts["mode_errors"][mode] = why
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return row, facts

    def data_version(self, prepared_dir: Path) -> str:
        h = hashlib.sha256()
        for path in (self.problem.folder / "definition.json",
                     self.problem.folder / "workload.jsonl", Path(prepared_dir) / BASELINE):
            h.update(path.read_bytes() if path.exists() else b"-")
        return h.hexdigest()[:16]

    # -- a trial --------------------------------------------------------------------------

    def stage(self, ctx: TrialContext, step: str) -> None:
        ctx.inputs(step).mkdir(parents=True, exist_ok=True)
        if step == "kernel" and self.timing.control_reps and self.tb_mode is None:
            # before the step starts: none of the candidate's code has run in this trial,
            # and nothing of the step's start-up runs beside the control's calls
            from benchmarks.solexec.baseline import control_run

            ctx.secrets["control"] = control_run(
                self.problem, split_workloads(self.problem, str(ctx.split)), self.timing)
        if step == "profile":  # the first val workload's inputs, drawn here
            import torch

            if not _passed(ctx.secrets):  # nothing worth profiling: the step only says so
                (ctx.inputs(step) / "skip").write_text("the kernel step did not pass")
                return

            from benchmarks.solexec.problems import make_inputs

            w = self.profiled_workload()
            made = make_inputs(self.problem, w, seed=ctx.seed, device="cpu")
            scalars = {n: s.value for n, s in w.inputs.items() if s.kind == "scalar"}
            args = [scalars.get(n, made[n]) for n in self.problem.inputs]
            torch.save({"device": self.timing.device, "args": args},
                       ctx.inputs(step) / "inputs.pt")

    def profiled_workload(self) -> Workload:
        """The workload a trial's profile step runs: the first val workload that runs here."""
        return next(w for w in split_workloads(self.problem, "val")
                    if skip_reason(self.problem, w) is None)

    def profiled(self, ctx: TrialContext) -> Path | None:
        """ncu where it profiles this trial: a val trial of a candidate not profiled yet
        (its summary is kept in the candidate's trusted store), on the GPU preset or with
        AUTOLAB_NCU set, where ncu exists."""
        from benchmarks.solexec.profile import NCU_ENV, ncu_binary

        if ctx.split != "val" or ctx.cache_dir is None or self.tb_mode is not None:
            return None
        if (ctx.cache_dir / PROFILE).exists():
            return None
        if self.preset != "gpu" and not os.environ.get(NCU_ENV):
            return None
        return ncu_binary()

    def steps(self, ctx: TrialContext) -> list[SandboxStep]:
        gpu: dict = {}
        env: dict[str, str] = {}
        if self.preset == "gpu":
            index = ctx.gpu or 0
            if index != 0:  # the trusted side's arenas and flush live on its cuda:0
                raise RuntimeError("solexec trials run on GPU 0 only (engine.slots: one)")
            env = {k: os.environ[k] for k in GPU_ENV if k in os.environ}
            env["CUDA_VISIBLE_DEVICES"] = cuda_visible([index])
            # a /dev/shm of the step's own, counted as its memory and emptied with the
            # trial (bwrap's own would be neither); the arenas need none (transport.py)
            gpu = dict(devices=gpu_device_nodes(index), host_read=GPU_HOST_READ,
                       private_shm=True)
        preload = ("--preload-compiler",) if uses_compile(ctx.workspace) else ()
        steps = [SandboxStep(name="kernel", channel=True, allow_subprocess=True, env=env,
                             timeout_s=ctx.budget.wall_clock_s or self.budget.wall_clock_s,
                             argv=(ctx.python, "-m", "benchmarks.solexec.worker",
                                   "--forkserver", *preload), **gpu)]
        if (ncu := self.profiled(ctx)) is not None:
            from benchmarks.solexec.profile import CALL_TIMEOUT_S, ncu_root

            kernel_build = ctx.outputs("kernel") / "build"
            build = profile_build(ctx.outputs("profile"), kernel_build)
            caches = {var: str(build / part) for var, part in _launch.BUILD_CACHES.items()}
            # compiling in this process: a pool of compile workers is shut down at exit by
            # signalling them, which the guard would stop (exit 113)
            caches["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
            profile_gpu = {k: v for k, v in gpu.items() if k != "private_shm"}
            profile_gpu["host_read"] = (*gpu.get("host_read", ()), str(ncu_root(ncu)))
            steps.append(SandboxStep(
                name="profile", optional=True, allow_subprocess=True, env={**env, **caches},
                timeout_s=CALL_TIMEOUT_S + 60, reads=("kernel",),
                argv=(ctx.python, "-m", "benchmarks.solexec.profile",
                      str(ctx.inputs("profile")), str(ctx.workspace),
                      str(ctx.outputs("profile")), str(ncu), str(kernel_build),
                      str(build)), **profile_gpu))
        return steps

    def companion(self, ctx: TrialContext, step: str):
        from benchmarks.solexec.build import (
            build_solution,
            keep_build_cache,
            prune_build_caches,
            restore_build_cache,
        )
        from benchmarks.solexec.evaluate import evaluate_problem
        from benchmarks.solexec.launch import Forkserver

        if step != "kernel":
            return None
        s, problem, timing = ctx.secrets, self.problem, self.timing
        build_dir = ctx.outputs("kernel") / "build"
        seed: int | None = ctx.seed
        if self.tb_mode is None:
            workloads = split_workloads(problem, str(ctx.split))
            # read before any candidate code runs: the score uses this copy, never the file
            s["baseline"] = json.loads((ctx.prepared_dir / BASELINE).read_text())["splits"][
                str(ctx.split)]
            if ctx.cache_dir is not None and ctx.split == "val":
                # its own compiles, kept from its first val trial; the hidden splits' trials,
                # which judge it, start from nothing the candidate left anywhere
                try:
                    reused, why = restore_build_cache(ctx.cache_dir / BUILD_CACHE, build_dir)
                    if reused:
                        with contextlib.suppress(OSError):  # just used: pruned last
                            os.utime(ctx.cache_dir / BUILD_CACHE)
                except Exception as e:  # noqa: BLE001 - a store it cannot use: compiled again
                    shutil.rmtree(ctx.cache_dir / BUILD_CACHE, ignore_errors=True)
                    reused, why = 0, f"not reused: {type(e).__name__}: {e}"[:200]
                s["build_cache"] = {"reused": reused, **({"not_reused": why} if why else {})}
        else:  # T_b: every split's workloads, on inputs from a secret seed as before
            from benchmarks.solexec.baseline import mode_timing

            workloads = [w for ws in self._splits.values() for w in ws]
            timing, seed = mode_timing(timing, self.tb_mode), None
            warm = ctx.prepared_dir / "compile-cache"
            for src, dest in CACHE_PARTS:
                if self.tb_mode == "compile" and (warm / src).is_dir():
                    shutil.copytree(warm / src, build_dir / dest, dirs_exist_ok=True)
            copied = _cache_files(build_dir)  # name -> modified time

        def drive(link) -> None:
            server = Forkserver(ctrl=link.conn)
            try:
                built = build_solution(problem, ctx.workspace, build_dir, timing,
                                       launch=server.launch)
                s["build"] = built.model_dump(mode="json")
                if built.ok and workloads:
                    result = evaluate_problem(problem, ctx.workspace, timing,
                                              workloads=workloads, launch=server.launch,
                                              build_dir=build_dir, seed=seed)
                    s["eval"] = result.model_dump(mode="json")
            except Exception as e:  # noqa: BLE001 - the evaluator's own fault, recorded
                s["error"] = f"{type(e).__name__}: {e}"[:1000]
            finally:
                server.close()
            if self.tb_mode is not None and ctx.cache_dir is not None:
                after = _cache_files(build_dir)  # new, or written again (a bad entry)
                s["compiled_files"] = sum(copied.get(f) != t for f, t in after.items())
                ctx.cache_dir.mkdir(parents=True, exist_ok=True)
                (ctx.cache_dir / TB_EVAL).write_text(json.dumps(
                    {k: s[k] for k in ("build", "eval", "error", "compiled_files") if k in s}))
            if not link.finished.wait(EXIT_GRACE_S):  # told to exit, it did not
                link.halt("integrity", f"the step did not exit within {EXIT_GRACE_S:g} s "
                          "of being told to")
            elif (self.tb_mode is None and ctx.split == "val" and ctx.cache_dir is not None
                  and _passed(s)):
                # what it compiled for the visible workloads, for its later trials; never
                # from a hidden split's trial, whose shapes would reach the val trials
                ctx.cache_dir.mkdir(parents=True, exist_ok=True)
                try:
                    kept = keep_build_cache(ctx.outputs("kernel"), ctx.cache_dir / BUILD_CACHE)
                except Exception as e:  # noqa: BLE001 - whatever it left there: no cache
                    kept = f"not kept: {type(e).__name__}: {e}"[:200]
                s["build_cache"]["kept"] = kept
                with contextlib.suppress(Exception):  # disk use only: never the trial's fault
                    prune_build_caches(ctx.cache_dir.parent, BUILD_CACHE, KEEP_BUILD_CACHES)

        return drive

    def score(self, ctx: TrialContext) -> Score:
        if self.tb_mode is not None:  # a T_b run: its times are read by prepare, unscored
            return Score(metrics={}, budget_used=0.0)
        score = score_trial(self.problem.key, ctx.secrets, str(ctx.split),
                            sol_check=self.preset == "gpu")
        if (ctx.outputs("profile") / "status.json").exists():
            # a hint for the proposer and the report, never part of the score
            from benchmarks.solexec.profile import read_profile

            found = read_profile(ctx.outputs("profile"))
            score = score.model_copy(update={"evidence": {**score.evidence, **found}})
            skipped = str(found.get("ncu_status", "")).startswith("unavailable: not profiled")
            if ctx.cache_dir is not None and not skipped:  # profiled, or ncu could not
                ctx.cache_dir.mkdir(parents=True, exist_ok=True)
                (ctx.cache_dir / PROFILE).write_text(json.dumps(found))
        return score

    def audit_checks(self) -> list[AuditCheck]:
        if self.tb_mode is not None:
            return []

        def every_workload_scored(ctx: TrialContext, score: Score) -> CheckResult:
            n = int(score.evidence.get("workloads", 0))
            return CheckResult(name="every_workload_scored", passed=n > 0,
                               evidence=f"{n} workloads timed and correct on fresh inputs")

        return [every_workload_scored]

    def search_space(self) -> SearchSpace:
        from benchmarks.solexec.search.techniques import applicable

        return SearchSpace(edits=tuple(_technique_edit(self.problem, t)
                                       for t in applicable(self.problem)))

    def neutral_variant(self, files: dict[str, str], index: int) -> dict[str, str]:
        return {**files, "solution.py": f"# variant {index}\n{files['solution.py']}"}


def _spread(w: dict) -> float:
    """Three median absolute deviations of a workload's empty calls: the noise of what was
    subtracted from its time."""
    from benchmarks.solexec.link import mad

    empties = w.get("overhead_times_ns") or []
    return 3.0 * mad(empties) if empties else 0.0


def profile_build(out: Path, kernel_build: Path) -> Path:
    """The profile step's build folder: in its output folder, named so that its path is as
    long as the kernel step's build folder (profile.warm_caches rewrites one into the other
    in the compiled files, byte for byte); "build" where no name can make it so."""
    n = len(str(kernel_build)) - len(str(out)) - 1
    return out / (("build" + "_" * n)[:n] if n >= 1 else "build")


def uses_compile(workspace: Path) -> bool:
    """Whether the solution calls a `compile` (torch.compile, under any name it is bound
    to): its trial's workers then import the compiler before their guard (worker.PRELOADS).
    Only a matter of time: a solution that compiles without saying so imports it itself."""
    import ast

    try:
        tree = ast.parse((Path(workspace) / "solution.py").read_bytes())
        return any(isinstance(n, ast.Attribute) and n.attr == "compile"
                   or isinstance(n, ast.Name) and n.id == "compile"
                   or isinstance(n, ast.alias) and n.name.split(".")[-1] in ("compile",
                                                                             "_dynamo")
                   for n in ast.walk(tree))
    except Exception:  # noqa: BLE001 - unreadable, or too deep to parse: no preload
        return False


def _cache_files(build_dir: Path) -> dict[str, int]:
    """The files of a build folder's compile caches, with the times they were written."""
    return {str(f.relative_to(build_dir)): f.stat().st_mtime_ns for _, part in CACHE_PARTS
            for f in (build_dir / part).rglob("*") if f.is_file()}


def _passed(secrets: dict) -> bool:
    """Whether the kernel step built the solution and every workload passed."""
    workloads = (secrets.get("eval") or {}).get("workloads") or []
    done = [w for w in workloads if w.get("status") != "skipped"]  # as the score counts
    return (bool((secrets.get("build") or {}).get("ok")) and "error" not in secrets
            and bool(done) and all(w.get("status") == "ok" for w in done))


INTEGRITY = ("answered before", "changed after it answered", "wrote into its input",
             "child process", "more thread", "CPU in the", "broke the protocol",
             "an empty call failed", "reference was timed in turns",
             "for the reference's turn")


def failure_kind(status: str, reason: str) -> str:
    """The runner's failure kind for a workload the evaluator did not pass."""
    if status == "timeout":
        return "timeout"
    if status == "skipped":  # the reference runs it; beside this candidate it could not
        return "integrity"
    if status == "incorrect":
        return "output"
    if any(k in reason for k in INTEGRITY):
        return "integrity"
    if "out of memory" in reason.lower():
        return "oom"
    return "crash"


def score_trial(key: str, s: dict, split: str, sol_check: bool = True) -> Score:
    """The trial's score from what the companion recorded (trusted memory only).
    `sol_check`: a time below the speed of light fails the trial (on a GPU; a CPU's T_SOL
    is a stand-in's, priced on shapes larger than the CPU preset times)."""
    from benchmarks.solexec.scoring import WorkloadResult, workload_score

    if "error" in s:  # the evaluator's own fault, not the candidate's
        raise RuntimeError(f"the evaluation of {key} stopped: {s['error']}")
    build = s.get("build") or {}
    if not build.get("ok"):
        kind = "timeout" if "timeout" in str(build.get("reason", "")) else "crash"
        raise TrialFailure(kind, f"the build failed at {build.get('stage', '?')}: "
                           f"{build.get('reason', 'no build result')}")
    ev, table = s.get("eval"), s.get("baseline") or {}
    if not ev:
        raise TrialFailure("output", f"no workload of the {split} split was evaluated")
    scores, times, bases, ratios, drifts = [], [], [], [], []
    for w in ev["workloads"]:
        base = table.get(w["uuid"])
        if base is None or "t_b_ns" not in base:
            continue  # the reference itself cannot run it here: not part of the problem
        # a hidden workload's name and the evaluator's words about it (shapes) stay here
        name = w["uuid"] if split == "val" else "a hidden workload"
        if w["status"] != "ok":
            kind = failure_kind(w["status"], w["reason"])
            said = w["reason"] if split == "val" else kind
            raise TrialFailure(kind, f"workload {name}: {w['status']}: {said}"[:500])
        if w["time_ns"] is None:
            raise TrialFailure("integrity", f"workload {name}: no time")
        t_sol = base.get("t_sol_ns")
        if sol_check and t_sol and w["time_ns"] + _spread(w) < BELOW_SOL * t_sol:
            # a bound no kernel can pass, beyond the timing's noise: an output not computed
            # where timed, or a wrong T_SOL; either way no score is taken from it
            said = (f"{w['time_ns'] / 1e3:.3g} µs, below its speed-of-light time "
                    f"{t_sol / 1e3:.3g} µs" if split == "val" else "below its speed of light")
            raise TrialFailure("integrity", f"workload {name}: {said} (a hack, or an "
                               "estimator that is wrong here)")
        if t_sol:
            ratios.append(w["time_ns"] / t_sol)
        t_b = base["t_b_ns"]
        if ev.get("paired") and base.get("eager_ns"):
            # in turns: T_b as the host ran the reference just now, beside these calls; a
            # workload without that time fails, or a candidate that could make the turns
            # fail (device memory it takes, a worker that will not stop) would choose
            # between the two T_b
            if not w.get("reference_ns"):
                why = (w.get("reference_note") or "no time") if split == "val" else ""
                raise TrialFailure("integrity", f"workload {name}: the reference was not "
                                   f"timed in turns beside it{': ' + why if why else ''}"[:500])
            drift = w["reference_ns"] / base["eager_ns"]
            drifts.append(drift)
            t_b *= min(max(drift, 1 / TURNS_CAP), TURNS_CAP)
        scores.append(workload_score(WorkloadResult(
            problem=key, workload=w["uuid"], passed=True, t_k=w["time_ns"], t_b=t_b,
            t_sol=t_sol)))
        times.append(w["time_ns"])
        bases.append(t_b)
    missing = [u for u, b in table.items() if "t_b_ns" in b
               and u not in {w["uuid"] for w in ev["workloads"]}]
    if missing or not scores:
        shown = missing[:3] if split == "val" else len(missing)
        raise TrialFailure("integrity", f"workloads with a baseline not evaluated: "
                           f"{shown or 'all'}")
    return Score(metrics={"sol_score": sum(scores) / len(scores)}, budget_used=float(len(scores)),
                 evidence={"workloads": len(scores), "build_s": float(build.get("wall_s", 0.0)),
                           "median_time_us": sorted(times)[len(times) // 2] / 1e3,
                           "min_workload_score": min(scores), "max_workload_score": max(scores),
                           **({"min_tk_over_tsol": min(ratios)} if ratios else {}),
                           "eval_s": float(ev.get("wall_s", 0.0)),
                           **({"awake": ev["awake"]} if ev.get("awake") else {}),
                           **_turns_evidence(ev, drifts),
                           **(_by_workload(times, bases, scores) if split == "val"
                              else {}),
                           **_control_evidence(s.get("control")),
                           **{f"build_cache_{k}": v for k, v in
                              (s.get("build_cache") or {}).items()},
                           **{f"eval_{k}_s": float(v) for k, v in
                              (ev.get("phase_s") or {}).items()}})


def _by_workload(times: list[float], bases: list[float], scores: list[float]
                 ) -> dict[str, str]:
    """Each val workload's T_k, T_b (µs) and score, in the evaluation's order, as text:
    where a technique wins and where it loses, for the proposer and for whoever reads the
    trial. Never for a hidden split (its workloads' times would describe them)."""
    return {"workload_t_k_us": " ".join(f"{t / 1e3:.1f}" for t in times),
            "workload_t_b_us": " ".join(f"{t / 1e3:.1f}" for t in bases),
            "workload_scores": " ".join(f"{x:.3f}" for x in scores)}


def _turns_evidence(ev: dict, drifts: list[float]) -> dict:
    """In turns: how the reference ran beside the candidate against the table (the median
    over workloads of the factor T_b was scaled by: its time in turns over its eager time
    there, held within TURNS_CAP), on how many workloads, on how many the cap held it;
    what ended the turns early, if anything did."""
    if not ev.get("paired"):
        return {}
    out: dict = {"turns": str(ev["paired"])[:300], "turns_workloads": len(drifts)}
    if drifts:
        held = [min(max(d, 1 / TURNS_CAP), TURNS_CAP) for d in drifts]
        out["turns_drift"] = statistics.median(held)
        out["turns_capped"] = sum(h != d for h, d in zip(held, drifts, strict=True))
    return out


def _kept_awake(said: object) -> bool:
    """No mode's run of a T_b table had a poller that failed or stopped early (evaluate.
    awake_on); one asked for none where nothing was pinned, as the trials then are not."""
    return isinstance(said, dict) and all(
        isinstance(v, str) and not v.startswith("not polling") and "until it exited" not in v
        for v in said.values())


def _control_evidence(found: dict | None) -> dict:
    """The control's median time (the reference timed just before the candidate, see
    baseline.control_run), or why there is none: a record of how fast the host was."""
    found = found if isinstance(found, dict) else {}
    if "median_us" in found:
        return {"control_median_us": float(found["median_us"]),
                "control_wall_s": float(found.get("wall_s", 0.0))}
    return {"control_error": str(found["error"])[:300]} if "error" in found else {}


def runnable(problem: Problem) -> bool:
    """A member: a workload runs here, and new workloads can be drawn for the audit and
    test splits (a problem whose axes leave no room for them cannot be confirmed)."""
    return any(skip_reason(problem, w) is None for w in problem.workloads) and all(
        split_workloads(problem, s) for s in ("audit", "test"))


def load_members(root: Path) -> dict[str, Problem]:
    """The problems under root that can run at all, by member name. Read once per folder
    and process: every lookup of a member (`get_benchmark("solexec/...")`) comes here, and
    drawing every problem's hidden workloads takes seconds."""
    return dict(_members_under(str(Path(root).resolve())))


@functools.lru_cache(maxsize=8)
def _members_under(root: str) -> dict[str, Problem]:
    return {member_name(p): p for p in load_problems(Path(root)) if runnable(p)}
