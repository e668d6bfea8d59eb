"""Baseline times T_b of SOL-ExecBench problems on this machine, with their T_SOL.

For each problem the reference is evaluated as a candidate is (benchmarks.solexec.evaluate:
a worker process runs it, this process owns the clock, the inputs and the checks), once
in eager mode and once under torch.compile, in a fresh worker each, so the compiler starts
clean for every problem. T_b of a workload is the faster of the two that passed. T_SOL
comes from the roofline (benchmarks.solexec.roofline) for the device named.

The output is one JSON file, rewritten after every problem, so a run stopped part-way is
resumed by running the same command again (problems already in it are skipped).

    python perf/solexec_baseline.py --data-dir ../shared/data/sol-execbench/benchmark \\
        --subset L1 --out /root/out/baseline-L1.json --device cuda --spec h100
    python perf/solexec_baseline.py --summary /root/out/baseline-L1.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.solexec.evaluate import Timing, evaluate_problem, reference_solution  # noqa: E402
from benchmarks.solexec.problems import Problem, category, load_problems  # noqa: E402

COMPILE_CALL_TIMEOUT_S = 300.0
COMPILED_TAIL = """

# Baseline under torch.compile: one graph per shape, a recompile limit no workload list
# reaches (past it torch would fall back to eager without a word), compiling in-process.
import torch as _torch
import torch._dynamo as _dynamo
import torch._inductor.config as _inductor_config

_dynamo.config.cache_size_limit = 4096
if hasattr(_dynamo.config, "recompile_limit"):
    _dynamo.config.recompile_limit = 4096
_inductor_config.compile_threads = 1
_eager_run = run
run = _torch.compile(_eager_run, dynamic=False)
"""


def compiled_reference_solution(problem: Problem, dest: Path) -> Path:
    """The reference wrapped in torch.compile, written as a solution."""
    dest = reference_solution(problem, dest)
    path = dest / "solution.py"
    path.write_text(path.read_text() + COMPILED_TAIL)
    return dest


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


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def one_problem(problem: Problem, timing: Timing, t_sol: dict[str, float], modes: list[str]
                ) -> dict:
    started = time.monotonic()
    row: dict[str, Any] = {"problem": problem.key, "category": category(problem)}
    with tempfile.TemporaryDirectory(prefix="solexec-baseline-") as tmp:
        for mode in modes:
            make = reference_solution if mode == "eager" else compiled_reference_solution
            solution = make(problem, Path(tmp) / mode)
            # The first call of each shape compiles: allow it the time that takes.
            run_timing = timing if mode == "eager" else dataclasses.replace(
                timing, call_timeout_s=max(timing.call_timeout_s, COMPILE_CALL_TIMEOUT_S))
            try:
                result = evaluate_problem(problem, solution, run_timing)
            except Exception as exc:  # noqa: BLE001 - trusted-side failure (e.g. out of memory)
                row[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:500]
                _release_memory()
                continue
            row[mode] = result.model_dump(mode="json")
    row["t_sol_ns"] = {w.uuid: t_sol[w.uuid] for w in problem.workloads if w.uuid in t_sol}
    row["wall_s"] = round(time.monotonic() - started, 2)
    return row


def baseline_times(row: dict) -> dict[str, dict]:
    """Per workload: T_b (the faster passing mode), which mode, or why there is none."""
    out: dict[str, dict] = {}
    modes = [m for m in ("eager", "compile") if m in row]
    if not modes:
        return {"*": {"status": "failed", "reason": row.get("eager_error", "no result")}}
    uuids = [w["uuid"] for w in row[modes[0]]["workloads"]]
    for uuid in uuids:
        runs = {m: next(w for w in row[m]["workloads"] if w["uuid"] == uuid) for m in modes}
        ok = {m: r["time_ns"] for m, r in runs.items() if r["status"] == "ok" and r["time_ns"]}
        if ok:
            mode = min(ok, key=ok.get)
            out[uuid] = {"t_b_ns": ok[mode], "mode": mode}
        else:
            first = runs[modes[0]]
            out[uuid] = {"status": first["status"], "reason": first["reason"][:200]}
    return out


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
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-elements", type=int, default=None, help="shrink (CPU runs)")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop starting problems")
    ap.add_argument("--summary", type=Path, help="print the summary of an output file")
    args = ap.parse_args(argv)
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
    for problem in problems:
        if problem.key in seen:
            continue
        if args.deadline_s and time.monotonic() - started > args.deadline_s:
            print("deadline reached; run again to go on", flush=True)
            break
        row = one_problem(problem, timing, t_sol, args.modes.split(","))
        done["rows"].append(row)
        done["device"] = args.device
        args.out.write_text(json.dumps(done))
        counts = {m: row[m]["counts"] if m in row else row[f"{m}_error"][:80]
                  for m in args.modes.split(",")}
        print(f"{problem.key}: {row['wall_s']} s {counts}", flush=True)
    print(json.dumps(summary(done["rows"]), indent=1))


if __name__ == "__main__":
    main()
