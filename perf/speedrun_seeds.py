"""The speedrun's seed on several seeds through the real trial runner (sandbox, launcher,
trusted server, clock and scorer), one trial at a time; writes every trial's numbers.

    python perf/speedrun_seeds.py --benchmark speedrun --seeds 4 --out OUT.json
        [--budget 240] [--nproc 2] [--target 3.95] [--set NAME=VALUE] [--cache DIR]

`--nproc` overrides the preset's number of ranks (one per GPU; gloo processes on the CPU
preset), `--target` its target loss: with a target no run can reach (`--target 0`) a
trial trains its whole schedule and its loss curve (step:loss@seconds on the trusted
clock) shows where to put the target. The JSON holds the setup, each trial's record
(time to target, final val loss, tokens per second, MFU, steps, the curve) and the
mean and sd of the time and the loss.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autolab.records import content_key  # noqa: E402
from autolab.runner import run_trial, trial_setup  # noqa: E402
from autolab.sandbox import isolation_mode  # noqa: E402
from benchmarks import get_benchmark  # noqa: E402
from benchmarks.nanochat.benchmark import set_constant  # noqa: E402

KEEP = ("time_to_target_s", "loss_at_target", "final_loss", "steps",
        "train_tokens", "tokens_per_s", "mfu", "epochs", "validations", "excluded_s",
        "startup_s", "curve")


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="speedrun",
                    choices=("speedrun", "speedrun-full", "speedrun-cpu"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seed-base", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=None, help="training seconds at most")
    ap.add_argument("--nproc", type=int, default=None, help="ranks (default: the preset's)")
    ap.add_argument("--target", type=float, default=None, help="target loss (calibration)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--prepared", type=Path, default=None)
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--work", type=Path, default=None, help="trial folders (default: a temp dir)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep compiled kernels per candidate here across its val trials")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a constant of the seed's train.py (a variant to compare)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    base = type(get_benchmark(a.benchmark))
    changes = {k: v for k, v in (("nproc", a.nproc), ("target", a.target)) if v is not None}

    class Measured(base):
        preset = dataclasses.replace(base.preset, **changes)

    bench = Measured()
    prepared = (a.prepared or Path("artifacts") / bench.name / "data").resolve()
    update: dict = {} if a.budget is None else {"amount": a.budget}
    if bench.preset.device == "cpu":  # gloo ranks are processes of their own
        update["memory_mb"] = bench.budget.memory_mb + 1500 * bench.preset.nproc
    budget = bench.budget.model_copy(update=update)
    if bench.preset.device == "cpu":
        bench.prepare(None, prepared)  # shards from the embedded corpus
    setup = trial_setup(bench, prepared, budget, threads=8 if bench.hardware == "gpu" else 1,
                        isolation=isolation_mode(a.isolation))
    files = bench.seed_files()
    for item in a.set:
        name, value = item.split("=", 1)
        files["train.py"] = set_constant(files["train.py"], name, ast.literal_eval(value))
    cid = content_key("files", files)[:16]
    work = a.work or Path(tempfile.mkdtemp(prefix="speedrun-seeds-"))
    gpu = 0 if bench.hardware == "gpu" else None
    rows = []
    for i in range(a.seeds):
        t0 = time.monotonic()
        trial = run_trial(bench, cid, files, a.seed_base + i, a.split, setup, work_root=work,
                          prepared_dir=prepared, gpu=gpu, cache_root=a.cache)
        row = {"seed": trial.seed, "status": trial.status, "failure": trial.failure,
               "reason": trial.reason, **trial.metrics, "wall_s": round(time.monotonic() - t0, 1),
               "trained_s": trial.evidence.get("train_s"),  # clocked, to the last step
               **{k: trial.evidence.get(k) for k in KEEP},
               "checks": {c.name: c.passed for c in trial.checks}}
        rows.append(row)
        print(json.dumps(row), flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".partial.json").write_text(json.dumps(rows, indent=1))
        if trial.status != "ok":
            print(trial.log_tail[-3000:], file=sys.stderr, flush=True)
    ok = [r for r in rows if r["status"] == "ok"]
    reached = [r for r in ok if r.get("reached") == 1.0]
    out = {
        "benchmark": a.benchmark, "preset": bench.preset.name, "nproc": bench.preset.nproc,
        "backend": bench.preset.backend, "target": bench.preset.target, "set": a.set,
        "split": a.split, "budget_s": budget.amount, "device": setup.device,
        "isolation": setup.isolation, "libraries": setup.libraries, "data": setup.data,
        "n": len(ok), "n_reached": len(reached),
        "time_s_mean": _mean([r["train_s"] for r in reached]),
        "time_s_sd": _sd([r["train_s"] for r in reached]),
        "val_loss_mean": _mean([r["val_loss"] for r in ok]),
        "val_loss_sd": _sd([r["val_loss"] for r in ok]),
        "tokens_per_s": _mean([r["tokens_per_s"] for r in ok if r["tokens_per_s"]]),
        "mfu": _mean([r["mfu"] for r in ok if r.get("mfu") is not None]),
        "trials": rows, "command": " ".join(sys.argv),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }  # fmt: skip
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "trials"}))
    sys.exit(0 if len(ok) == len(rows) else 1)


if __name__ == "__main__":
    main()
