"""Trusted driver of the noop benchmark's one sandboxed step: import the solution, write its value.

Run as: python -m benchmarks.noop.harness --workspace W --out O --seed S
Kept free of heavy imports: the point of this benchmark is to cost nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

from benchmarks import guard


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.noop.harness")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.0, help="wait, standing for work")
    args = parser.parse_args(argv)
    guard.install()
    spec = importlib.util.spec_from_file_location("solution", args.workspace / "solution.py")
    solution = importlib.util.module_from_spec(spec)
    sys.modules["solution"] = solution
    spec.loader.exec_module(solution)
    result = {"value": float(solution.value()), "calls": 1, "seed": args.seed}
    if args.sleep > 0:
        time.sleep(args.sleep)
    (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
