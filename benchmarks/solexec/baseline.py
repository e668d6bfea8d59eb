"""T_b and T_SOL of a problem's workloads on this machine (trusted code only).

T_b is the reference run as a solution through the evaluator (evaluate.py), once eager and
once under torch.compile in a fresh worker each (the compiler starts clean for every
problem), the faster mode that passed. T_SOL is the roofline's (roofline.py) for the GPU in
use; on a CPU, the H100's, only so that the scoring path runs (such scores mean nothing).
A campaign's `prepare` (benchmark.py) runs the two modes as trials are run (the sandboxed
kernel step, the runtime guard) and builds its table with `baseline_table`; its prewarm and
perf/solexec_baseline.py run them in workers started here (`run_modes`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import torch

from benchmarks.solexec.evaluate import PROTOCOL, Timing, evaluate_problem, reference_solution
from benchmarks.solexec.launch import launch_subprocess
from benchmarks.solexec.problems import Problem, Workload

COMPILE_CALL_TIMEOUT_S = 300.0
COMPILED_TAIL = """

# Baseline under torch.compile: one graph per shape, a recompile limit no workload list
# reaches (past it torch would fall back to eager without a word), compiling in-process.
import torch as _torch
import torch._dynamo as _dynamo
import torch._inductor.config as _inductor_config

_dynamo.config.cache_size_limit = 4096
if hasattr(_dynamo.config, "recompile_limit"):
    _dynamo.config.recompile_limit = 4096
_inductor_config.compile_threads = 1
if hasattr(_inductor_config, "autotune_local_cache"):  # no choice made beside other compiles
    _inductor_config.autotune_local_cache = False
_eager_run = run
run = _torch.compile(_eager_run, dynamic=False)
"""
CPU_STAND_IN = "H100 SXM"


def compiled_reference_solution(problem: Problem, dest: Path) -> Path:
    """The reference wrapped in torch.compile, written as a solution."""
    dest = reference_solution(problem, dest)
    path = dest / "solution.py"
    path.write_text(path.read_text() + COMPILED_TAIL)
    return dest


def cache_env(cache_dir: Path | None) -> dict[str, str]:
    """The compiler caches a compiled reference's worker reads and fills."""
    if cache_dir is None:
        return {}
    root = Path(cache_dir).absolute()
    return {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
            "TRITON_CACHE_DIR": str(root / "triton")}


def run_modes(problem: Problem, timing: Timing, modes: list[str], folder: Path,
              cache_dir: Path | None = None, workloads: list[Workload] | None = None) -> dict:
    """{mode: ProblemEval as JSON} or {mode_error: why} for each mode; solutions are
    written under `folder` (with a cache, a path kept for the cache's keys)."""
    row: dict = {}
    for mode in modes:
        make = reference_solution if mode == "eager" else compiled_reference_solution
        solution = make(problem, folder / mode)
        run_timing = mode_timing(timing, mode)
        launch = launch_subprocess
        if mode == "compile" and cache_dir is not None:
            launch = functools.partial(launch_subprocess, env=cache_env(cache_dir))
        try:
            result = evaluate_problem(problem, solution, run_timing, launch=launch,
                                      workloads=workloads)
        except Exception as exc:  # noqa: BLE001 - trusted-side failure (e.g. out of memory)
            row[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:500]
            release_memory()
            continue
        row[mode] = result.model_dump(mode="json")
    return row


def control_run(problem: Problem, workloads: list[Workload], timing: Timing) -> dict:
    """The reference, eager, timed as a candidate is (its own worker, started here and not
    sandboxed: the reference is trusted code) with `timing.control_reps` timed calls a
    workload: how fast the host runs a call just now, for a trial that takes it before
    any of its candidate's code runs. {"times_ns": {uuid: net time}, "median_us", "wall_s"},
    or {"error": why}; never raises."""
    import tempfile

    quick = dataclasses.replace(timing, reps=max(1, timing.control_reps), control_reps=0,
                                late_empties=False, paired=False)
    try:
        with tempfile.TemporaryDirectory(prefix="solexec-control-") as folder:
            result = evaluate_problem(problem, reference_solution(problem, Path(folder)),
                                      quick, workloads=workloads)
    except Exception as exc:  # noqa: BLE001 - a control that cannot run is said, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        release_memory()  # the reference's draws and checks, in this long-lived process
    times = {w.uuid: w.time_ns for w in result.workloads if w.status == "ok" and w.time_ns}
    if not times:
        return {"error": "no workload of the control ran"}
    ordered = sorted(times.values())
    return {"times_ns": times, "median_us": ordered[len(ordered) // 2] / 1e3,
            "wall_s": result.wall_s}


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def baseline_times(row: dict) -> dict[str, dict]:
    """Per workload: T_b (the faster passing mode), which mode, or why there is none."""
    out: dict[str, dict] = {}
    modes = [m for m in ("eager", "compile") if m in row]
    if not modes:
        return {"*": {"status": "failed", "reason": row.get("eager_error", "no result")}}
    uuids = [w["uuid"] for w in row[modes[0]]["workloads"]]
    for uuid in uuids:
        runs = {m: next(w for w in row[m]["workloads"] if w["uuid"] == uuid) for m in modes}
        ok = {m: r["time_ns"] for m, r in runs.items() if r["status"] == "ok" and r["time_ns"]}
        if ok:
            mode = min(ok, key=ok.get)
            # the eager time too: a trial in turns times the reference eager against it
            out[uuid] = {"t_b_ns": ok[mode], "mode": mode,
                         **({"eager_ns": ok["eager"]} if "eager" in ok else {})}
        else:
            first = runs[modes[0]]
            out[uuid] = {"status": first["status"], "reason": first["reason"][:200]}
    return out


def device_name(device: str) -> str:
    """What a baseline table records as its device: the GPU's name, or "cpu"."""
    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"


def t_sol_ns(problem: Problem, workload: Workload, device: str) -> float | None:
    """The roofline's time for the GPU in use (the stand-in spec on a CPU), or None."""
    from benchmarks.solexec.roofline import (
        DEVICES,
        SolUnavailable,
        count_workload,
        device_spec,
        price,
    )

    spec = (device_spec(torch.cuda.get_device_name()) if torch.device(device).type == "cuda"
            else DEVICES[CPU_STAND_IN])
    try:
        counts, _, _ = count_workload(problem, workload)
    except SolUnavailable:
        return None
    return price(counts, spec).t_sol_s * 1e9


def prewarm_compile(problem: Problem, splits: dict[str, list[Workload]], timing: Timing,
                    cache_dir: Path) -> dict:
    """The compiled reference run once on every workload prepare's T_b run will time, with
    nothing measured (one warm-up call, one call whose time nobody reads), so that the
    graphs and kernels its compile mode asks for are already in `cache_dir`'s inductor and
    Triton caches, which that run starts from a copy of. Nothing here is a measurement.
    What fails here, or what the copy does not hit, is compiled again in the timed run's
    warm-up.
    Not only CPU work: the reference runs on the device too, so beside other problems'
    prewarming it may run short of memory (then the timed run compiles what is missing):
    a workload that did, in the evaluator, the reference or the worker, is this prewarm's
    error, so that it is not taken as done."""
    every = [w for ws in splits.values() for w in ws]
    # several prewarms run at once: none pins its processes (they would share one CPU)
    quick = dataclasses.replace(timing, warmup=1, reps=1, late_empties=False, batch=1,
                                pin_cpus=False, awake_cpu=False)
    row = run_modes(problem, quick, ["compile"], Path(cache_dir) / "solutions", cache_dir,
                    workloads=every)
    short = [w.get("reason") or "" for w in (row.get("compile") or {}).get("workloads", [])
             if OUT_OF_MEMORY.search(w.get("reason") or "")]
    error = row.get("compile_error") or (
        f"{len(short)} workloads ran out of memory: {short[0][:200]}" if short else None)
    return {"problem": problem.key, "error": error}


# an evaluator, reference or worker that ran short of device memory says one of these
OUT_OF_MEMORY = re.compile(r"out of memory|OUT_OF_MEMORY|OutOfMemory", re.IGNORECASE)


def reference_files(problem: Problem, mode: str) -> dict[str, str]:
    """The reference as a candidate's files: eager, or wrapped in torch.compile."""
    return {"solution.py": problem.reference + (COMPILED_TAIL if mode == "compile" else "")}


def mode_timing(timing: Timing, mode: str) -> Timing:
    """The timing of a T_b run: never in turns (the reference is what it times); a
    compiled reference's first call of each shape compiles, and is allowed the time that
    takes."""
    timing = dataclasses.replace(timing, paired=False)  # the reference is the candidate
    if mode == "eager":
        return timing
    return dataclasses.replace(timing,
                               call_timeout_s=max(timing.call_timeout_s, COMPILE_CALL_TIMEOUT_S))


def baseline_table(problem: Problem, splits: dict[str, list[Workload]], timing: Timing,
                   modes: tuple[str, ...], row: dict, measured_as: str) -> dict:
    """{"device", "modes", "splits": {split: {uuid: {t_b_ns, mode, t_sol_ns} or {status,
    reason}}}} for every workload of every split, from `row` ({mode: the evaluation as
    JSON} or {mode_error: why}, each mode run once over all of them); `measured_as` says
    on which path (a table measured on another is measured again)."""
    times = baseline_times(row)
    out: dict = {"device": device_name(timing.device), "problem": problem.key,
                 "modes": list(modes), "calls_per_trip": timing.batch,
                 "pin_cpus": timing.pin_cpus, "awake_cpu": timing.awake_cpu,
                 # what each mode's run said of its poller (evaluate.awake_on)
                 "awake": {m: (row.get(m) or {}).get("awake", "") for m in modes
                           if m in row},
                 "protocol": PROTOCOL,
                 # each entry keeps the eager time beside T_b (eager_ns), for trials in turns
                 "eager_times": True,
                 "measured_as": measured_as, "splits": {}}
    for split, ws in splits.items():
        entries = {}
        for w in ws:
            entry = dict(times.get(w.uuid) or times.get("*") or {"status": "failed",
                                                                 "reason": "not measured"})
            if "t_b_ns" in entry:
                entry["t_sol_ns"] = t_sol_ns(problem, w, timing.device)
            entries[w.uuid] = entry
        out["splits"][split] = entries
    return out
