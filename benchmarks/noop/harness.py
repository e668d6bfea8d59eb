"""Trusted driver of the noop benchmark's one sandboxed step: import the solution, write its value.

Run as: python -m benchmarks.noop.harness --workspace W --seed S
Kept free of heavy imports: the point of this benchmark is to cost nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.noop.harness")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    workspace = args.workspace.resolve()
    sys.path.insert(0, str(workspace))
    import solution  # the candidate's workspace/solution.py

    out = workspace / "out"
    out.mkdir(exist_ok=True)
    result = {"value": float(solution.value()), "calls": 1, "seed": args.seed}
    (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
