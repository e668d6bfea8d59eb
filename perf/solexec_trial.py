"""One SOL-ExecBench member's trials through the real runner and sandbox, as a campaign runs
them: prepare (T_b and T_SOL of its splits), then the reference (or a technique of the
offline search) on val, printed and written as JSON. A check of a GPU host before a
campaign: the workloads' device memory shared with the sandboxed worker, and the Nsight
Compute profile.

    python perf/solexec_trial.py --member L1-001_... [--preset gpu]
        [--technique NAME ...] [--seeds 1000 1001] [--pin-cpus off|on|alternate]
        [--awake off|on|alternate] [--control REPS] [--paired off|on|alternate]
        [--work DIR] [--out FILE]

Several techniques (`reference` for none) take turns at each seed, so that what drifts on
the host over minutes falls on all of them alike. Each candidate's first trial is
profiled with Nsight Compute where ncu is found: its kernels' GPU time on the first val
workload, against that workload's T_SOL, is printed as `ncu_over_tsol`.

--pin-cpus alternate runs the trials pinned and not pinned in turn (evaluate.Timing.pin_cpus:
the trusted side and the worker each on a CPU of their own), prepared once as the preset
says: how much pinning steadies a trial's times. --awake does the same with
evaluate.Timing.awake_cpu (on: the worker's CPU kept from halting by a poller of the
lowest priority while the evaluation runs), which takes effect only in a pinned trial
(the preset pins; the trial's record says `awake_cpu` as it took effect). --control
REPS has each trial time the reference first (evaluate.Timing.control_reps), recorded as
`control_median_us`: how fast the host was just before the trial's candidate ran.
--paired times the reference in turns with the candidate (evaluate.Timing.paired): the
score then scales T_b by how fast the reference ran beside the candidate, and the trial
records that factor's median over the workloads as `turns_drift`; alternate runs trials
in turns and not in turns one after the other, for how much the scores' spread falls.

Problems come from AUTOLAB_SOLEXEC_DIR or --data-dir (the public layout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def candidate_files(member, technique: str | None) -> dict[str, str]:
    files = member.seed_files()
    if technique is None:
        return files
    edits = {e.name: e for e in member.search_space().edits}
    if technique not in edits:
        raise SystemExit(f"{technique!r} does not apply here; applicable: {sorted(edits)}")
    edit = edits[technique]
    return {**files, edit.file: edit.apply(files[edit.file])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member", required=True, help="e.g. L1-001_small_matmul")
    ap.add_argument("--preset", choices=("gpu", "cpu"), default="gpu")
    ap.add_argument("--technique", nargs="+", default=["reference"],
                    help="techniques' names, `reference` for none (default: reference)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("runs/solexec-trial"))
    ap.add_argument("--isolation", default="auto")
    ap.add_argument("--pin-cpus", choices=("preset", "off", "on", "alternate"),
                    default="preset")
    ap.add_argument("--awake", choices=("preset", "off", "on", "alternate"),
                    default="preset")
    ap.add_argument("--control", type=int, default=None,
                    help="timed calls a workload of the reference before each trial")
    ap.add_argument("--paired", choices=("preset", "off", "on", "alternate"),
                    default="preset")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.data_dir is not None:
        os.environ["AUTOLAB_SOLEXEC_DIR"] = str(args.data_dir.resolve())

    from autolab.records import content_key
    from autolab.runner import give_trial_runner, run_trial, trial_setup
    from autolab.sandbox import isolation_mode
    from benchmarks import get_family

    family = get_family("solexec" if args.preset == "gpu" else "solexec-cpu")
    member = family.member(args.member)
    give_trial_runner(member, isolation_mode(args.isolation))  # T_b's trials, as these
    work = args.work.absolute()
    prepared = work / "prepared" / args.member
    t0 = time.monotonic()
    facts = member.prepare(None, prepared)
    prepare_s = time.monotonic() - t0
    candidates = {}
    for name in args.technique:
        files = candidate_files(member, None if name == "reference" else name)
        candidates[name] = (content_key("files", files)[:16], files)
    setup = trial_setup(member, prepared, member.budget, threads=1,
                        isolation=isolation_mode(args.isolation))
    trials = []
    preset_timing = member.timing
    table = json.loads((prepared / "baseline.json").read_text())
    profiled_w = member.profiled_workload()
    t_sol_ns = (table["splits"]["val"].get(profiled_w.uuid) or {}).get("t_sol_ns")
    runs = [(i, seed, name) for i, seed in enumerate(args.seeds) for name in candidates]
    for i, seed, name in runs:
        cid, files = candidates[name]
        pin = {"preset": preset_timing.pin_cpus, "off": False, "on": True,
               "alternate": i % 2 == 1}[args.pin_cpus]
        awake = {"preset": preset_timing.awake_cpu, "off": False, "on": True,
                 "alternate": i % 2 == 1}[args.awake]
        awake = awake and pin  # the poller sits on the pinned worker's CPU
        paired = {"preset": preset_timing.paired, "off": False, "on": True,
                  "alternate": i % 2 == 1}[args.paired]
        member.timing = replace(preset_timing, pin_cpus=pin, awake_cpu=awake, paired=paired,
                                control_reps=preset_timing.control_reps
                                if args.control is None else args.control)
        t = run_trial(member, cid, files, seed, "val", setup, work_root=work / "trials",
                      prepared_dir=prepared, cache_root=work / "cache",
                      gpu=0 if args.preset == "gpu" else None)
        ncu_us = t.evidence.get("ncu_gpu_time_us")
        trials.append({"technique": name, "seed": seed, "pin_cpus": pin,
                       "awake_cpu": awake, "paired": paired,
                       "ncu_over_tsol": (round(ncu_us * 1e3 / t_sol_ns, 3)
                                         if ncu_us is not None and t_sol_ns else None),
                       "status": t.status, "failure": t.failure,
                       "reason": t.reason, "metrics": t.metrics, "evidence": t.evidence,
                       "wall_s": t.wall_s, "isolation": t.isolation,
                       "log_tail": t.log_tail[-1500:] if t.status != "ok" else ""})
        print(json.dumps(trials[-1], indent=1), flush=True)
    for name in candidates:
        mine = [t for t in trials if t["technique"] == name]
        print(f"{name}: median µs {[t['evidence'].get('median_time_us') for t in mine]}, "
              f"score {[round(t['metrics'].get('sol_score', 0), 3) for t in mine]}, "
              f"min T_k/T_SOL {[t['evidence'].get('min_tk_over_tsol') for t in mine]}, "
              f"ncu/T_SOL {[t['ncu_over_tsol'] for t in mine if t['ncu_over_tsol'] is not None]}, "
              f"pinned {[t['pin_cpus'] for t in mine]}, "
              f"awake {[t['awake_cpu'] for t in mine]}, "
              f"control µs {[t['evidence'].get('control_median_us') for t in mine]}, "
              f"in turns {[t['paired'] for t in mine]}, "
              f"drift {[t['evidence'].get('turns_drift') for t in mine]}",
              flush=True)
    out = {"member": args.member, "preset": args.preset, "techniques": args.technique,
           "profiled_workload": {"uuid": profiled_w.uuid, "axes": dict(profiled_w.axes),
                                 "t_sol_ns": t_sol_ns},
           "device": setup.device, "prepare": facts, "prepare_s": round(prepare_s, 1),
           "baseline": {k: v for k, v in table.items() if k != "splits"},
           "trials": trials}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return 0 if all(t["status"] == "ok" for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
