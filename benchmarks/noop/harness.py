"""Trusted driver of a noop trial, run in the sandbox: import the candidate, write its knobs.

It reports the candidate's constants, not a score: the scorer in the parent computes it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, required=True)
    args = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("solution", args.workspace / "solution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = args.workspace / "out"
    out.mkdir(exist_ok=True)
    values = {"VALUE": float(module.VALUE), "OFFSET": float(module.OFFSET)}
    (out / "result.json").write_text(json.dumps(values))


if __name__ == "__main__":
    main(sys.argv[1:])
