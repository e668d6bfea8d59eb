"""Write benchmarks/solexec/results.json from the measurement files, and print a summary.

Inputs are the unchanged outputs of the measuring runs: perf/solexec_baseline.py on the
GPU machine (T_b per workload, eager and compiled) and perf/solexec_sol_table.py (T_SOL per
workload, from the roofline) for `baseline`; a joint campaign's family summary
(reports/<campaign>/family.json, written by `autolab report` from its archives) for
`campaign`. Nothing is typed in by hand; keys already in --out are kept.

    python perf/solexec_results.py \\
        --baseline benchmarks/solexec/measurements/2026-11-22-h100/baseline-L1-partial.json \\
        --sol-table benchmarks/solexec/measurements/sol-table-cpu.json.gz --spec h100 \\
        --device "NVIDIA H100 80GB HBM3" --out benchmarks/solexec/results.json
    python perf/solexec_results.py --family reports/solexec-h100e/family.json \
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


def category_of(member: dict) -> str:
    return next((r.split(":", 1)[1] for r in member["relations"]
                 if r.startswith("category:")), "other")


def campaign(family: dict, device: str) -> dict:
    """The joint campaign's headline from its family summary, over the members whose
    campaign has judged its seed on val (a campaign still running has others to come).
    Before: the seed, the reference as it is (eager), on val; T_b itself (the faster of
    eager and compiled per workload) scores 0.5 by construction. After: each member's
    champion on val (the seed where nothing was accepted; chosen on these seeds, so
    biased in its favour) and, where confirmed, on the test split."""
    done = [m for m in family["members"] if m.get("seed") is not None and not m.get("error")]
    tested = [m for m in done if m.get("test") is not None]
    by_cat: dict[str, list[float]] = {}
    for m in done:
        by_cat.setdefault(category_of(m), []).append(m["champion"])

    def mean(values: list[float]) -> float | None:
        return round(statistics.fmean(values), 4) if values else None

    return {
        "device": device,
        "campaign": family["campaign"],
        "problems": len(done),
        "problems_planned": len(family["members"]),
        "failed": sorted(m["member"] for m in family["members"] if m.get("error")),
        "mean_sol_before": mean([m["seed"] for m in done]),
        "before_is": "the seed (the reference, eager) on val; T_b scores 0.5 by construction",
        "mean_sol_after": mean([m["champion"] for m in done]),
        "after_is": "each member's champion on val (the seed where nothing was accepted)",
        "problems_confirmed_on_test": len(tested),
        "mean_sol_after_test": mean([m["test"] for m in tested]),
        "mean_sol_seed_test": mean([m["test_seed"] for m in tested]),
        "by_category": {k: mean(v) for k, v in sorted(by_cat.items())},
        "accepted": {m["member"]: m["accepted"] for m in done if m["accepted"]},
        "transfers": [f"{t['technique']}: {t['source']} -> {t['target']} ({t['outcome']})"
                      for t in family.get("transfers", [])],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path)
    ap.add_argument("--sol-table", type=Path)
    ap.add_argument("--family", type=Path, help="a joint campaign's family.json")
    ap.add_argument("--spec", default="h100")
    ap.add_argument("--device", required=True)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if (args.baseline is None) != (args.sol_table is None) or (
            args.baseline is None and args.family is None):
        ap.error("give --baseline with --sol-table, or --family, or both")
    out = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    if args.baseline is not None:
        out |= results(read_json(args.baseline), t_sol_table(args.sol_table, args.spec),
                       args.device)
    if args.family is not None:
        out["campaign"] = campaign(read_json(args.family), args.device)
    text = json.dumps(out, indent=1) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
