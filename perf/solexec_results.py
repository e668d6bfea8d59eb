"""Write benchmarks/solexec/results.json from the measurement files, and print a summary.

Inputs are the unchanged outputs of the measuring runs: perf/solexec_baseline.py on the
GPU machine (T_b per workload, eager and compiled) and perf/solexec_sol_table.py (T_SOL per
workload, from the roofline). Nothing is typed in by hand.

    python perf/solexec_results.py \\
        --baseline benchmarks/solexec/measurements/2026-11-22-h100/baseline-L1-partial.json \\
        --sol-table benchmarks/solexec/measurements/sol-table-cpu.json.gz --spec h100 \\
        --device "NVIDIA H100 80GB HBM3" --out benchmarks/solexec/results.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.solexec_baseline import baseline_times, summary  # noqa: E402


def read_json(path: Path) -> object:
    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


def t_sol_table(path: Path, spec: str) -> dict[str, float]:
    rows = read_json(path)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    return {r["workload"]: r["t_sol_s"][spec] * 1e9 for r in rows
            if r.get("status") == "estimated" and (r.get("t_sol_s") or {}).get(spec)}


def results(baseline: dict, t_sol: dict[str, float], device: str) -> dict:
    rows = baseline["rows"]
    for row in rows:  # T_SOL from the table, whatever the run had
        row["t_sol_ns"] = {u: t_sol[u] for u in baseline_times(row) if u in t_sol}
    s = summary(rows)
    ratios = [b["t_b_ns"] / row["t_sol_ns"][u] for row in rows
              for u, b in baseline_times(row).items() if "t_b_ns" in b and u in row["t_sol_ns"]]
    return {
        "baseline": {
            "device": device,
            "problems": s["problems"],
            "workloads_timed": s["workloads_timed"],
            "workloads_skipped": s["workloads_skipped"],
            "suite_eval_minutes": s["suite_eval_minutes"],
            "median_tb_over_tsol": round(statistics.median(ratios), 3) if ratios else None,
            "subsets_measured": sorted({r["problem"].split("/")[0] for r in rows}),
            "faster_mode": s["faster_mode"],
            "skip_reasons": s["skip_reasons"],
        }
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--sol-table", type=Path, required=True)
    ap.add_argument("--spec", default="h100")
    ap.add_argument("--device", required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    out = results(read_json(args.baseline), t_sol_table(args.sol_table, args.spec), args.device)
    text = json.dumps(out, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
