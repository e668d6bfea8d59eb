"""Speed-of-light (T_SOL) table for SOL-ExecBench workloads, on H100 SXM, H200 and B200.

For each workload, roofline.count_workload traces the reference once (on meta tensors, or
on the CPU fallback for references that read tensor values) and the count is priced on
every device. One JSON row per workload: FLOPs by dtype class, bytes, precision, T_SOL and
bound per device, or why there is none (skipped: the loader's reason; failed: the
tracer's, or the per-workload CPU-time limit). A summary goes to stdout.

    python perf/solexec_sol_table.py --out /tmp/sol_table.json
    python perf/solexec_sol_table.py --subset L1 --problems gemm rmsnorm

The dataset folder is --data-dir, else $AUTOLAB_SOLEXEC_DIR, else
../shared/data/sol-execbench beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.solexec.problems import SUBSETS, Problem, category, load_problems, skip_reason
from benchmarks.solexec.roofline import DEVICES, FP32_POLICIES, count_workload, price
from benchmarks.solexec.tracing import SolUnavailable

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "sol-execbench"
COLUMNS = {"h100": "H100 SXM", "h200": "H200", "b200": "B200"}


class WorkloadTimeout(BaseException):
    """A workload over its CPU time; not an Exception, so no handler in a reference or in
    the tracer can take it for the reference's own failure."""


def _over_time(signum: int, frame: Any) -> None:
    raise WorkloadTimeout


def workload_row(
    problem: Problem,
    index: int,
    fp32_as: str = "fp16",
    timeout: float = 60,
    meta_failure: str | None = None,
) -> dict[str, Any]:
    """One table row: the estimate on every device, or why there is none. ``timeout`` is
    in CPU seconds (SIGPROF), so that a busy machine does not fail a workload."""
    workload = problem.workloads[index]
    row: dict[str, Any] = {
        "subset": problem.subset,
        "problem": problem.name,
        "workload": workload.uuid,
        "category": category(problem),
        "axes": workload.axes,
    }
    if reason := skip_reason(problem, workload):
        return {**row, "status": "skipped", "reason": reason}
    start = time.process_time()
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        counts, traced_on, meta_failure = count_workload(problem, workload, meta_failure)
    except WorkloadTimeout:
        return {**row, "status": "failed", "reason": f"ran past {timeout:g} CPU seconds"}
    except SolUnavailable as exc:
        return {**row, "status": "failed", "reason": exc.reason}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    sols = {key: price(counts, DEVICES[name], fp32_as=fp32_as) for key, name in COLUMNS.items()}
    first = next(iter(sols.values()))
    return {
        **row,
        "status": "estimated",
        "traced_on": traced_on,
        **({"meta_failure": meta_failure} if meta_failure else {}),
        "flops": first.flops_by_class,
        "input_bytes": counts.input_bytes,
        "output_bytes": counts.output_bytes,
        "precision": first.precision,
        "rate_class": first.rate_class,
        "t_sol_s": {key: sol.t_sol_s for key, sol in sols.items()},
        "bound": {key: sol.bound for key, sol in sols.items()},
        "cpu_seconds": round(time.process_time() - start, 3),
    }


# --- the table, over worker processes ---------------------------------------------------

BATCH = 4  # workloads of one problem a task: balance against the meta attempts it saves
_PROBLEMS: dict[str, Problem] = {}


def _start_worker(problems: dict[str, Problem]) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGPROF, _over_time)
    _PROBLEMS.update(problems)


def _rows(key: str, indices: range, fp32_as: str, timeout: float) -> list[dict[str, Any]]:
    """Rows of some workloads of one problem. Once one of them could not be traced on meta
    (its reference reads tensor values), the rest go straight to the CPU fallback."""
    rows, meta_failure = [], None
    for index in indices:
        row = workload_row(_PROBLEMS[key], index, fp32_as, timeout, meta_failure)
        meta_failure = meta_failure or row.get("meta_failure")
        rows.append(row)
    return rows


def table(
    problems: list[Problem], *, jobs: int, fp32_as: str = "fp16", timeout: float = 60
) -> list[dict[str, Any]]:
    """Rows for every workload of ``problems``, in dataset order, spread over ``jobs``
    processes a few workloads at a time (a problem's workloads can differ a lot in cost)."""
    tasks = [
        (p.key, range(i, min(i + BATCH, len(p.workloads))))
        for p in problems
        for i in range(0, len(p.workloads), BATCH)
    ]
    by_key = {p.key: p for p in problems}
    keys, spans = [k for k, _ in tasks], [r for _, r in tasks]
    fp32, limit = [fp32_as] * len(tasks), [timeout] * len(tasks)
    if jobs <= 1:  # in this process, whose SIGPROF handler is put back after
        _PROBLEMS.update(by_key)
        previous = signal.signal(signal.SIGPROF, _over_time)
        try:
            return [row for rows in map(_rows, keys, spans, fp32, limit) for row in rows]
        finally:
            signal.signal(signal.SIGPROF, previous)
    with ProcessPoolExecutor(jobs, initializer=_start_worker, initargs=(by_key,)) as pool:
        return [row for rows in pool.map(_rows, keys, spans, fp32, limit) for row in rows]


def select(data_dir: Path, subsets: list[str] | None, names: list[str] | None) -> list[Problem]:
    """The dataset's problems, limited to ``subsets`` and to names containing one of
    ``names``."""
    problems = load_problems(data_dir, subsets)
    return [p for p in problems if not names or any(n in p.name for n in names)]


def _kind(reason: str) -> str:
    """A reason up to its detail: the part that groups workloads."""
    if reason.startswith("input ") and "safetensors" in reason:
        return "inputs read from safetensors blobs not available offline"
    return reason.split(":")[0].split(" (")[0].split(" | ")[0]


def cpu_seconds() -> float:
    """CPU time of this process and of its finished workers."""
    own, workers = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def summary(rows: Iterable[dict[str, Any]], seconds: float, cpu: float | None = None) -> str:
    """Counts of estimated, skipped and failed workloads, by route, bound and reason."""
    rows = list(rows)
    by_status = Counter(r["status"] for r in rows)
    done = [r for r in rows if r["status"] == "estimated"]
    routes = Counter(r["traced_on"] for r in done)
    bounds = Counter(r["bound"]["b200"] for r in done)
    problems = {(r["subset"], r["problem"]) for r in rows}
    estimated_problems = {(r["subset"], r["problem"]) for r in done}
    lines = [
        f"{len(rows)} workloads of {len(problems)} problems in {seconds:.0f}s"
        + (f" ({cpu:.0f} CPU s)" if cpu is not None else ""),
        f"  estimated  {by_status['estimated']} ({len(estimated_problems)} problems); "
        f"traced on meta {routes['meta']}, on the CPU fallback {routes['cpu']}; "
        f"B200 bound: compute {bounds['compute']}, memory {bounds['memory']}",
    ]
    for status in ("skipped", "failed"):
        reasons = Counter(_kind(r["reason"]) for r in rows if r["status"] == status)
        lines.append(f"  {status:<9}  {by_status[status]}")
        lines += [f"    {n:5d}  {reason}" for reason, n in reasons.most_common()]
    if done:
        slowest = max(done, key=lambda r: r["cpu_seconds"])
        lines.append(
            f"  slowest estimate {slowest['cpu_seconds']:.1f} CPU s "
            f"({slowest['subset']}/{slowest['problem']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("AUTOLAB_SOLEXEC_DIR", DEFAULT_DATA_DIR)),
    )
    ap.add_argument("--subset", nargs="*", choices=SUBSETS, help="only these subsets")
    ap.add_argument("--problems", nargs="*", help="only problems whose name contains one")
    ap.add_argument(
        "--fp32-as",
        choices=FP32_POLICIES,
        default="fp16",
        help="rate for fp32 problems' tensor-core FLOPs (SOLAR leaderboard: fp16)",
    )
    ap.add_argument("--out", type=Path, help="JSON file for the rows")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--timeout", type=float, default=60, help="CPU seconds per workload")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    try:
        problems = select(args.data_dir, args.subset, args.problems)
    except FileNotFoundError as exc:
        sys.exit(str(exc))
    rows = table(problems, jobs=args.jobs, fp32_as=args.fp32_as, timeout=args.timeout)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(summary(rows, time.perf_counter() - start, cpu_seconds()))


if __name__ == "__main__":
    main()
