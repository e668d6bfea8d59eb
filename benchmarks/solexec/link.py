"""The trusted side of one worker: its requests and timed calls, what /proc shows of its
process, and the cache flush that precedes each timed call.

The clock is time.perf_counter_ns in this process, started just before a call's frame is
sent and stopped as soon as the answer's frame is whole; everything else (serialising the
call, reading /proc) happens outside it. An answer is accepted only from the worker's own
process (the kernel's credentials on the frame), as JSON, bounded in size, and answering
the call just made; anything else is a broken protocol and the worker is killed.

What this process learns about the worker it reads from /proc, never from the worker:
its threads, its child processes, and the CPU time of its threads (schedstat, in ns).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import pickle
import statistics
import time
from pathlib import Path

import psutil
import torch

from benchmarks.solexec import wire
from benchmarks.solexec.launch import Worker, describe_exit
from benchmarks.solexec.results import Status

MAX_ANSWER = 1 << 16
SPIN_S = 0.002  # how long this side polls for a timed answer before it sleeps
_SCHEDSTAT = os.path.exists("/proc/self/schedstat")


class WorkerLost(Exception):
    """The worker is gone or unusable: killed after a timeout, crashed, broke the protocol."""

    def __init__(self, status: Status, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.culprit: object | None = None  # the workload whose call it was, if any


class WorkerLink:
    """Requests and timed calls to one worker, and a watch on its process."""

    def __init__(self, worker: Worker, call_timeout_s: float, idle_before_s: float = 0.0):
        self.worker = worker
        self.call_timeout_s = call_timeout_s
        self.idle_before_s = idle_before_s
        self._heard = time.perf_counter()  # the worker's last answer
        self.ids = itertools.count(1)
        self.baseline_threads: int | None = None
        self.idle_cpu_ns = self.idle_wall_ns = 0
        self._answered: tuple[int, int] | None = None  # clock and worker CPU at an answer
        # where an evaluation's time goes, by phase (evaluate.py adds to it), in ns
        self.phases: collections.Counter = collections.Counter()
        self.sent_ns = 0  # when the last timed round trip's clock started (perf_counter_ns)
        self._idle_read: tuple[int, int] | None = None  # at the pause: worker CPU, wall
        self.stage_gap_ns = 1 << 62  # evaluate.py: the most a clock may start after staging
        self.flush_ns = 0  # ... besides the flush's own time, as calibrated
        self.held_ns = 0  # stopped since its last watched answer (evaluate.py, in turns)

    def request(self, msg: dict, timeout_s: float, fds: tuple[int, ...] = ()) -> dict:
        """An untimed request (start, load, open a workload); its answer."""
        call_id = next(self.ids)
        try:
            self.worker.sock.settimeout(timeout_s)
            wire.send_frame(self.worker.sock, pickle.dumps({**msg, "id": call_id}), fds)
            frame = wire.recv_frame(self.worker.sock, MAX_ANSWER, time.monotonic() + timeout_s)
            self._heard = time.perf_counter()
        except (wire.WireError, OSError) as e:
            raise self._lost(e, timeout_s) from None
        return self._decode(frame, call_id)

    def timed(self, op: str, keys: list[str], watch_idle: bool,
              timeout_s: float | None = None) -> tuple[int, dict]:
        """(ns from sending the call to its whole answer, the answer). With watch_idle, the
        worker's CPU time since the previous watched answer counts as idle work. The
        answer is awaited `timeout_s`, by default the link's call_timeout_s.

        Every timed round trip, call or empty, starts at least `idle_before_s` after the
        worker's last answer, and this side polls for the answer (SPIN_S) rather than
        sleeping: the worker's wake-up is in every time alike and this side's in none.
        A process idle for milliseconds, as before a call (the reference's draw, the
        staging, the flush), wakes slower than one idle for microseconds, as between two
        of the calibration's empty calls: without the pause an H100 host's calls carried
        more of it than the empty calls subtracted from them. Nothing of the worker's
        runs between the staging and the clock's start."""
        if watch_idle and self._idle_read is not None:
            self.idle_cpu_ns += self._idle_read[0]
            self.idle_wall_ns += self._idle_read[1]
        self._idle_read = None
        self._wait()  # the callers pause before staging; this is the floor
        call_id = next(self.ids)
        payload = pickle.dumps({"op": op, "keys": keys, "id": call_id})
        frame = wire.HEADER.pack(len(payload)) + payload
        sock = self.worker.sock
        timeout_s = self.call_timeout_s if timeout_s is None else timeout_s
        sock.settimeout(timeout_s)
        try:
            deadline = time.monotonic() + timeout_s
            t0 = self.sent_ns = time.perf_counter_ns()
            sock.sendall(frame)
            answer = wire.recv_frame(sock, MAX_ANSWER, deadline, spin_s=SPIN_S)
            t1 = time.perf_counter_ns()
            self._heard = time.perf_counter()
        except (wire.WireError, OSError) as e:
            raise self._lost(e, timeout_s) from None
        if watch_idle:
            self._answered, self.held_ns = (t1, self.cpu_ns()), 0
        return t1 - t0, self._decode(answer, call_id)

    def pause(self) -> None:
        """Wait until `idle_before_s` has passed since the worker's last answer, then read
        what the worker did since its last watched answer (its CPU time: see `timed`).
        Callers pause before a call's inputs are staged: inputs staged before the pause
        would lie in the worker's memory, neither clocked nor watched, while it lasts;
        and nothing but the flush and the message lies between the staging and the clock
        (reading the worker's threads takes longer the more threads it has)."""
        self._wait()
        if self._answered is not None:
            answered_at, cpu_then = self._answered
            # time it spent stopped is no time it could have worked in
            self._idle_read = (max(0, self.cpu_ns() - cpu_then),
                               max(0, time.perf_counter_ns() - answered_at - self.held_ns))

    def woken(self) -> None:
        """The worker was continued after a stop: it woke just now, as after an answer, and
        its next timed round trip starts `idle_before_s` after."""
        self._heard = time.perf_counter()

    def _wait(self) -> None:
        if (wait := self.idle_before_s - (time.perf_counter() - self._heard)) > 0:
            time.sleep(wait)

    def _decode(self, frame: wire.Frame, call_id: int) -> dict:
        if frame.pid is not None and frame.pid != self.worker.pid:
            raise self._broke(f"an answer came from process {frame.pid}, not the worker")
        try:
            answer = json.loads(frame.payload)
        except ValueError:
            raise self._broke("an answer that is not JSON") from None
        if not (isinstance(answer, dict) and answer.get("id") == call_id
                and isinstance(answer.get("ok"), bool)):
            raise self._broke(f"an answer that is not to call {call_id}: {str(answer)[:120]}")
        return answer

    def _broke(self, reason: str) -> WorkerLost:
        self.worker.kill()
        return WorkerLost("failed", f"broke the protocol: {reason}")

    def _lost(self, e: Exception, timeout_s: float) -> WorkerLost:
        if isinstance(e, wire.Deadline | TimeoutError):
            self.worker.kill()
            return WorkerLost("timeout", f"no answer within {timeout_s:g} s; the worker was "
                              "killed")
        if isinstance(e, wire.PeerClosed | BrokenPipeError | ConnectionResetError):
            return WorkerLost("failed", describe_exit(self.worker.exit_code(2.0)))
        return self._broke(str(e))

    def threads(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.worker.pid}/task"))
        except OSError:
            return 0

    def children(self) -> int:
        """Processes the worker started that are still running: its descendants, and those
        that outlived their parent and were adopted by the forkserver."""
        try:
            own = len(psutil.Process(self.worker.pid).children(recursive=True))
        except psutil.Error:
            own = 0
        return own + self.worker.strays()

    def cpu_ns(self) -> int:
        """CPU time of the worker's live threads in ns (schedstat; else clock ticks)."""
        pid = self.worker.pid
        if not _SCHEDSTAT:
            try:
                t = psutil.Process(pid).cpu_times()
                return int((t.user + t.system) * 1e9)
            except psutil.Error:
                return 0
        total = 0
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return 0
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total

    def idle_problem(self, share: float, floor_ms: float) -> str | None:
        """Why the worker's CPU use between calls is too much, or None."""
        if self.idle_cpu_ns <= max(floor_ms * 1e6, share * self.idle_wall_ns):
            return None
        return (f"the worker used {self.idle_cpu_ns / 1e6:.1f} ms of CPU in the "
                f"{self.idle_wall_ns / 1e6:.1f} ms it waited between calls (work done "
                "where no clock runs)")

    def close(self) -> str:
        """Ask the worker to exit, kill what is left; the log's tail."""
        try:
            self.worker.sock.settimeout(1.0)
            wire.send_frame(self.worker.sock, pickle.dumps({"op": "exit"}))
            self.worker.exit_code(1.0)
        except OSError:
            pass
        return self.worker.close()


def sync_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class CacheFlush:
    """Writes a buffer larger than the cache it evicts, from this process, then waits for
    the device. On a GPU the L2 is one physical cache for every context, so a write from
    here evicts the worker's lines too; on a CPU the shared last-level cache is evicted
    (the worker's private L1/L2 lines of its inputs are invalidated anyway, since this
    process has just written the inputs)."""

    def __init__(self, device: str, nbytes: int):
        self.device = device
        self.buf = torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None
        self.k = 0

    def __call__(self) -> None:
        if self.buf is not None:
            self.k = (self.k + 1) % 251
            if self.buf.is_cuda:
                self.buf.fill_(self.k)
            else:  # one thread: a pool's wake-up on a busy host takes milliseconds
                self.buf.numpy().fill(self.k)
        sync_device(self.device)


def cache_bytes(device: str) -> int:
    """The L2 of a GPU, or the largest cache level of CPU 0 (32 MiB where unknown)."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.get_device_properties(torch.device(device)).L2_cache_size)
    best, size = -1, 32 << 20
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        if level > best and text.rstrip("KMG").isdigit():
            best, size = level, int(text.rstrip("KMG")) * scale
    return size


def mad(values: list[int] | list[float]) -> float:
    """The median absolute deviation from the median."""
    middle = statistics.median(values)
    return float(statistics.median(abs(v - middle) for v in values))


def net_time(times: list[int], empties: list[int], late: list[int] | None = None
             ) -> tuple[float, float, float]:
    """(net, median call, overhead) in ns: the median call less the overhead, floored at
    the overhead's median absolute deviation (below it, the difference is noise) and at
    1 ns. The overhead is the median empty call timed before the solution was loaded, or
    the median of the empty calls timed between the calls (`late`) where that is lower:
    the round trip drifts over a run (clocks, caches, the host's load), and the later
    empties follow it; a candidate can slow those down but not make them count for more
    than the early ones. The floor is the larger spread of the two sets, so that steadier
    late empties cannot lower it either."""
    overhead, spread = statistics.median(empties), mad(empties)
    if late:
        overhead = min(overhead, statistics.median(late))
        spread = max(spread, mad(late))
    median = statistics.median(times)
    return max(median - overhead, spread, 1.0), float(median), float(overhead)
