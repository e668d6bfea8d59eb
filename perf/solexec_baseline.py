"""Baseline times T_b of SOL-ExecBench problems on this machine, with their T_SOL.

For each problem the reference is evaluated as a candidate is (benchmarks.solexec.evaluate:
a worker process runs it, this process owns the clock, the inputs and the checks), once
in eager mode and once under torch.compile, in a fresh worker each, so the compiler starts
clean for every problem. T_b of a workload is the faster of the two that passed. T_SOL
comes from the roofline (benchmarks.solexec.roofline) for the device named.

The output is one JSON file, rewritten after every problem, so a run stopped part-way is
resumed by running the same command again (problems already in it are skipped).

Compiling every workload's shape dominates the time a problem takes under torch.compile,
and it runs on one CPU core per worker. With --jobs N the problems go in batches of N: the
batch's compiled references are first run once, untimed, in N processes side by side,
filling an inductor and Triton cache (--cache-dir) that the timed workers then read, one
problem at a time as before, with nothing else on the device. The cache holds only what
the references compile; a candidate's workers never see it.

    python perf/solexec_baseline.py --data-dir ../shared/data/sol-execbench/benchmark \\
        --subset L1 --out /root/out/baseline-L1.json --device cuda --spec h100
    python perf/solexec_baseline.py --summary /root/out/baseline-L1.json
    # 12 problems compiling side by side before each batch is timed:
    python perf/solexec_baseline.py ... --jobs 12 --cache-dir /root/solexec-cache
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolab.procs import run_reaped  # noqa: E402
from benchmarks.solexec.baseline import baseline_times, run_modes  # noqa: E402
from benchmarks.solexec.evaluate import Timing  # noqa: E402
from benchmarks.solexec.problems import Problem, category, load_problems  # noqa: E402


def load_sol_table(path: Path | None, spec: str) -> dict[str, float]:
    """T_SOL in ns per workload uuid for `spec`, from perf/solexec_sol_table.py's output."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    out = {}
    for row in rows:
        t = (row.get("t_sol_s") or {}).get(spec)
        if t:
            out[row["uuid"]] = t * 1e9
    return out


def solution_folder(cache_dir: Path | None, tmp: Path, problem: Problem) -> Path:
    """Where the reference is written as a solution (a folder per mode under it). With a
    cache, the same path for the prewarming and the timed run (a path may reach a compiled
    graph's cache key)."""
    if cache_dir is None:
        return tmp
    return Path(cache_dir).absolute() / "solutions" / problem.key.replace("/", "__")


def one_problem(problem: Problem, timing: Timing, t_sol: dict[str, float], modes: list[str],
                cache_dir: Path | None = None) -> dict:
    started = time.monotonic()
    row: dict[str, Any] = {"problem": problem.key, "category": category(problem)}
    with tempfile.TemporaryDirectory(prefix="solexec-baseline-") as tmp:
        folder = solution_folder(cache_dir, Path(tmp), problem)
        row |= run_modes(problem, timing, modes, folder, cache_dir)
    row["t_sol_ns"] = {w.uuid: t_sol[w.uuid] for w in problem.workloads if w.uuid in t_sol}
    row["wall_s"] = round(time.monotonic() - started, 2)
    return row


def prewarm(problems: list[Problem], args: argparse.Namespace, timeout_s: float) -> dict:
    """The compiled references of `problems` run once each, untimed, one process per
    problem side by side, so that their compiled graphs and kernels are in the cache
    before the timed workers ask for them. What fails here (a shape out of memory while
    the others hold theirs) is compiled again, alone, when it is timed. Whatever a
    process started (compile workers in sessions of their own) is killed when it ends:
    nothing goes on compiling beside the timed run. Exit codes: None for a process
    stopped at the timeout."""
    started = time.monotonic()
    folder = Path(args.cache_dir).absolute() / "prewarm"
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def one(problem: Problem) -> int | None:
        name = problem.key.replace("/", "__")
        out = folder / f"{name}.json"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(args.data_dir),
               "--subset", problem.key.split("/")[0], "--problem", problem.key,
               "--out", str(out), "--device", args.device, "--modes", "compile",
               "--warmup", "1", "--reps", "1", "--cache-dir", str(args.cache_dir), "--quiet"]
        if args.max_elements:
            cmd += ["--max-elements", str(args.max_elements)]
        return run_reaped(cmd, env=env, log=folder / f"{name}.log", timeout_s=timeout_s)

    with ThreadPoolExecutor(max(1, len(problems))) as pool:
        codes = list(pool.map(one, problems))
    return {"problems": [p.key for p in problems], "wall_s": round(time.monotonic() - started, 2),
            "exit_codes": codes}


def summary(rows: list[dict]) -> dict:
    timed, skipped, failed, ratios, wall = 0, {}, {}, [], 0.0
    by_mode: dict[str, int] = {}
    for row in rows:
        wall += row["wall_s"]
        for uuid, b in baseline_times(row).items():
            if "t_b_ns" in b:
                timed += 1
                by_mode[b["mode"]] = by_mode.get(b["mode"], 0) + 1
                t_sol = row["t_sol_ns"].get(uuid)
                if t_sol:
                    ratios.append(b["t_b_ns"] / t_sol)
            elif b["status"] == "skipped":
                skipped[b["reason"]] = skipped.get(b["reason"], 0) + 1
            else:
                failed[f"{row['problem']}: {b['reason'][:120]}"] = 1
    return {
        "problems": len(rows),
        "workloads_timed": timed,
        "workloads_skipped": sum(skipped.values()),
        "skip_reasons": skipped,
        "workloads_not_timed": failed,
        "faster_mode": by_mode,
        "median_tb_over_tsol": statistics.median(ratios) if ratios else None,
        "workloads_with_tsol": len(ratios),
        "suite_eval_minutes": round(wall / 60, 2),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--subset", action="append", help="L1, L2, Quant, FlashInfer-Bench")
    ap.add_argument("--problem", action="append", help="only these (subset/name or name)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--spec", default="h100", help="roofline device: h100, h200, b200")
    ap.add_argument("--sol-table", type=Path, help="perf/solexec_sol_table.py's JSON output")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--max-elements", type=int, default=None, help="shrink (CPU runs)")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop starting problems")
    ap.add_argument("--summary", type=Path, help="print the summary of an output file")
    ap.add_argument("--cache-dir", type=Path, help="inductor and Triton caches of the "
                    "compiled references (kept between runs; a candidate never reads it)")
    ap.add_argument("--jobs", type=int, default=1, help="problems compiled side by side "
                    "before each batch is timed (needs --cache-dir)")
    ap.add_argument("--prewarm-timeout-s", type=float, default=900.0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs > 1 and args.cache_dir is None:
        ap.error("--jobs needs --cache-dir: the timed workers read what the batch compiled")
    if args.summary:
        print(json.dumps(summary(json.loads(args.summary.read_text())["rows"]), indent=1))
        return
    if args.data_dir is None or args.out is None:
        ap.error("--data-dir and --out are needed to measure")
    started = time.monotonic()
    timing = Timing(device=args.device, warmup=args.warmup, reps=args.reps,
                    max_elements=args.max_elements)
    done = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    seen = {r["problem"] for r in done["rows"]}
    t_sol = load_sol_table(args.sol_table, args.spec)
    problems = load_problems(args.data_dir, args.subset)
    if args.problem:
        problems = [p for p in problems if p.key in args.problem or p.name in args.problem]
    todo = [p for p in problems if p.key not in seen]
    modes = args.modes.split(",")
    batch = max(1, args.jobs)
    for first in range(0, len(todo), batch):
        if args.deadline_s and time.monotonic() - started > args.deadline_s:
            print("deadline reached; run again to go on", flush=True)
            break
        group = todo[first : first + batch]
        if args.jobs > 1 and "compile" in modes:
            limit = args.prewarm_timeout_s
            if args.deadline_s:  # the deadline bounds the prewarm too, not only the batches
                limit = min(limit, max(1.0, args.deadline_s - (time.monotonic() - started)))
            warm = prewarm(group, args, limit)
            done.setdefault("prewarm", []).append(warm)
            if not args.quiet:
                print(f"prewarm {len(group)} problems: {warm['wall_s']} s", flush=True)
        for problem in group:
            row = one_problem(problem, timing, t_sol, modes, args.cache_dir)
            done["rows"].append(row)
            done["device"] = args.device
            args.out.write_text(json.dumps(done))
            counts = {m: row[m]["counts"] if m in row else row[f"{m}_error"][:80]
                      for m in modes}
            if not args.quiet:
                print(f"{problem.key}: {row['wall_s']} s {counts}", flush=True)
    if not args.quiet:
        print(json.dumps(summary(done["rows"]), indent=1))


if __name__ == "__main__":
    main()
