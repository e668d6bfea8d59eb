"""One trial, end to end: lay out, run the untrusted steps, score, audit, clean up.

Whatever the candidate does comes back as a Trial record (status "failed" with a
FailureKind and a one-line reason); only faults of trusted code (the benchmark's own
staging or scoring raising something other than TrialFailure, a sandbox that cannot
start) propagate, so the orchestrator can retry them as infrastructure faults.
Workspaces are deleted afterwards, so disk stays flat over long campaigns; each
trial keeps only a small log.txt with the tails of its steps' output.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from autolab.records import FailureKind, Trial, now
from autolab.sandbox import Limits, SandboxResult, run_sandboxed
from benchmarks.protocol import (
    Benchmark,
    Budget,
    CheckResult,
    Score,
    Split,
    TrialContext,
    TrialFailure,
    hash_files,
)

LOG_TAIL_CHARS = 4000
_KINDS: tuple[str, ...] = get_args(FailureKind)


def harness_version(bench: Benchmark) -> str:
    """Part of every trial id: a change to the harness invalidates cached trials."""
    return hash_files(bench.harness_files())[:16]


@dataclass
class _Progress:
    """What one trial has gathered so far; the first failure wins."""

    failure: str | None = None
    reason: str = ""
    log: list[str] = field(default_factory=list)
    workload_s: float = 0.0
    peak_rss_mb: float = 0.0
    isolation: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    budget_used: float = 0.0
    checks: list[CheckResult] = field(default_factory=list)

    def fail(self, kind: str, reason: str, *, override: bool = False) -> None:
        if self.failure is None or override:
            self.failure = kind if kind in _KINDS else "output"
            self.reason = reason

    def add_step(self, name: str, res: SandboxResult) -> None:
        self.workload_s += res.wall_s
        self.peak_rss_mb = max(self.peak_rss_mb, res.peak_rss_mb)
        self.isolation = res.isolation
        head = f"== {name}: {res.status} {res.reason}".rstrip()
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


def _file_digests(paths: Sequence[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        try:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError as e:
            out[str(p)] = f"unreadable ({e.strerror})"
    return out


def _check_harness(bench: Benchmark, before: dict[str, str], prog: _Progress) -> str:
    """Hash the harness again; any change is an integrity failure, whatever else happened."""
    paths = bench.harness_files()
    after = _file_digests(paths)
    try:
        digest = hash_files(paths)
    except OSError as e:
        digest = f"unreadable ({e.strerror})"
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        prog.fail("integrity", f"harness files changed during the trial: {changed}", override=True)
    return digest


def _run_steps(
    bench: Benchmark, ctx: TrialContext, hidden: Sequence[Path],
    env_extra: Mapping[str, str] | None, prog: _Progress,
) -> None:
    """Each step gets what is left of the trial's wall-clock budget, at most its own limit."""
    for step in bench.steps(ctx):
        left = ctx.budget.wall_clock_s - prog.workload_s
        if left <= 0:
            spent = f"{ctx.budget.wall_clock_s:g} s wall-clock budget spent"
            prog.fail("timeout", f"{step.name}: {spent}")
            return
        limits = Limits(timeout_s=min(step.timeout_s, left), memory_mb=ctx.budget.memory_mb,
                        threads=ctx.threads)
        readable = [Path(p) for p in step.readable]  # only its own inputs: train never sees eval
        res = run_sandboxed(step.argv, ctx.workspace, limits, readable=readable, hidden=hidden,
                            env_extra=env_extra)
        prog.add_step(step.name, res)
        if res.status != "ok":
            prog.fail(res.status, f"{step.name}: {res.reason}")
            return


def _score_and_audit(bench: Benchmark, ctx: TrialContext, prog: _Progress) -> None:
    score: Score = bench.score(ctx)
    prog.metrics = {k: v for k, v in score.metrics.items() if math.isfinite(v)}
    prog.budget_used = score.budget_used
    bad = sorted(k for k in score.metrics if k not in prog.metrics)
    if bad or not math.isfinite(score.budget_used):
        prog.fail("nan", f"non-finite metric: {', '.join(bad) or 'budget_used'}")
        return
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


def _hidden_paths(hidden: Sequence[Path], prepared_dir: Path, work_root: Path,
                  python: str) -> list[Path]:
    """Hide the prepared data and the other trials' dirs, unless the interpreter lives there."""
    out = [Path(p).absolute() for p in hidden] + [prepared_dir]
    if not Path(python).absolute().is_relative_to(work_root):
        out.append(work_root)
    return out


def _execute(
    bench: Benchmark, ctx: TrialContext, files: Mapping[str, str], hidden: Sequence[Path],
    env_extra: Mapping[str, str] | None, prog: _Progress,
) -> str:
    """Write, stage, run, score, audit; then re-hash the harness. Returns the hash after."""
    before = _file_digests(bench.harness_files())
    if _write_files(ctx.workspace, files, prog):
        try:
            bench.stage_inputs(ctx)
            _run_steps(bench, ctx, hidden, env_extra, prog)
            if prog.failure is None:
                _score_and_audit(bench, ctx, prog)
        except TrialFailure as e:
            prog.fail(e.kind, e.reason)
    return _check_harness(bench, before, prog)


def run_trial(
    bench: Benchmark,
    candidate_id: str,
    candidate_files: dict[str, str],
    seed: int,
    split: Split,
    budget: Budget,
    *,
    work_root: Path,
    prepared_dir: Path,
    hidden: Sequence[Path] = (),
    threads: int = 1,
    python: str = sys.executable,
    keep_outputs: bool = False,
    env_extra: Mapping[str, str] | None = None,
) -> Trial:
    """Run one candidate on one seed and split; never raises for the candidate's faults.

    The trial id is a content key, so re-running the same work reuses the same dir (any
    leftovers of a killed run are removed first). Exceptions other than TrialFailure from
    the benchmark, and SandboxError, propagate as infrastructure faults. env_extra is
    passed to every step (secret-looking names are refused by the sandbox).
    """
    work_root, prepared_dir = Path(work_root).absolute(), Path(prepared_dir).absolute()
    trial_id = Trial.key(candidate_id, seed, split, harness_version(bench),
                         budget.model_dump(mode="json"))
    trial_dir = work_root / trial_id
    ws, inputs = trial_dir / "ws", trial_dir / "inputs"
    for leftover in (ws, inputs, trial_dir / "log.txt"):
        _rmtree(leftover)
    ws.mkdir(parents=True)
    inputs.mkdir()
    started_at, t0 = now(), time.monotonic()
    ctx = TrialContext(workspace=ws, inputs_dir=inputs, prepared_dir=prepared_dir, seed=seed,
                       split=split, budget=budget, threads=threads, python=python)
    prog = _Progress()
    before = after = hash_files(bench.harness_files())
    finished = False
    try:
        after = _execute(bench, ctx, candidate_files,
                         _hidden_paths(hidden, prepared_dir, work_root, python), env_extra, prog)
        finished = True
    finally:
        log = "".join(prog.log)
        outcome = prog.failure or ("ok" if finished else "infrastructure fault")
        status_line = f"== trial {trial_id}: {outcome} {prog.reason}".rstrip()
        (trial_dir / "log.txt").write_text(log + status_line + "\n", encoding="utf-8")
        if not keep_outputs:
            _rmtree(ws)
            _rmtree(inputs)
    return Trial(
        id=trial_id, candidate_id=candidate_id, seed=seed, split=split,
        status="failed" if prog.failure else "ok", failure=prog.failure,  # type: ignore[arg-type]
        reason=prog.reason, metrics=prog.metrics, budget_used=prog.budget_used,
        wall_s=round(time.monotonic() - t0, 3), workload_s=round(prog.workload_s, 3),
        peak_rss_mb=prog.peak_rss_mb, harness_hash_before=before, harness_hash_after=after,
        isolation=prog.isolation, checks=prog.checks, log_tail=log[-LOG_TAIL_CHARS:],
        started_at=started_at, finished_at=now(),
    )
