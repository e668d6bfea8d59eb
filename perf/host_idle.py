"""What idling costs the next call on this host: a small CUDA call (and plain Python) timed
on the host's clock right after the previous one, and after this thread idled for a while
asleep in the kernel or polling, with and without a poller of the lowest priority on its
CPU (benchmarks/solexec/evaluate.py, `awake_on`); then the speed of plain Python on
several CPUs at once, every half second, for how it drifts.

    python perf/host_idle.py [--reps 200] [--drift-s 30] [--out FILE]

On a virtual machine a CPU that halts is woken through the hypervisor, late, and runs
slowly for a while after: a trial's worker sleeps between its calls, so this is what a
call pays for the pause before it (evaluate.Timing.idle_before_s) unless its CPU is kept
awake (Timing.awake_cpu).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IDLE_US = (0, 20, 100, 300, 1000, 2000, 5000)


def _python_work() -> None:
    s = 0
    for i in range(3000):
        s += i


def _idle(kind: str, seconds: float) -> None:
    if seconds <= 0:
        return
    if kind == "sleep":
        time.sleep(seconds)
        return
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def after_idle(reps: int) -> dict:
    """Median µs of each call after each idle, the previous GPU work waited for first."""
    import torch

    from benchmarks.solexec.evaluate import awake_on

    device = "cuda" if torch.cuda.is_available() else None
    torch.set_num_threads(1)  # this thread alone, on the one CPU it is pinned to
    x = torch.randn(1 << 16, device=device)
    y = torch.empty_like(x)
    flush = torch.empty(100 << 20, dtype=torch.uint8, device=device)

    def sync() -> None:
        if device is not None:
            torch.cuda.synchronize()

    calls = {"one_kernel": lambda: torch.add(x, 1.0, out=y),
             "seven_kernels": lambda: [torch.add(x, 1.0, out=y) for _ in range(7)],
             "python": _python_work}
    cpu = sorted(os.sched_getaffinity(0))[-1]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    out: dict = {"device": torch.cuda.get_device_name() if device else "cpu", "cpu": cpu}
    try:
        for poller in (False, True):
            with awake_on(cpu if poller else None) as said:
                if poller:
                    out["poller"] = said["said"]
                for name, call in calls.items():
                    for _ in range(50):
                        call()
                    sync()
                    for kind in ("spin", "sleep"):
                        for us in IDLE_US if not poller else (0, 2000):
                            times = []
                            for r in range(reps):
                                flush.fill_(r % 251)
                                sync()
                                _idle(kind, us / 1e6)
                                t0 = time.perf_counter_ns()
                                call()
                                sync()
                                times.append((time.perf_counter_ns() - t0) / 1e3)
                            key = f"{name}/{kind}/{us}us" + ("/poller" if poller else "")
                            out[key] = round(statistics.median(times), 1)
                            print(key, out[key], flush=True)
    finally:
        os.sched_setaffinity(0, before)
    return out


def _probe(cpu: int, seconds: float, queue) -> None:
    os.sched_setaffinity(0, {cpu})
    medians, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        times, until = [], time.monotonic() + 0.5
        while time.monotonic() < until:
            t0 = time.perf_counter_ns()
            _python_work()
            times.append((time.perf_counter_ns() - t0) / 1e3)
        medians.append(round(statistics.median(times), 1))
    queue.put((cpu, medians))


def drift(seconds: float) -> dict:
    """Per CPU (six spread over the host's), the median µs of the same Python loop in each
    half second, all probing at once."""
    cpus = sorted(os.sched_getaffinity(0))
    chosen = sorted({cpus[i * (len(cpus) - 1) // 5] for i in range(6)})
    queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=_probe, args=(c, seconds, queue))
             for c in chosen]
    for p in procs:
        p.start()
    found = dict(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return {str(c): found[c] for c in chosen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--drift-s", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = {"after_idle_us": after_idle(args.reps)}
    if args.drift_s > 0:
        out["python_us_per_half_second"] = drift(args.drift_s)
        for cpu, series in out["python_us_per_half_second"].items():
            print(f"cpu {cpu}: min {min(series)} median {statistics.median(series)} "
                  f"max {max(series)}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
