"""Category and operator signature of every SOL-ExecBench problem, counted per subset.

Each reference is traced once on meta tensors (benchmarks/solexec/search/graph.py; the
CPU fallback where control flow reads values) and categorised by the rules of
benchmarks/solexec/search/categorise.py; one that cannot be traced here is categorised
from its source text and counted under "untraced" too.

    python perf/solexec_categories.py                      # the table
    python perf/solexec_categories.py --list --subset L1   # one line per problem

The dataset folder is --data-dir, else $AUTOLAB_SOLEXEC_DIR, else
../shared/data/sol-execbench beside the checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.solexec.problems import load_problems  # noqa: E402
from benchmarks.solexec.search.categorise import CATEGORIES, signature  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "sol-execbench"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path,
                    default=Path(os.environ.get("AUTOLAB_SOLEXEC_DIR", DEFAULT_DATA_DIR)))
    ap.add_argument("--subset", action="append", help="a subset (repeatable); default all")
    ap.add_argument("--list", action="store_true", help="print each problem's signature")
    a = ap.parse_args(argv)
    started = time.monotonic()
    problems = load_problems(a.data_dir, a.subset)
    counts: dict[str, Counter] = {}
    untraced: Counter = Counter()
    for problem in problems:
        sig = signature(problem)
        counts.setdefault(problem.subset, Counter())[sig.category] += 1
        untraced[problem.subset] += not sig.traced
        if a.list:
            print(f"{problem.key:80s} {sig.key}{'' if sig.traced else '  (source)'}")
    subsets = list(counts)
    used = [c for c in CATEGORIES if any(counts[s][c] for s in subsets)]
    width = max(len(c) for c in [*used, "untraced"]) + 2
    print("category".ljust(width) + "".join(s.rjust(18) for s in subsets) + "total".rjust(8))
    for name in used:
        row = [counts[s][name] for s in subsets]
        print(name.ljust(width) + "".join(str(n).rjust(18) for n in row) + str(sum(row)).rjust(8))
    totals = [sum(counts[s].values()) for s in subsets]
    print("total".ljust(width) + "".join(str(n).rjust(18) for n in totals)
          + str(sum(totals)).rjust(8))
    row = [untraced[s] for s in subsets]
    print("untraced".ljust(width) + "".join(str(n).rjust(18) for n in row)
          + str(sum(row)).rjust(8))
    print(f"\n{len(problems)} problems in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
