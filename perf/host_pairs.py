"""Does timing two workers in turns cancel the host's drift? Two identical worker processes
run the same small CUDA call (launched and waited for), each timed from this process
through a pipe, one right after the other in a random order, after a pause of
`--idle-ms`; the workers share one CPU (`--same-cpu`, the default) or sit on two. A
process of the lowest priority may poll on the workers' CPUs (`--poller`), as a trial's
timing keeps its worker's CPU awake (benchmarks/solexec/evaluate.py, `awake_on`).

    python perf/host_pairs.py [--seconds 60] [--window-s 5] [--kernels 7] [--out FILE]

Printed and written: per window (a trial's worth of calls), the median time of A, of B and
the median of A/B over the window's pairs. If the host's speed moves A and B alike, A's
window medians spread widely and the ratios do not: a candidate timed in turns with the
reference would then be judged on its ratio to the reference, which the drift leaves alone.
Needs only torch: it runs where nothing else is installed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path


def _worker(conn, cpu: int, kernels: int) -> None:
    os.sched_setaffinity(0, {cpu})
    import torch

    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1 << 16, device=device)
    y = torch.empty_like(x)

    def call() -> None:
        for _ in range(kernels):
            torch.add(x, 1.0, out=y)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(50):
        call()
    conn.send(torch.cuda.get_device_name() if device == "cuda" else "cpu")
    while conn.recv():
        call()
        conn.send(1)


def _poller(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    while True:
        pass


def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)


def _spread(values: list[float]) -> float:
    """max / min: how far the windows moved."""
    return max(values) / min(values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--window-s", type=float, default=5.0)
    ap.add_argument("--idle-ms", type=float, default=2.0)
    ap.add_argument("--kernels", type=int, default=7)
    ap.add_argument("--same-cpu", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--poller", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < (2 if args.same_cpu else 3):
        raise SystemExit("needs a CPU for this process and one or two for the workers")
    cpu_a = cpus[-1]
    cpu_b = cpu_a if args.same_cpu else cpus[-2]
    mine = cpus[-2] if args.same_cpu else cpus[-3]
    ctx = mp.get_context("spawn")
    pollers = [ctx.Process(target=_poller, args=(c,), daemon=True)
               for c in sorted({cpu_a, cpu_b})] if args.poller else []
    links, procs = {}, []
    for name, cpu in (("A", cpu_a), ("B", cpu_b)):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, cpu, args.kernels), daemon=True)
        proc.start()
        links[name] = parent
        procs.append(proc)
    device = [links[n].recv() for n in links][0]
    for p in pollers:
        p.start()
    os.sched_setaffinity(0, {mine})

    def timed(name: str) -> float:
        conn = links[name]
        t0 = time.perf_counter_ns()
        conn.send(1)
        conn.recv()
        return (time.perf_counter_ns() - t0) / 1e3

    rows: list[tuple[float, float, float]] = []  # (seconds since start, A µs, B µs)
    start = time.monotonic()
    try:
        while (now := time.monotonic() - start) < args.seconds:
            got = {}
            for name in random.sample(["A", "B"], 2):
                time.sleep(args.idle_ms / 1e3)
                got[name] = timed(name)
            rows.append((now, got["A"], got["B"]))
    finally:
        for conn in links.values():
            conn.send(0)
        for p in procs:
            p.join(5)
        for p in pollers:
            p.kill()

    windows = []
    for i in range(int(args.seconds // args.window_s)):
        pairs = [(a, b) for t, a, b in rows
                 if i * args.window_s <= t < (i + 1) * args.window_s]
        if pairs:
            windows.append({"a_us": round(statistics.median(a for a, _ in pairs), 1),
                            "b_us": round(statistics.median(b for _, b in pairs), 1),
                            "a_over_b": round(_median_ratio(pairs), 4), "pairs": len(pairs)})
    out = {"device": device, "cpus": {"this": mine, "A": cpu_a, "B": cpu_b},
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "windows": windows,
           "a_spread": round(_spread([w["a_us"] for w in windows]), 3),
           "b_spread": round(_spread([w["b_us"] for w in windows]), 3),
           "ratio_spread": round(_spread([w["a_over_b"] for w in windows]), 3)}
    for w in windows:
        print(w, flush=True)
    print({k: out[k] for k in ("device", "cpus", "a_spread", "b_spread", "ratio_spread")},
          flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
