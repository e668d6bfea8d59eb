"""Where a small workload's measured time goes: the harness's net time against the same
solution timed in one process, on one GPU.

For each workload of a problem (the reference as the solution, or a technique of the
offline search applied to it, as a campaign's candidate) it prints, in µs:

- `event`: CUDA events around the call after an L2 flush, in this process, the median of
  `--reps` (what the public harness reports);
- `host`: the host's clock around the call and a device synchronise, in this process;
- `path`: `host` plus what the worker does around a call (outputs copied into slots, a
  second synchronise, the digest), less the same path without the call (the empty call);
- `rotate`: `host`, but with the calls going round the workloads, each round in a new
  shuffled order and no workload twice in a row, as the harness times them (a compiled
  solution meets another shape at every call);
- `rotate_sleep` and `rotate_spin`: `rotate`, but with this thread idle for 2 ms before
  each call (after the flush), asleep in the kernel or polling the clock: the worker
  sleeps through the pause before each of its calls, and a call after a sleep may run on
  a CPU that halted (on a virtual machine, woken late and with cold caches);
- with `--audit`, `rotate_hooked`: `rotate` again once an audit hook with the kernel
  step's runtime guard policy (benchmarks/guard.py, nothing denied here) is installed, as
  the worker installs it before the solution loads, and `audit_events`: the audit events
  a call raises, by name, per call (a compiled call that raises many pays the hook's
  Python on each);
- `net-B`: the harness's net time (evaluate.py: a sandbox-free worker, the host round trip
  less the empty one) with B calls a round trip, for each B of `--batches`.

And the host round trip alone: a two-process ping-pong over a Unix socket (blocking
reads), median and spread.

    python perf/solexec_overhead.py --member L1-012_fused_cos_sin_embedding_generation \
        [--data-dir DIR] [--workloads 4] [--technique compile_default] [--batches 1 16]
        [--net-timing preset|pinned|unpinned] [--launch subprocess|forkserver|guarded]
        [--out FILE]

The `net` times are taken as the GPU preset takes them (pinned, the worker's CPU kept
from halting by a poller: evaluate.Timing.awake_cpu), or pinned without the poller, or
neither (`--net-timing`); `rotate_sleep_awake` is `rotate_sleep` with this thread pinned
and the same poller on its CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _pong(sock: socket.socket, other: socket.socket) -> None:
    other.close()
    while (b := sock.recv(64)):
        sock.sendall(b)


def ping_pong(n: int = 2000) -> dict:
    a, b = socket.socketpair()
    p = mp.get_context("fork").Process(target=_pong, args=(b, a))
    p.start()
    b.close()
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        a.sendall(b"x" * 32)
        a.recv(64)
        times.append(time.perf_counter_ns() - t0)
    a.close()
    p.join()
    med = statistics.median(times)
    return {"median_us": med / 1e3,
            "mad_us": statistics.median(abs(t - med) for t in times) / 1e3,
            "p90_us": sorted(times)[int(0.9 * n)] / 1e3}


def in_process(problem, workload, fn, reps: int, device: str) -> dict:
    import torch

    from benchmarks.solexec import transport
    from benchmarks.solexec.link import CacheFlush, cache_bytes
    from benchmarks.solexec.problems import make_inputs

    flush = CacheFlush(device, 2 * cache_bytes(device))
    names = list(problem.inputs)

    def inputs(seed):
        made = make_inputs(problem, workload, seed=seed, device=device)
        return [made[n] for n in names]

    def outs_of(result):
        vals = list(result.values()) if isinstance(result, dict) else (
            list(result) if isinstance(result, tuple | list) else [result])
        return [v for v in vals if isinstance(v, torch.Tensor)]

    with torch.no_grad():
        for i in range(3):
            fn(*inputs(i))
        torch.cuda.synchronize()
        slots = [torch.empty_like(o) for o in outs_of(fn(*inputs(99)))]
        event, host, path, empty = [], [], [], []
        for i in range(reps):
            args = inputs(1000 + i)
            flush()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            event.append(start.elapsed_time(end) * 1e3)
            args = inputs(2000 + i)
            flush()
            t0 = time.perf_counter_ns()
            fn(*args)
            torch.cuda.synchronize()
            host.append((time.perf_counter_ns() - t0) / 1e3)
            args = inputs(3000 + i)
            flush()
            t0 = time.perf_counter_ns()
            result = fn(*args)
            torch.cuda.synchronize()
            for o, s in zip(outs_of(result), slots, strict=True):
                transport.as_bytes(s).copy_(transport.as_bytes(o))
            torch.cuda.synchronize()
            transport.digest(slots)
            path.append((time.perf_counter_ns() - t0) / 1e3)
            flush()
            t0 = time.perf_counter_ns()
            torch.cuda.synchronize()
            transport.digest(slots)
            empty.append((time.perf_counter_ns() - t0) / 1e3)
    return {"event_us": statistics.median(event), "host_us": statistics.median(host),
            "path_us": statistics.median(path) - statistics.median(empty),
            "empty_path_us": statistics.median(empty)}


def rotating(problem, workloads, fn, rounds: int, device: str,
             idle: str | None = None) -> list[float]:
    """Per workload, the median host time of a call (flush, call, synchronise) when the
    calls go round the workloads in shuffled rounds, no workload twice in a row; with
    `idle` ("sleep" or "spin") this thread idles IDLE_S that way between the flush and
    the clock's start."""
    import random

    import torch

    from benchmarks.solexec.link import CacheFlush, cache_bytes
    from benchmarks.solexec.problems import make_inputs

    flush = CacheFlush(device, 2 * cache_bytes(device))
    names = list(problem.inputs)
    rng = random.Random(7)
    times: list[list[float]] = [[] for _ in workloads]
    last = None
    with torch.no_grad():
        for r in range(rounds):
            order = list(range(len(workloads)))
            rng.shuffle(order)
            if len(order) > 1 and order[0] == last:
                order[0], order[-1] = order[-1], order[0]
            for i in order:
                made = make_inputs(problem, workloads[i], seed=5000 + r, device=device)
                args = [made[n] for n in names]
                flush()
                if idle == "sleep":
                    time.sleep(IDLE_S)
                elif idle == "spin":
                    until = time.perf_counter() + IDLE_S
                    while time.perf_counter() < until:
                        pass
                t0 = time.perf_counter_ns()
                fn(*args)
                torch.cuda.synchronize()
                times[i].append((time.perf_counter_ns() - t0) / 1e3)
            last = order[-1]
    return [statistics.median(t) for t in times]


def audit_events(problem, workloads, fn, device: str, calls: int = 50) -> dict[str, float]:
    """Installs a counting audit hook and the runtime guard's (its policy as a kernel step
    with subprocesses allowed, every path readable and writable, so nothing stops), and
    returns the audit events per call, by name, over `calls` calls round the workloads."""
    import collections

    import torch

    from benchmarks.guard import make_hook
    from benchmarks.solexec.problems import make_inputs

    names = list(problem.inputs)
    made = [make_inputs(problem, w, seed=9000, device=device) for w in workloads]
    counts: collections.Counter = collections.Counter()
    counting = [False]

    def count(event: str, args: tuple) -> None:
        if counting[0]:
            counts[event] += 1

    sys.addaudithook(count)
    sys.addaudithook(make_hook(("/",), ("/",), -1, True, on_stop=lambda e, d: None))
    with torch.no_grad():
        counting[0] = True
        for i in range(calls):
            fn(*[made[i % len(made)][n] for n in names])
        counting[0] = False
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    return {k: v / calls for k, v in counts.most_common(20)}


IDLE_S = 0.002  # as evaluate.Timing.idle_before_s


def _cpuidle() -> dict:
    """The host's idle driver and governor, and CPU 0's idle states (name: exit latency)."""
    base, out = Path("/sys/devices/system/cpu"), {}
    for name in ("current_driver", "current_governor_ro", "current_governor"):
        try:
            out[name] = (base / "cpuidle" / name).read_text().strip()
        except OSError:
            pass
    states = {}
    for state in sorted((base / "cpu0" / "cpuidle").glob("state*")):
        try:
            states[(state / "name").read_text().strip()] = int((state / "latency").read_text())
        except (OSError, ValueError):
            pass
    return {**out, "states_latency_us": states}


def _net(problem, folder: Path, timing, workloads, launch: str):
    from benchmarks.solexec.evaluate import evaluate_problem
    from benchmarks.solexec.launch import Forkserver

    if launch == "subprocess":
        return evaluate_problem(problem, folder, timing, workloads=workloads, seed=7)
    env = {"AUTOLAB_GUARD": json.dumps({"read": ["/"], "write": ["/"], "fd": -1,
                                        "allow_subprocess": True})
           } if launch == "guarded" else None
    with Forkserver(env=env) as server:
        return evaluate_problem(problem, folder, timing, workloads=workloads,
                                launch=server.launch, build_dir=folder / "build", seed=7)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member", required=True, help="e.g. L1-012_fused_cos_sin_embedding_...")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--workloads", type=int, default=4)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--technique", default=None, help="a technique's name (default: none)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--audit", action="store_true",
                    help="count audit events per call and time with the guard's hook")
    ap.add_argument("--launch", choices=("subprocess", "forkserver", "guarded"),
                    default="subprocess",
                    help="how the `net` column's worker starts: a subprocess of its own, "
                    "forked by a forkserver as in a trial, or that under the runtime guard "
                    "(its hook and import finder, every path allowed)")
    ap.add_argument("--net-timing", choices=("preset", "pinned", "unpinned"),
                    default="preset", help="the GPU preset's timing (pinned, poller on), "
                    "pinned without the poller, or neither")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from benchmarks.solexec.benchmark import TIMINGS, load_members, problems_root

    device = "cuda"
    problem = load_members(problems_root(args.data_dir))[args.member]
    workloads = list(problem.workloads)[: args.workloads]
    source = problem.reference
    if args.technique is not None:
        from benchmarks import get_family
        from perf.solexec_trial import candidate_files

        if args.data_dir is not None:
            os.environ.setdefault("AUTOLAB_SOLEXEC_DIR", str(problems_root(args.data_dir)))
        member = get_family("solexec").member(args.member)
        source = candidate_files(member, args.technique)["solution.py"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "solution.py").write_text(source)
        spec = importlib.util.spec_from_file_location("solution", Path(tmp) / "solution.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["solution"] = module  # as the worker imports it
        spec.loader.exec_module(module)
        rows = [{"axes": dict(w.axes), **in_process(problem, w, module.run, args.reps, device)}
                for w in workloads]
        for row, t in zip(rows, rotating(problem, workloads, module.run, args.reps, device),
                          strict=True):
            row["rotate_us"] = t
        for idle in ("sleep", "spin"):
            for row, t in zip(rows, rotating(problem, workloads, module.run, args.reps,
                                             device, idle), strict=True):
                row[f"rotate_{idle}_us"] = t
        from benchmarks.solexec.evaluate import awake_on

        cpu = sorted(os.sched_getaffinity(0))[-1]
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            with awake_on(cpu) as poller:
                for row, t in zip(rows, rotating(problem, workloads, module.run,
                                                 args.reps, device, "sleep"), strict=True):
                    row["rotate_sleep_awake_us"] = t
        finally:
            os.sched_setaffinity(0, before)
        events: dict = {}
        if args.audit:  # last: an audit hook cannot be removed
            events = audit_events(problem, workloads, module.run, device)
            for row, t in zip(rows, rotating(problem, workloads, module.run, args.reps,
                                             device), strict=True):
                row["rotate_hooked_us"] = t
        net_awake: dict[int, str] = {}
        for batch in args.batches:
            preset = TIMINGS["gpu"]
            timing = replace(preset, batch=batch, reps=args.reps // batch or 1,
                             pin_cpus=preset.pin_cpus if args.net_timing == "preset"
                             else args.net_timing == "pinned",
                             awake_cpu=preset.awake_cpu and args.net_timing == "preset")
            ev = _net(problem, Path(tmp), timing, workloads, args.launch)
            net_awake[batch] = ev.awake
            for row, w in zip(rows, ev.workloads, strict=True):
                row[f"net{batch}_us"] = w.time_ns / 1e3 if w.time_ns else None
                row[f"overhead{batch}_us"] = w.overhead_ns / 1e3 if w.overhead_ns else None
                row[f"status{batch}"] = w.status
    out = {"member": args.member, "technique": args.technique, "device":
           torch.cuda.get_device_name(), "host_cpus": os.cpu_count(),
           "net_timing": args.net_timing, "net_awake": net_awake,
           "rotate_sleep_awake_poller": poller["said"], "launch": args.launch,
           "cpuidle": _cpuidle(),
           "ping_pong": ping_pong(), "audit_events_per_call": events, "workloads": rows}
    print(json.dumps(out, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
