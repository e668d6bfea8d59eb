"""The reference against itself, timed in turns and not (evaluate.Timing.paired): how much
the candidate-over-reference ratio in turns steadies a trial, and what timing in turns
does to the times themselves.

    python perf/solexec_turns.py --data-dir DIR --problem L1/012_... [--device cuda]
        [--runs 6] [--reps 20] [--pin-cpus] [--awake] [--out FILE]

Each run evaluates the problem's reference as the candidate, once not in turns and once
in turns (in that order, alternating run by run, each on its own seed), in this process's
own workers (no sandbox, no runner: the evaluation path alone). Printed per run: each
workload's net time, and in turns the reference's time beside it; then, over all runs,
the median and max/min of the times not in turns, of the candidate's times in turns and
of its ratio to the reference's. The reference against itself has a true ratio of 1: the
ratio's spread is what is left of the host's drift, the times' levels what the turns
cost each call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3),
            "max_over_min": round(max(values) / min(values), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="the public layout")
    ap.add_argument("--problem", required=True, help="e.g. L1/001_small_matmul")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--max-elements", type=int, default=None,
                    help="shrink workloads (the CPU preset uses 256)")
    ap.add_argument("--pin-cpus", action="store_true")
    ap.add_argument("--awake", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from benchmarks.solexec.evaluate import Timing, evaluate_problem, reference_solution
    from benchmarks.solexec.problems import load_problems

    problem = next((p for p in load_problems(args.data_dir) if p.key == args.problem), None)
    if problem is None:
        raise SystemExit(f"no problem {args.problem} under {args.data_dir}")
    timing = Timing(device=args.device, reps=args.reps, max_elements=args.max_elements,
                    pin_cpus=args.pin_cpus, awake_cpu=args.awake and args.pin_cpus)
    if args.device == "cpu":  # a CPU host's calls: the test preset's allowances
        timing = replace(timing, warmup=2, flush_bytes=1 << 16, stage_gap_s=0.05,
                         idle_cpu_floor_ms=50.0)
    runs = []
    with tempfile.TemporaryDirectory(prefix="solexec-turns-") as folder:
        solution = reference_solution(problem, Path(folder) / "reference")
        for i in range(args.runs):
            for paired in (False, True):
                result = evaluate_problem(problem, solution, replace(timing, paired=paired),
                                          seed=2 * i + paired)
                row = {"run": i, "paired": paired, "said": result.paired,
                       "workloads": [{"uuid": w.uuid, "status": w.status,
                                      "time_ns": w.time_ns, "reference_ns": w.reference_ns}
                                     for w in result.workloads]}
                runs.append(row)
                print(json.dumps({"run": i, "paired": paired, "us": [
                    (round(w["time_ns"] / 1e3, 1) if w["time_ns"] else None,
                     round(w["reference_ns"] / 1e3, 1) if w["reference_ns"] else None)
                    for w in row["workloads"]]}), flush=True)
    alone = [w["time_ns"] for r in runs if not r["paired"] for w in r["workloads"]
             if w["time_ns"]]
    both = [(w["time_ns"], w["reference_ns"]) for r in runs if r["paired"]
            for w in r["workloads"] if w["time_ns"] and w["reference_ns"]]
    summary = {"problem": args.problem, "device": args.device, "pin_cpus": args.pin_cpus,
               "awake_cpu": timing.awake_cpu, "runs": args.runs, "reps": args.reps}
    if alone:
        summary["not_in_turns_us"] = _spread([t / 1e3 for t in alone])
    if both:
        summary["in_turns_us"] = _spread([t / 1e3 for t, _ in both])
        summary["in_turns_ratio"] = _spread([t / r for t, r in both])
    print(json.dumps(summary), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
