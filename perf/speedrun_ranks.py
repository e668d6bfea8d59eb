"""One speedrun trial on the CPU preset with N gloo ranks, through the real runner and
sandbox: checks that the launcher, the trusted server's clock and the validators work
for any number of processes (the GPU presets use one per GPU).

    .venv/bin/python perf/speedrun_ranks.py --nproc 8 --budget-s 20 --out ranks-8.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autolab.records import content_key  # noqa: E402
from autolab.runner import run_trial, trial_setup  # noqa: E402
from autolab.sandbox import isolation_mode  # noqa: E402
from benchmarks.speedrun.benchmark import SpeedrunCPU  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--budget-s", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()

    class Ranks(SpeedrunCPU):
        preset = dataclasses.replace(SpeedrunCPU.preset, nproc=a.nproc)

    bench = Ranks()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "data"
        bench.prepare(None, prepared)
        # each gloo rank is a process of its own: the memory cap grows with them
        budget = bench.budget.model_copy(update={
            "amount": a.budget_s, "memory_mb": bench.budget.memory_mb + 1500 * a.nproc})
        setup = trial_setup(bench, prepared, budget, threads=1,
                            isolation=isolation_mode("auto"))
        files = bench.seed_files()
        t0 = time.monotonic()
        trial = run_trial(bench, content_key("files", files)[:16], files, a.seed, "val", setup,
                          work_root=Path(tmp) / "trials", prepared_dir=prepared)
        wall = time.monotonic() - t0
    out = {
        "nproc": a.nproc, "backend": bench.preset.backend, "budget_s": a.budget_s,
        "status": trial.status, "failure": trial.failure, "reason": trial.reason,
        "metrics": trial.metrics, "isolation": trial.isolation, "wall_s": round(wall, 1),
        "evidence": {k: v for k, v in trial.evidence.items() if not isinstance(v, (list, dict))},
    }  # fmt: skip
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    sys.exit(0 if trial.status == "ok" else 1)


if __name__ == "__main__":
    main()
