"""Duty cycle and throughput of a campaign's slots, from packed campaigns, into
perf/results.json.

    python perf/slot_results.py --campaign A.tgz [--one-slot B.tgz] --key x2_campaign [--write]

A packed campaign is what `perf/nanochat_gpu.sh collect` writes: a .tgz with
runs/<name>/archive/archive.db. From its last run's usage record (autolab.usage) come the
run's length and each slot's duty cycle; from its trials, the throughput.

Throughput counts trial-equivalents: each trial contributes the fraction of its own
duration that falls inside the window, so a trial half done at the window's end counts
one half. The window ends where the record is complete: at the earliest of the slots'
last recorded trial ends (each slot runs one trial at a time, so every trial that started
on a slot before its last recorded end was recorded; a trial cut short by the stop never
was). `--one-slot` is the same campaign run on one slot: both are counted over the same
window from their starts (the shorter of the two complete windows), and the ratio of
their trial-equivalents is the speed-up. Trials differ in cost (a candidate's first trial
compiles its kernels cold; the seed's later ones find them cached), so the window's mix of
trials matters: the slot-seconds spent in trials over the same window are given beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autolab.archive import Archive  # noqa: E402
from autolab.records import Trial  # noqa: E402
from autolab.usage import runs_usage  # noqa: E402


def unpack(path: Path, into: Path) -> Archive:
    with tarfile.open(path) as tar:
        db = next(n for n in tar.getnames() if n.endswith("/archive/archive.db"))
        tar.extractall(into, filter="data")
    return Archive(into / Path(db).parent)


def measure(archive: Archive) -> dict:
    usage = runs_usage(archive)[-1]
    start = datetime.fromtimestamp(usage.started, UTC)
    trials = [t for t in archive.all(Trial) if t.started_at >= start]
    last_end = {}
    for t in trials:
        last_end[t.slot] = max(last_end.get(t.slot, t.finished_at), t.finished_at)
    complete_s = min((e - start).total_seconds() for e in last_end.values())
    fixed = archive.campaign().fixed
    return {
        "usage": usage, "start": start, "trials": trials, "complete_s": complete_s,
        "device": fixed.get("setup", {}).get("device", "?") if isinstance(fixed, dict) else "?",
    }


def trial_equivalents(trials: list[Trial], start: datetime, window_s: float) -> float:
    total = 0.0
    for t in trials:
        a = (t.started_at - start).total_seconds()
        b = (t.finished_at - start).total_seconds()
        if b > a:
            total += max(0.0, min(b, window_s) - max(a, 0.0)) / (b - a)
    return total


def trial_seconds(trials: list[Trial], start: datetime, window_s: float) -> float:
    """Slot-seconds spent in trials inside the window (the slots' busy time there)."""
    total = 0.0
    for t in trials:
        a = (t.started_at - start).total_seconds()
        b = (t.finished_at - start).total_seconds()
        total += max(0.0, min(b, window_s) - max(a, 0.0))
    return total


def mean_trial_s(trials: list[Trial], start: datetime, window_s: float) -> float:
    ended = [t.wall_s for t in trials if (t.finished_at - start).total_seconds() <= window_s]
    return sum(ended) / len(ended) if ended else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaign", type=Path, required=True)
    ap.add_argument("--one-slot", type=Path)
    ap.add_argument("--key", required=True)
    ap.add_argument("--date", default=None, help="when it was measured (default: the run's)")
    ap.add_argument("--write", action="store_true", help="update perf/results.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = measure(unpack(args.campaign, Path(tmp) / "a"))
        one = measure(unpack(args.one_slot, Path(tmp) / "b")) if args.one_slot else None
    usage = run["usage"]
    duty = {s.slot: round(s.duty_cycle, 4) for s in usage.slots}
    per_hour = trial_equivalents(run["trials"], run["start"], run["complete_s"]) \
        / run["complete_s"] * 3600
    out = {
        "date": args.date or run["start"].date().isoformat(),
        "device": run["device"],
        "slots": len(usage.slots),
        "minutes": round((usage.ended - usage.started) / 60, 2),
        "duty_cycle": duty,
        "duty_cycle_min": min(duty.values()),
        "duty_cycle_research": {s.slot: round(s.duty_cycle, 4) for s in usage.research
                                if s.duty_cycle is not None},
        "idle_s": {s.slot: {k: round(v, 1) for k, v in s.idle_s.items()} for s in usage.slots},
        "trials_recorded": len(run["trials"]),
        "complete_window_min": round(run["complete_s"] / 60, 2),
        "trials_per_hour": round(per_hour, 1),
        "sources": [str(args.campaign)],
    }
    if one is not None:
        window = min(run["complete_s"], one["complete_s"])
        mine = trial_equivalents(run["trials"], run["start"], window)
        theirs = trial_equivalents(one["trials"], one["start"], window)
        out |= {
            "one_slot_device": one["device"],
            "one_slot_duty_cycle": round(min(s.duty_cycle for s in one["usage"].slots), 4),
            "window_min": round(window / 60, 2),
            "trials_in_window": round(mine, 2),
            "one_slot_trials_in_window": round(theirs, 2),
            "one_slot_trials_per_hour": round(theirs / window * 3600, 1),
            "speedup_vs_1gpu": round(mine / theirs, 3),
            # the same window in slot-seconds of trials: the speed-up had every trial cost
            # the same (the mix of trials differs between the runs: see the module's doc)
            "trial_seconds_ratio": round(
                trial_seconds(run["trials"], run["start"], window)
                / trial_seconds(one["trials"], one["start"], window), 3),
            "mean_trial_s_in_window": round(mean_trial_s(run["trials"], run["start"], window), 1),
            "one_slot_mean_trial_s_in_window": round(
                mean_trial_s(one["trials"], one["start"], window), 1),
        }
        out["sources"].append(str(args.one_slot))
    print(json.dumps(out, indent=1))
    if args.write:
        path = ROOT / "perf" / "results.json"
        results = json.loads(path.read_text())
        results[args.key] = out
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"written: {path} [{args.key}]")


if __name__ == "__main__":
    main()
