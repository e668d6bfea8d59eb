"""Median orchestration overhead per trial: everything but the workload.

Runs a real campaign (Prefect flows and tasks, archive, MLflow, patching, statistics,
audit) against the `noop` benchmark, whose trial is one tiny sandboxed Python process,
and times every iteration from the outside. Per iteration:

    overhead per trial = (iteration wall time - time inside sandboxed steps) / trials run

Usage:  .venv/bin/python perf/orchestration_overhead.py [--iterations 30] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()

    from prefect import flow

    from autolab.config import parse_params
    from autolab.lab import open_lab
    from autolab.records import Trial
    from flows.iteration import iteration
    from tasks.prepare import baseline, prepare_data, register_seed

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        params = parse_params(
            {
                "campaign": {
                    "name": "overhead",
                    "benchmark": "noop",
                    "max_proposals": args.iterations,
                },
                "paths": {
                    "workdir": str(t / "runs"),
                    "prepared_dir": str(t / "artifacts"),
                    "mlruns": str(t / "mlruns"),
                    "reports": str(t / "reports"),
                },
                "tracking": {"mlflow": not args.no_mlflow},
            }
        )

        @flow(name="overhead-benchmark", validate_parameters=False)
        def measure() -> list[tuple[float, float, int]]:
            lab = open_lab(params)
            prepare_data(lab)
            register_seed(lab)
            baseline(lab)
            rows = []
            for i in range(args.iterations):
                before = {tr.id for tr in lab.archive.all(Trial)}
                start = time.perf_counter()
                iteration(lab, i)
                wall = time.perf_counter() - start
                new = [tr for tr in lab.archive.all(Trial) if tr.id not in before]
                rows.append((wall, sum(tr.workload_s for tr in new), len(new)))
            return rows

        rows = measure()
    per_trial = [(w - work) / n for w, work, n in rows if n]
    work_per_trial = [work / n for _, work, n in rows if n]
    deciles = statistics.quantiles(per_trial, n=10)
    trials = sum(r[2] for r in rows)
    print(f"iterations with trials: {len(per_trial)} of {len(rows)}; trials: {trials}")
    print(f"workload per trial (sandboxed): median {statistics.median(work_per_trial):.3f} s")
    print(
        f"orchestration overhead per trial: median {statistics.median(per_trial):.3f} s "
        f"(p10 {deciles[0]:.3f}, p90 {deciles[-1]:.3f})"
        + (" without MLflow" if args.no_mlflow else "")
    )

if __name__ == "__main__":
    main()
