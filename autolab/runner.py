"""One trial, end to end: lay out, stage and run each untrusted step, score, check, clean up.

Whatever the candidate does comes back as a Trial record (status "failed" with a
FailureKind and a one-line reason); only faults of trusted code (the benchmark's own
staging or scoring raising something other than TrialFailure, a sandbox that cannot
start) propagate, so the orchestrator can retry them as infrastructure faults.

Each step sees the candidate's files (read-only), its own staged inputs, the outputs of
the steps it declares it reads, and a writable folder of its own; inputs are staged just
before the step that needs them, so no step sees what a later one will be given.
Workspaces are deleted afterwards, so disk stays flat over long campaigns; each trial
keeps only a small log.txt with the tails of its steps' output.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.metadata as metadata
import math
import os
import platform
import re
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from autolab import integrity
from autolab.records import FailureKind, Trial, content_key, now
from autolab.sandbox import (
    Isolation,
    Limits,
    SandboxResult,
    View,
    drop_private_shm,
    kill_marked,
    private_shm_dir,
    run_sandboxed,
)
from benchmarks.protocol import (
    Benchmark,
    Budget,
    CheckResult,
    SandboxStep,
    Score,
    Split,
    StepLink,
    TrialContext,
    TrialFailure,
    hash_files,
)

LOG_TAIL_CHARS = 4000
B = TypeVar("B")
_KINDS: tuple[str, ...] = get_args(FailureKind)
_RUNNER_SOURCES = ("autolab/runner.py", "autolab/sandbox.py", "autolab/integrity.py",
                   "benchmarks/guard.py", "benchmarks/protocol.py")


def harness_version(bench: Benchmark) -> str:
    return hash_files(bench.harness_files())


@functools.cache
def runner_version() -> str:
    return hash_files([integrity.PROJECT / p for p in _RUNNER_SOURCES])[:16]


@functools.cache
def device_name() -> str:
    """The CPU model; a benchmark on GPUs adds its devices to the setup itself."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def gpu_names() -> tuple[str, ...]:
    """The GPUs nvidia-smi lists, in index order (empty where there is none)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def library_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """Python and the distributions the benchmark declares (their own dependencies are
    theirs to pin: an upgrade of, say, a templating library does not change a result)."""
    versions = {"python": platform.python_version()}
    for name in sorted(distributions):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


class TrialSetup(BaseModel):
    """Everything besides the candidate, seed and split that can change a trial's result.
    Its key is part of every trial id: trials are reused, and compared, only within one."""

    model_config = ConfigDict(frozen=True)
    benchmark: str
    harness: str
    data: str
    budget: Budget
    threads: int
    isolation: Isolation
    runner: str
    libraries: dict[str, str]
    device: str

    def key(self) -> str:
        return content_key("setup", self.model_dump(mode="json"))


def trial_setup(bench: Benchmark, prepared_dir: Path, budget: Budget, threads: int,
                isolation: Isolation) -> TrialSetup:
    device = device_name()
    if bench.hardware == "gpu":
        device = f"{gpu_names()[0] if gpu_names() else 'no GPU'} / {device}"
    return TrialSetup(
        benchmark=bench.name, harness=harness_version(bench),
        data=bench.data_version(prepared_dir), budget=budget, threads=threads,
        isolation=isolation, runner=runner_version(),
        libraries=library_versions(bench.distributions), device=device,
    )  # fmt: skip


@dataclass
class _Progress:
    """What one trial has gathered so far; the first failure wins."""

    failure: str | None = None
    reason: str = ""
    log: list[str] = field(default_factory=list)
    workload_s: float = 0.0
    peak_rss_mb: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    budget_used: float = 0.0
    evidence: dict = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)

    def fail(self, kind: str, reason: str, *, override: bool = False) -> None:
        if self.failure is None or override:
            self.failure = kind if kind in _KINDS else "output"
            self.reason = reason

    def add_step(self, name: str, res: SandboxResult,
                 halted: tuple[str, str] | None = None) -> None:
        """A step's log; `halted`: the companion ended it (how its processes died is then
        no clue to why)."""
        self.workload_s += res.wall_s
        self.peak_rss_mb = max(self.peak_rss_mb, res.peak_rss_mb)
        head = f"== {name}: {res.status} {res.reason}".rstrip() if halted is None else \
            f"== {name}: {halted[0]}: halted by the harness: {halted[1]}"
        self.log.append(
            f"{head} ({res.wall_s:.2f} s, {res.peak_rss_mb:.0f} MB, {res.isolation}) ==\n"
            f"-- stdout --\n{res.stdout_tail}\n-- stderr --\n{res.stderr_tail}\n"
        )


def _rmtree(path: Path) -> None:
    """Remove a tree even where the candidate took away permissions (symlinks untouched)."""
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)
        return
    for root, dirs, _ in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            if not os.path.islink(d):
                try:
                    os.chmod(d, stat.S_IRWXU)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


def _write_files(ws: Path, files: Mapping[str, str], prog: _Progress) -> bool:
    """Write the candidate's files; a path that escapes the workspace is its fault."""
    root = ws.resolve()
    for rel, text in files.items():
        dest = (root / rel).resolve()
        if Path(rel).is_absolute() or not dest.is_relative_to(root) or dest == root:
            prog.fail("integrity", f"candidate file path escapes the workspace: {rel!r}")
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
    return True


class _Trusted:
    """Digests taken by trusted code before the steps, compared once they are done."""

    def __init__(self, bench: Benchmark):
        self.bench = bench
        self.harness = integrity.file_digests(bench.harness_files())
        self.tripwire = integrity.tripwire()
        self.inputs: dict[str, str] = {}

    def staged(self, folder: Path) -> None:
        self.inputs |= integrity.file_digests([folder])

    def verify(self, workspace_files: dict[str, str], prog: _Progress) -> str:
        """Any change is an integrity failure, whatever else happened. Returns the
        harness hash after the trial."""
        problems = []
        if bad := integrity.changed(self.harness, integrity.file_digests(
                self.bench.harness_files())):
            problems.append(f"harness files changed: {bad}")
        if bad := integrity.changed(self.inputs, integrity.file_digests(
                {Path(p).parent for p in self.inputs})):
            problems.append(f"staged inputs changed: {[Path(p).name for p in bad][:5]}")
        if bad := integrity.changed(workspace_files, integrity.file_digests(
                [Path(p) for p in workspace_files])):
            problems.append(f"candidate files changed: {[Path(p).name for p in bad][:5]}")
        if bad := integrity.changed(
                {k: str(v) for k, v in self.tripwire.items()},
                {k: str(v) for k, v in integrity.tripwire().items()}):
            problems.append(f"trusted files changed: {bad[:5]}")
        if problems:
            prog.fail("integrity", "; ".join(problems), override=True)
        try:
            return hash_files(self.bench.harness_files())
        except OSError as e:
            return f"unreadable ({e.strerror})"


MARKER_FILE = "marker"  # in a trial's folder: the marker its last attempt ran under


def clear_leftovers(trial_dir: Path) -> None:
    """What the last attempt at this trial left running (its orchestrator killed): its
    processes, found by the marker it recorded, and its private /dev/shm folders."""
    kill_marked(trial_dir.name)  # an attempt from before markers had their own part
    try:
        marker = (trial_dir / MARKER_FILE).read_text().strip()
    except OSError:
        return
    # only a marker this code writes: the file is in the trial's folder, and a step without
    # bwrap could have written anything there (a pattern, another trial's marker)
    if re.fullmatch(re.escape(trial_dir.name) + r"-[0-9a-f]{12}", marker):
        kill_marked(marker)
        drop_private_shm(marker)


def _run_steps(bench: Benchmark, ctx: TrialContext, trusted: _Trusted, mode: Isolation,
               marker: str, prog: _Progress) -> None:
    """Stage and run each step with what is left of the trial's wall-clock budget (at most
    its own limit). The harness runs from a copy of its files, so nothing else of the
    project is on the steps' import path."""
    harness, elsewhere = _copy_harness(bench, ctx.outputs_dir.parent / "harness")
    trusted.staged(harness)
    for step in bench.steps(ctx):
        left = ctx.budget.wall_clock_s - prog.workload_s
        if left <= 0:
            if step.optional:
                prog.log.append(f"== {step.name}: not run, no wall-clock budget left ==\n")
                continue
            prog.fail("timeout", f"{step.name}: {ctx.budget.wall_clock_s:g} s wall-clock "
                      "budget spent")
            return
        bench.stage(ctx, step.name)
        inputs = ctx.inputs(step.name)
        inputs.mkdir(parents=True, exist_ok=True)
        trusted.staged(inputs)
        ctx.outputs(step.name).mkdir(parents=True, exist_ok=True)
        # under bwrap only: elsewhere the step sees the host's /dev/shm as it is
        shm = private_shm_dir(marker, step.name) if step.private_shm and mode == "bwrap" \
            else None
        if shm is not None:
            shm.mkdir(mode=0o700)
        view = View(
            cwd=ctx.workspace,
            read=(harness, *elsewhere, inputs, *(ctx.outputs(s) for s in step.reads),
                  *(Path(p) for p in step.host_read)),
            write=(ctx.outputs(step.name), *(Path(p) for p in step.host_write)),
            home=ctx.outputs_dir.parent / "home" / step.name,
            distributions=bench.distributions,
            pythonpath=(harness,),
            allow_subprocess=step.allow_subprocess,
            devices=step.devices,
            shm=shm,
        )
        limits = Limits(timeout_s=min(step.timeout_s, left), memory_mb=ctx.budget.memory_mb,
                        threads=ctx.threads)
        res, link = _run_step(bench, ctx, step, view, limits, mode, marker)
        # a stop by the runtime guard outweighs the harness halting the step
        halted = link.halted if link is not None and res.status != "integrity" else None
        prog.add_step(step.name, res, halted)
        if halted is not None:
            prog.fail(halted[0], f"{step.name}: {halted[1]}")
            return
        if res.status != "ok" and step.optional and res.status != "integrity":
            prog.log.append(f"== {step.name}: optional, so the trial goes on ==\n")
            continue
        if res.status != "ok":
            prog.fail(res.status, f"{step.name}: {res.reason}")
            return


def _run_step(bench: Benchmark, ctx: TrialContext, step: SandboxStep, view: View,
              limits: Limits, mode: Isolation, marker: str) -> tuple[SandboxResult,
                                                                     StepLink | None]:
    """One step; with a channel, the benchmark's companion runs beside it in a thread."""
    serve = getattr(bench, "companion", None)
    serve = serve(ctx, step.name) if step.channel and serve else None
    if serve is None:
        return run_sandboxed(step.argv, view, limits, step.env, mode=mode, marker=marker), None
    ours, theirs = socket.socketpair()
    link = StepLink(ours, kill=lambda: kill_marked(marker), shm=view.shm)
    errors: list[BaseException] = []

    def companion() -> None:
        try:
            serve(link)
        except Exception as e:  # a fault of trusted code: surfaces after the step
            errors.append(e)
            link.halt("crash", f"companion failed: {type(e).__name__}: {e}")
        finally:
            ours.close()

    env = {**step.env, "AUTOLAB_CHANNEL_FD": str(theirs.fileno())}
    thread = threading.Thread(target=companion, name=f"companion-{step.name}", daemon=True)
    link.started = time.monotonic()
    thread.start()
    try:
        res = run_sandboxed(step.argv, view, limits, env, mode=mode, marker=marker,
                            pass_fds=(theirs.fileno(),))
    finally:
        theirs.close()
        link.ended = time.monotonic()
        link.finished.set()
        thread.join(timeout=120)
    if thread.is_alive():
        raise RuntimeError(f"{step.name}: the companion did not finish after the step")
    if errors:
        raise errors[0]
    return res, link


def _copy_harness(bench: Benchmark, dest: Path) -> tuple[Path, list[Path]]:
    """The benchmark's sandbox files of the project, copied under dest at their project
    paths (dest goes on the import path); files from elsewhere are shown where they are."""
    dest.mkdir(parents=True, exist_ok=True)
    elsewhere = []
    for src in map(Path, bench.sandbox_files()):
        if not src.resolve().is_relative_to(integrity.PROJECT):
            elsewhere.append(src)
            continue
        target = dest / src.resolve().relative_to(integrity.PROJECT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return dest, elsewhere


def _score_and_check(bench: Benchmark, ctx: TrialContext, prog: _Progress) -> None:
    score: Score = bench.score(ctx)
    prog.metrics = {k: v for k, v in score.metrics.items() if math.isfinite(v)}
    prog.budget_used = score.budget_used
    # a record must read back: no NaN or infinity (JSON has neither) in what is kept
    prog.evidence = {k: v for k, v in score.evidence.items()
                     if not (isinstance(v, float) and not math.isfinite(v))}
    bad = sorted(k for k in score.metrics if k not in prog.metrics)
    if bad or not math.isfinite(score.budget_used):
        prog.fail("nan", f"non-finite metric: {', '.join(bad) or 'budget_used'}")
        return
    if score.budget_used > ctx.budget.amount:
        prog.fail("budget", f"used {score.budget_used:g} of {ctx.budget.amount} "
                  f"{ctx.budget.unit}")
    for check in bench.audit_checks():
        try:
            res = check(ctx, score)
        except TrialFailure as e:
            res = CheckResult(name=getattr(check, "__name__", "check"), passed=False,
                              evidence=e.reason)
        prog.checks.append(res)
        if not res.passed:
            kind = "budget" if "budget" in res.name.lower() else "integrity"
            evidence = f": {res.evidence}" if res.evidence else ""
            prog.fail(kind, f"audit {res.name} failed{evidence}")


@dataclass(frozen=True)
class LocalTrials:
    """A TrialRunner (benchmarks.protocol) for a benchmark whose prepare runs trials of its
    own: run_trial on one thread, under the isolation the campaign's trials use."""

    isolation: Isolation

    def __call__(self, bench: Benchmark, candidate_id: str, files: dict[str, str], seed: int,
                 split: Split, budget: Budget, *, work_root: Path, prepared_dir: Path,
                 cache_root: Path | None = None, gpu: int | None = None) -> Trial:
        setup = trial_setup(bench, prepared_dir, budget, threads=1, isolation=self.isolation)
        return run_trial(bench, candidate_id, files, seed, split, setup, work_root=work_root,
                         prepared_dir=prepared_dir, cache_root=cache_root, gpu=gpu)

    def clear(self, work_root: Path) -> None:
        for trial_dir in Path(work_root).glob("*"):
            if trial_dir.is_dir():
                clear_leftovers(trial_dir)


def give_trial_runner(bench: B, isolation: str) -> B:
    """Where the benchmark runs trials in its prepare (its optional `trial_runner`), the
    runner for them: as the campaign's, under `isolation`. Returns the benchmark."""
    if hasattr(bench, "trial_runner"):
        from autolab.sandbox import isolation_mode

        bench.trial_runner = LocalTrials(isolation_mode(isolation))  # type: ignore[attr-defined]
    return bench


def run_trial(
    bench: Benchmark,
    candidate_id: str,
    candidate_files: dict[str, str],
    seed: int,
    split: Split,
    setup: TrialSetup,
    *,
    work_root: Path,
    prepared_dir: Path,
    python: str = sys.executable,
    keep_outputs: bool = False,
    gpu: int | None = None,
    cache_root: Path | None = None,
) -> Trial:
    """Run one candidate on one seed and split; never raises for the candidate's faults.

    The trial id is a content key, so re-running the same work reuses the same dir: any
    process still running from a killed attempt and any leftovers are removed first.
    Exceptions other than TrialFailure from the benchmark, and SandboxError, propagate
    as infrastructure faults. `gpu` is the GPU a GPU benchmark's steps get; `cache_root`
    holds a store per candidate (ctx.cache_dir) that the benchmark may keep across that
    candidate's trials.
    """
    work_root, prepared_dir = Path(work_root).absolute(), Path(prepared_dir).absolute()
    trial_id = Trial.key(candidate_id, seed, split, setup.key())
    trial_dir = work_root / trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    # one attempt at a time in a folder (another, e.g. one the engine gave up waiting for,
    # still running, is waited for); the lock goes with a killed process
    held = os.open(trial_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        return _attempt(bench, candidate_id, candidate_files, seed, split, setup, trial_dir,
                        prepared_dir, python, keep_outputs, gpu, cache_root)
    finally:
        os.close(held)
        release_device_cache()


def release_device_cache() -> None:
    """What this process's trusted side of a trial (drawing inputs, running the reference,
    checking outputs) left in torch's device memory cache, given back to the driver. The
    process is long-lived (the campaign's, an engine worker's): blocks it keeps cached
    after one trial are memory the next trial's sandboxed processes cannot have, and a
    large workload's then runs out of it. Nothing where torch was never imported here or
    never used a GPU. Never raises: a device whose context has failed (empty_cache then
    raises the CUDA error) must not replace the trial's own result or exception."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_available() or not cuda.is_initialized():
            return
        import gc

        gc.collect()  # tensors a finished trial left only in reference cycles
        cuda.empty_cache()
    except Exception as e:  # noqa: BLE001 - the next trial meets the device as it is
        print(f"autolab: the device cache was not released: {type(e).__name__}: {e}"[:300],
              file=sys.stderr)


def _attempt(bench: Benchmark, candidate_id: str, candidate_files: dict[str, str], seed: int,
             split: Split, setup: TrialSetup, trial_dir: Path, prepared_dir: Path,
             python: str, keep_outputs: bool, gpu: int | None,
             cache_root: Path | None) -> Trial:
    trial_id = trial_dir.name
    clear_leftovers(trial_dir)
    for leftover in ("ws", "in", "out", "home", "harness", "log.txt"):
        _rmtree(trial_dir / leftover)
    # this attempt's own marker: another run of the same trial (another campaign's folder,
    # another process) has another, so neither kills the other's processes
    marker = f"{trial_id}-{secrets.token_hex(6)}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / MARKER_FILE).write_text(marker)
    ws = trial_dir / "ws"
    ws.mkdir(parents=True)
    started_at, t0 = now(), time.monotonic()
    ctx = TrialContext(
        workspace=ws, inputs_dir=trial_dir / "in", outputs_dir=trial_dir / "out",
        prepared_dir=prepared_dir, candidate_id=candidate_id, seed=seed, split=split,
        budget=setup.budget, threads=setup.threads, python=python, gpu=gpu,
        cache_dir=Path(cache_root).absolute() / candidate_id if cache_root else None,
    )  # fmt: skip
    prog = _Progress()
    trusted = _Trusted(bench)
    before = hash_files(bench.harness_files())
    after, finished = before, False
    try:
        if _write_files(ws, candidate_files, prog):
            files = integrity.file_digests([ws])
            try:
                _run_steps(bench, ctx, trusted, setup.isolation, marker, prog)
                if prog.failure is None:
                    _score_and_check(bench, ctx, prog)
            except TrialFailure as e:
                prog.fail(e.kind, e.reason)
            after = trusted.verify(files, prog)
        finished = True
    finally:
        kill_marked(marker)
        drop_private_shm(marker)
        (trial_dir / MARKER_FILE).unlink(missing_ok=True)  # nothing left to clear
        log = "".join(prog.log)
        outcome = prog.failure or ("ok" if finished else "infrastructure fault")
        status_line = f"== trial {trial_id}: {outcome} {prog.reason}".rstrip()
        (trial_dir / "log.txt").write_text(log + status_line + "\n", encoding="utf-8")
        if not keep_outputs:
            for name in ("ws", "in", "out", "home", "harness"):
                _rmtree(trial_dir / name)
    return Trial(
        id=trial_id, candidate_id=candidate_id, seed=seed, split=split,
        setup_key=setup.key(),
        status="failed" if prog.failure else "ok", failure=prog.failure,  # type: ignore[arg-type]
        reason=prog.reason, metrics=prog.metrics, budget_used=prog.budget_used,
        evidence={k: v for k, v in prog.evidence.items() if isinstance(v, str | int | float)},
        wall_s=round(time.monotonic() - t0, 3), workload_s=round(prog.workload_s, 3),
        peak_rss_mb=prog.peak_rss_mb, harness_hash_before=before, harness_hash_after=after,
        isolation=setup.isolation, checks=prog.checks, log_tail=log[-LOG_TAIL_CHARS:],
        started_at=started_at, finished_at=now(),
    )

