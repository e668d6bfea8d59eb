"""The roofline estimator against measured kernels: for each member and technique of
perf/solexec_trial.py's output files, the smallest T_k / T_SOL over its trials' workloads
(the harness's time, host share included) and Nsight Compute's GPU time of the profiled
workload against that workload's T_SOL, as a Markdown table; with --update, the same under
`fastest_kernels` in a results.json.

    python perf/solexec_tk.py benchmarks/solexec/measurements/<run>/tk-*.json \
        [--update benchmarks/solexec/results.json]

No kernel may beat T_SOL by more than noise: a ratio below 1 reveals an estimator bug or a
hack. ncu runs the kernels at its own locked base clocks with the caches flushed, so its
times are an upper bound for the same kernels at boost clocks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def rows(files: list[Path]) -> list[dict]:
    out = []
    for f in files:
        run = json.loads(f.read_text())
        names = run.get("techniques") or [run.get("technique") or "reference"]
        for name in names:
            trials = [t for t in run["trials"] if t.get("technique", names[0]) == name
                      and t["status"] == "ok"]
            if not trials:
                continue
            tk = [t["evidence"]["min_tk_over_tsol"] for t in trials
                  if "min_tk_over_tsol" in t["evidence"]]
            ncu = [t["ncu_over_tsol"] for t in trials if t.get("ncu_over_tsol") is not None]
            out.append({
                "member": run["member"], "technique": name, "trials": len(trials),
                "device": run["device"].split(" / ")[0],
                "profiled_workload": run.get("profiled_workload", {}).get("axes"),
                "t_sol_us": round(run.get("profiled_workload", {}).get("t_sol_ns", 0) / 1e3, 2),
                "ncu_over_tsol": min(ncu) if ncu else None,
                "min_tk_over_tsol": round(min(tk), 3) if tk else None,
                "median_time_us": [t["evidence"].get("median_time_us") for t in trials],
                "sol_score_mean": round(statistics.fmean(t["metrics"]["sol_score"]
                                                         for t in trials), 4),
                "file": f.name,
            })
    return out


def table(found: list[dict]) -> str:
    lines = ["| member | technique | trials | ncu GPU time / T_SOL (profiled workload, "
             "T_SOL µs) | smallest T_k / T_SOL, harness | SOL score, mean |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in found:
        ncu = "" if r["ncu_over_tsol"] is None else f"{r['ncu_over_tsol']:.3f}"
        lines.append(f"| `{r['member'].split('_')[0]}` | `{r['technique']}` | {r['trials']} | "
                     f"{ncu} ({r['t_sol_us']}) | {r['min_tk_over_tsol']} | "
                     f"{r['sol_score_mean']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--update", type=Path, default=None, help="a results.json to add to")
    args = ap.parse_args(argv)
    found = rows(args.files)
    print(table(found))
    if args.update is not None:
        results = json.loads(args.update.read_text()) if args.update.exists() else {}
        ncu = [r["ncu_over_tsol"] for r in found if r["ncu_over_tsol"] is not None]
        tk = [r["min_tk_over_tsol"] for r in found if r["min_tk_over_tsol"] is not None]
        results["fastest_kernels"] = {
            "device": sorted({r["device"] for r in found}),
            "kernels": found,
            "min_ncu_over_tsol": min(ncu) if ncu else None,
            "min_tk_over_tsol": min(tk) if tk else None,
            "below_tsol": [f"{r['member']}/{r['technique']}" for r in found
                           if any(x is not None and x < 1 for x in (r["ncu_over_tsol"],
                                                                    r["min_tk_over_tsol"]))],
        }
        args.update.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
