"""How well T_b repeats: two baseline files (perf/solexec_baseline.py) that timed the same
problems, compared workload by workload (T_b = the faster mode that passed).

    python perf/solexec_repeat.py FIRST.json SECOND.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def t_b(row: dict) -> dict[str, float]:
    """Each workload's T_b in ns: the faster of the modes in which it passed."""
    out: dict[str, float] = {}
    for mode in ("eager", "compile"):
        for w in (row.get(mode) or {}).get("workloads", []):
            if w["status"] == "ok":
                out[w["uuid"]] = min(out.get(w["uuid"], math.inf), w["time_ns"])
    return out


def quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    a = ap.parse_args()
    first = {r["problem"]: r for r in json.loads(a.first.read_text())["rows"]}
    second = {r["problem"]: r for r in json.loads(a.second.read_text())["rows"]}
    every: list[float] = []
    print("| problem | workloads | median T_b (ms) | median ratio | min | max |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in sorted(set(first) & set(second)):
        x, y = t_b(first[p]), t_b(second[p])
        common = [u for u in x if u in y]
        if not common or first[p] == second[p]:
            continue  # not timed in both, or the same record carried over
        ratios = [y[u] / x[u] for u in common]
        every += ratios
        print(f"| {p} | {len(common)} | {statistics.median(x[u] for u in common) / 1e6:.3f} | "
              f"{statistics.median(ratios):.3f} | {min(ratios):.2f} | {max(ratios):.2f} |")
    if every:
        print(f"\n{len(every)} workloads: second / first median {statistics.median(every):.3f}, "
              f"geometric mean {math.exp(statistics.fmean(map(math.log, every))):.3f}, "
              f"p10 {quantile(every, 0.1):.2f}, p90 {quantile(every, 0.9):.2f}")


if __name__ == "__main__":
    main()
