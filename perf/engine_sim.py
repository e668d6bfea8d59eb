"""Duty cycle of the engine's slots: a real campaign on `noop-sleep` (each trial a sandboxed
process that waits a few seconds) over many simulated slots, with a proposer that takes
its time, from a clean folder.

    python perf/engine_sim.py [--slots 64] [--work-s 3] [--proposer-s 1] [--minutes 5]
                              [--isolation none] [--write [KEY]] [--keep DIR]

Prints the run's usage as JSON and, with --write, merges it into perf/results.json: the
duty cycle over the research stage (from the first iteration to the stop: what the
engine controls) and over the whole run (with the seed's baseline at the start and the
draining at the end), the slot-seconds idle by reason, trials, and the engine's placement
cost per trial (submit to result, less the trial's own time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--work-s", type=float, default=3.0, help="each trial's wait")
    ap.add_argument("--proposer-s", type=float, default=1.0, help="each proposal's wait")
    ap.add_argument("--minutes", type=float, default=5.0, help="the run's wall clock")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per look")
    ap.add_argument("--ahead", type=int, default=1)
    ap.add_argument("--isolation", default="none", help="the sandbox mode (none: the cheapest "
                    "process start, so the orchestration is what is measured)")
    ap.add_argument("--write", metavar="KEY", nargs="?", const="sim64",
                    help=f"merge the result into {RESULTS} under KEY (default sim64)")
    ap.add_argument("--keep", metavar="DIR", help="run in DIR and keep it (the archive, "
                    "Prefect's database) for a closer look, instead of a temporary folder")
    ap.add_argument("--from-output", metavar="FILE", help="write the JSON line an earlier "
                    "run printed (saved to FILE) instead of running again")
    args = ap.parse_args()
    if args.from_output:
        write(headline(json.loads(Path(args.from_output).read_text())), args.write or "sim64")
        return

    with (contextlib.nullcontext(args.keep) if args.keep
          else tempfile.TemporaryDirectory(prefix="autolab-engine-sim-")) as tmp:
        root = Path(tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            sys.exit(f"{root} is not empty: the measurement starts from a clean folder")
        params = {
            "campaign": {"name": "engine-sim", "benchmark": "noop-sleep", "threads": 8,
                         "max_proposals": 100_000, "max_wall_clock_min": args.minutes},
            "evaluation": {"parallel_trials": args.seeds, "min_seeds": args.seeds,
                           "max_seeds": 2 * args.seeds, "test_seeds": 2},
            "engine": {"slots": args.slots, "ahead": args.ahead},
            "budget": {"amount": int(args.work_s * 1000), "wall_clock_s": args.work_s + 60},
            "sandbox": {"isolation": args.isolation, "allow_unisolated": True},
            "proposer": {"kind": "offline", "offline_delay_s": args.proposer_s},
            "tracking": {"mlflow": False},
            "paths": {k: str(root / k) for k in ("workdir", "prepared_dir", "mlruns",
                                                  "reports")},
        }
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        env = dict(os.environ, PREFECT_HOME=str(root / "prefect"), DO_NOT_TRACK="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "autolab.cli", "run", "--params",
                               str(root / "params.yaml"), "--no-confirm"],
                              env=env, capture_output=True, text=True, cwd=root)
        wall = time.monotonic() - t0
        if done.returncode != 0:
            sys.exit(f"the campaign failed ({done.returncode}):\n{done.stdout[-3000:]}"
                     f"\n{done.stderr[-3000:]}")
        sys.path.insert(0, str(ROOT))
        from autolab.archive import Archive
        from autolab.usage import runs_usage

        archive = Archive(root / "workdir" / "engine-sim" / "archive", create=False,
                          campaign="engine-sim")
        usage = runs_usage(archive)[-1]
        decisions = sum(1 for line in done.stdout.splitlines() if line.startswith("["))
        archive.close()
    slots = [s.duty_cycle for s in usage.research if s.duty_cycle is not None]

    def idle_of(table) -> dict[str, float]:
        idle: dict[str, float] = {}
        for s in table:
            for reason, v in s.idle_s.items():
                idle[reason] = round(idle.get(reason, 0.0) + v, 1)
        return idle

    result = {
        "date": time.strftime("%Y-%m-%d"), "device": f"CPU ({os.cpu_count()} cores)",
        "command": "python perf/engine_sim.py " + " ".join(sys.argv[1:]),
        "slots": len(usage.slots), "work_s": args.work_s, "proposer_s": args.proposer_s,
        "isolation": args.isolation, "run_wall_s": round(wall, 1),
        "engine_s": round(usage.ended - usage.started, 1),
        "duty_cycle_research": round(usage.duty_cycle(research=True) or 0.0, 4),
        "duty_cycle_research_min_slot": round(min(slots), 4) if slots else None,
        "research_s": round(max((s.total_s for s in usage.research), default=0.0), 1),
        "duty_cycle_whole_run": round(usage.duty_cycle() or 0.0, 4),
        "trials": usage.trials, "iterations": decisions,
        "trials_per_hour": round(usage.trials / (usage.ended - usage.started) * 3600),
        "placement_s_per_trial": round(usage.trial_overhead_s or 0.0, 4),
        "idle_slot_s_research": idle_of(usage.research),
        "idle_slot_s_whole_run": idle_of(usage.slots),
    }
    result = headline(result)
    print(json.dumps(result))
    if args.write:
        write(result, args.write)


def headline(result: dict) -> dict:
    """The figures results.json names: the research stage's duty cycle (what the engine
    controls) and the engine's overhead per trial."""
    return {**result, "duty_cycle": result["duty_cycle_research"],
            "overhead_s_per_trial": result["placement_s_per_trial"]}


def write(result: dict, key: str) -> None:
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged[key] = result
    merged.pop("engine_sim64", None)  # the key's earlier name
    RESULTS.write_text(json.dumps(merged, indent=1) + "\n")


if __name__ == "__main__":
    main()
