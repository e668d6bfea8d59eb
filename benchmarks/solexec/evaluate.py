"""Trusted evaluation of a SOL-ExecBench candidate: the clock, the inputs, the reference
outputs and every check live in this process; the candidate's code runs in a worker
process (worker.py) that only executes calls.

Each call goes this way:

1. Its inputs, fresh for every call, are drawn from a secret seed and the reference is run
   on a copy of them, here, before the flush and the clock; the inputs are then copied
   into the arena's input slots (transport.py), and the output slots are poisoned
   (NaN for floating dtypes, a changing byte pattern otherwise).
2. The caches are flushed: this process writes a buffer twice the size of the last-level
   cache (CPU) or of the L2 (GPU), then synchronises its device.
3. The clock starts (time.perf_counter_ns, here) and "call i" is sent; the worker runs
   `run`, synchronises its device (all streams), copies the outputs into their slots,
   synchronises again and answers with a digest of the slots. The clock stops when the
   answer arrives.
4. At once the output slots are copied (the snapshot) and the copy is judged: the answer's
   digest must match it (a worker that answers before its outputs are in place, with a
   synchronize replaced or work left on another stream or thread, cannot know the digest of
   bytes not yet written); the public tolerance rule against the reference computed here on
   the same inputs; the inputs against their pristine copy (all but those the reference
   itself updates in place, such as a KV cache, where the outputs are what is judged); and
   the worker process as /proc shows it: no child processes, and after warm-up no more
   threads than when warm-up ended. Before the workload's next call, and after a pause at
   the end, the slots must still hold the snapshot: a write after the answer is work left
   running in the background. Across the timed phase the worker may not use CPU while it
   waits for calls, beyond a small allowance: a worker busy between calls is computing
   where no clock runs.

On a GPU the worker's synchronize is device-wide for its context (every stream, graph and
host callback) and bound before the candidate is imported, so replacing
torch.cuda.synchronize changes nothing, and the digest fails an early answer whatever was
replaced. What is not guaranteed: work in another CUDA context (a child process: refused by
the process check here and by the sandbox); work a thread enqueues after the answer, which
the thread count sees only when the thread is new after warm-up and the slots only when it
writes them; a kernel still running after the answer that writes elsewhere, which is timed
by the next call it delays rather than by its own. Persisting-L2 windows the worker's
context sets are not reset by the flush (they cannot hold a fresh call's inputs).

Round trips. One round trip may carry several calls of a workload (`Timing.batch`, fewer
where their arenas together would pass `batch_mb`): each call has its own arena and its
own fresh draw, all staged before the flush; the worker runs them one after the other,
synchronising after each before copying its outputs, and answers once with a digest per
call; every call is judged as above. The round trip's time less the overhead of one empty
round trip is shared by its calls, so the host's round trip, hundreds of microseconds
with a spread of the same order, weighs 1/batch of what it would on each call: without
it, a kernel of tens of microseconds is measured as the messaging around it. The caches
are flushed once per round trip, not between its calls; each call's inputs are still
untouched since the flush (its own arena, written before it), and T_b is measured the
same way, so the reference and the candidate are timed alike. Every call's inputs of a
trip are staged before its first call, so a solution that kept the views it was given in
earlier calls (plain Python, nothing the static scan refuses) would find the trip's other
inputs in them and could compute the whole trip in its first call. So before each trip
the worker maps every arena of the workload afresh, at an address drawn at random (on a
GPU, inside a range of addresses reserved once per worker), and unmaps the previous
mapping whatever still holds views of it (transport.Mapped): a kept view reaches nothing,
and reading one is a crash. **That is not enough, so the presets carry one call a trip.**
A review found three ways on that the scan did not refuse: a solution that replaces
`torch.frombuffer` (or `torch.as_tensor`) sees every fresh mapping made for the trip;
`/proc/self/maps` says where they lie and a strided numpy view reads any address; and
`operator.attrgetter` reaches the worker's frames and their views. The scan now refuses
the last two roads, but the candidate shares the worker's process, so whatever the worker
can reach before a call, the candidate can too. Batching becomes sound only where a call's
inputs do not exist in the worker before that call starts (the trusted side staging each
call's inputs on a handshake, its cost in the empty calls too).

A worker serves one group of workloads (those whose arenas fit `group_mb` together; most
problems are one group). Before the solution is loaded into it, each workload's empty
calls are timed (see Overhead). Then warm-up calls, checked but not timed (allowed
`warmup_timeout_s` each, for a shape's first call compiles), and timed calls (allowed
`call_timeout_s`) that go round the group's workloads, each round in a new shuffled order
and no workload twice in a row, so whatever state a call leaves behind meets another
workload's call next (a global that remembers the last workload, a plan built for one
shape and reused for another) and is judged there. A worker lost to a crash or a timeout
fails the workload of the call that lost it; the others start over in a new worker, on
inputs never drawn before.

Overhead. An empty call goes the same way as a call (the same flush, the same clock, the
same messages; the worker synchronises, copies each output slot's bytes as a call copies
its outputs into them, but into buffers of its own so the slots stay untouched,
synchronises again and digests the slots) but runs nothing: it is the round trip and the
worker's path around a call. Without the copy and the second synchronise in it, that
part of the worker's own path (about 50 µs on an H100 host, timed in one process) was
left in every time. And every timed round trip, call or empty, starts at least
`idle_before_s` after the worker's last answer (link.py, `timed`): a worker idle for
milliseconds, as before every call, wakes slower than one idle for microseconds, as
between two calibration calls had been. Nothing of
the worker's runs between a call's staging and its clock: an untimed message there
(a wake-up ping was tried) is a window in which the candidate's code, hooked into the
worker's reply, computes the staged call unclocked.

The empty call is timed in the worker before the solution is imported, so no
candidate code can slow it down to inflate what is subtracted from its own times, and again
right after every timed call (`late_empties`), because the round trip drifts over a run
(clock speeds, the host's load): a sub-millisecond workload measured against an overhead
taken minutes earlier moved by up to a third between two machines. The overhead is the
median of the early empties, or of the late ones where that is lower: slowing the late
ones down changes nothing, and answering them early only adds to the candidate's own time.
`time_ns` is the median call minus that overhead, floored at its empty calls' median
absolute deviation, below which the difference is noise. It is subtracted because
T_SOL is a device-only bound and the public harness times the device alone (CUDA events or
CUPTI): a fixed host round trip of tens to hundreds of microseconds left in would pull
every small workload's score towards 0.5 whatever the kernel does. The raw median and the
overhead are kept beside it. The baseline T_b is the reference run as a solution through
this same path (`reference_solution`), so the two are measured alike.

In turns (`Timing.paired`). A host's speed moves while it runs: on an H100 host one CPU
ran the same Python loop 1.8 times slower for seconds at a time, each CPU at its own
times, so the same reference timed in two trials a minute apart differed by up to 3
times, and a candidate's time against a T_b measured once carries that drift. In turns,
the reference also runs here, trusted, in a worker of its own started and calibrated
before any of the candidate's code loads, pinned to the candidate's worker's CPU. Each
timed round of the candidate's (one call of every workload) goes with a block of the
reference's (one call of each workload's twin, on draws of its own, checked and timed
alike), before or after it at random. While one worker's block runs the other is stopped
(SIGSTOP, every thread seen stopped in /proc first), so no code of the candidate's runs
while the reference is timed; a candidate's worker that does not stop, or that has a
process running beside it once stopped (a stopped process cannot start one), fails. Each
block opens with an untimed call, for a worker that was stopped meets a CPU whose caches
the other filled (on a 2-vCPU host, calls alternating one by one took 3 to 5 times as
long as calls not in turns; by blocks, 1.1 to 3 times), and starts `idle_before_s` after
its worker was continued. Work the candidate left on the device would still run while it
is stopped and slow the reference's calls: on a GPU a reference's call counts only if its
clock starts within `turns_gap_s` of its staging besides the calibrated flush, so the
flush just before the clock (this process writing its buffer and synchronising) must not
have waited for another context's kernels; one that did is made again on a fresh draw.
The time a worker spent stopped is not counted as time it waited between calls (the CPU
allowance), and an untimed call that opens a block bounds that watch as a timed one does.
The workload's result carries the reference's time beside its own, and the score scales
the table's T_b by how fast the reference ran in turns against its eager time there
(benchmark.score_trial); a workload in turns without the reference's time fails the
trial, so ending the turns gains a candidate nothing. If the reference's side fails, the
turns end for the rest of the evaluation, which says why, and the trial fails with it (the
candidate's later rounds would run without turns, against a T_b scaled by them). A
candidate's worker that ran while it was held (something of its own continued it: its CPU
time, its threads or its state changed by the end of the turn) fails as well.

Where this differs from the public SOL-ExecBench harness (NVIDIA/SOL-ExecBench:
core/bench/timing.py, core/bench/reward_hack.py, driver/templates/eval_driver.py):

- It times inside the candidate's process, with CUDA events or CUPTI around the call, and
  guards its clock by checking that torch.cuda.Event.elapsed_time and its own driver
  functions keep the identity they had before the candidate was imported. Here the clock is
  in another process, out of the candidate's reach, so there is nothing to patch; the cost
  is a host round trip in each measurement (subtracted, above) and wall-clock rather than
  kernel-only time, so launch overhead counts, for the reference as for the candidate.
- It checks correctness over separate rounds plus one untimed audit call placed at random
  among the timed ones; here every call, warm-up and timed, is checked, on fresh inputs.
- It counts threads in-process before and after a call and refuses outputs that are not
  exactly torch.Tensor; here threads and children are counted from this process, and the
  outputs are bytes copied into memory this process owns, so a lazy object is forced
  inside the timed window whatever the worker-side type check is made to say.
- It gives each iteration unique data pointers (a shifting pool over cloned inputs) against
  caching; here each call's values are fresh, which defeats caching keyed on pointers,
  shapes or values alike. The slots are reused, so pointers repeat from call to call.
- It resets persisting L2 lines before each flush; the worker's context's persisting lines
  cannot be reset from here (see above).
"""

from __future__ import annotations

import math
import os
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.solexec import transport
from benchmarks.solexec.launch import Worker, launch_subprocess
from benchmarks.solexec.link import CacheFlush, WorkerLink, WorkerLost, cache_bytes, sync_device
from benchmarks.solexec.material import (
    Draw,
    WorkloadRun,
    batch_copies,
    estimate_bytes,
    same_bytes,
)
from benchmarks.solexec.problems import (
    Problem,
    Workload,
    check_outputs,
    reference_entry,
    shrink,
    skip_reason,
)
from benchmarks.solexec.results import ProblemEval, Status, WorkloadEval

TRACE_CHARS = 3000
# what an empty call does, which is what every time has subtracted: times (T_b tables
# included) taken under another protocol are not comparable and are measured again
PROTOCOL = 3

Launch = Callable[[Path], Worker]


@dataclass(frozen=True)
class Timing:
    """How one evaluation runs. Defaults suit a GPU; tests shrink everything."""

    device: str = "cpu"
    warmup: int = 3
    reps: int = 20
    call_timeout_s: float = 10.0
    warmup_timeout_s: float = 120.0  # a warm-up call: the first of a shape may compile
    load_timeout_s: float = 600.0  # importing and compiling the solution
    flush_bytes: int | None = None  # None: twice the last-level cache (CPU) or L2 (GPU)
    settle_s: float = 0.01  # pause before the last look for writes after the answers
    max_restarts: int = 2  # a worker lost (crash, timeout) is restarted this often
    threads: int = 1
    max_elements: int | None = None  # shrink workloads for CPU runs (problems.shrink)
    group_mb: float = 4096.0  # workloads interleaved together hold at most this in arenas
    batch: int = 1  # calls of a workload one timed round trip carries, at most
    batch_mb: float = 1024.0  # ... while their arenas together stay within this
    late_empties: bool = True  # an empty call after each timed call (the drifting overhead)
    idle_before_s: float = 0.002  # a timed round trip starts this long after the last answer
    # a timed round trip whose clock started later than this after its inputs were staged
    # and flushed (the flush's own time, its median over the calibration, allowed besides:
    # this process descheduled on a busy host, a flush stalled) is not counted, and made
    # again on a fresh draw, at most `reps` times a workload (then it fails): its inputs
    # lay in the worker's memory unclocked
    stage_gap_s: float = 0.001
    idle_cpu_share: float = 0.25  # of the time between timed calls, the most it may use
    idle_cpu_floor_ms: float = 20.0  # ... and never less than this over a whole run
    # the trusted side's thread and the worker each on a CPU of their own for the whole
    # evaluation (the last two this thread may use: see pinned_cpus), so that a trial's
    # host share of a call does not depend on where the scheduler put them
    pin_cpus: bool = False
    # with pin_cpus, a process of the lowest priority polls on the worker's CPU while the
    # evaluation runs, so that the CPU never halts while the worker sleeps between calls
    # (awake_on): a call then starts on a CPU that is awake and warm
    awake_cpu: bool = False
    # a trial first times the reference (eager, trusted, this many timed calls a
    # workload) on the same CPUs, before any of the candidate's code runs: how fast the
    # host is just then (baseline.control_run; 0: not)
    control_reps: int = 0
    # the reference timed in turns with the candidate (see "In turns" above): each timed
    # call of the candidate's goes with one of the reference's on the same workload, in
    # its own worker on the same CPU, the candidate's worker stopped meanwhile
    paired: bool = False
    # in turns, on a GPU: the most a reference's timed call may start its clock after its
    # staging besides the calibrated flush (stage_gap_s for the candidate's): the flush
    # just before the clock must find the device free of the stopped candidate's work
    turns_gap_s: float = 0.00025


# ---------------------------------------------------------------------------- one call


def _call(link: WorkerLink, p: WorkloadRun, trip: int, timed: bool, flush: CacheFlush,
          timeout_s: float | None = None, watched: bool = False) -> bool:
    """Round trip `trip` of workload p: its calls (one per copy), each on its own draw; a
    failed check finishes p. The answer is awaited timeout_s (default: the link's). A
    timed trip, or an untimed one `watched`, bounds the worker's CPU watch between calls
    (link.timed) and has its threads counted.
    False for a timed trip whose clock started more than the link's `stage_gap_ns` after
    its inputs were staged and flushed (the flush's calibrated time allowed besides): its
    time is not kept (it is judged all the same)."""
    if _changed_since_answer(p):
        return True
    t0 = time.monotonic_ns()
    try:
        draws = p.draws(trip)
    except Exception as e:  # the reference's fault on these values, not the candidate's
        p.finish("skipped", _reference_fault(e))
        return True
    finally:
        link.phases["draw"] += time.monotonic_ns() - t0
    if p.copies > 1:  # nothing kept from an earlier trip may reach this one's inputs
        answer = link.request({"op": "remap", "keys": p.keys}, link.call_timeout_s)
        if not answer["ok"]:
            p.finish("failed", f"the worker could not map the workload afresh: "
                     f"{str(answer.get('error', ''))[:300]}")
            return True
    t0 = time.monotonic_ns()
    link.pause()  # before the staging: no staged input waits through it
    t1 = time.monotonic_ns()
    link.phases["pause"] += t1 - t0
    p.stage(draws)
    sync_device(flush.device)  # on a GPU the copies are queued: staged once they are done
    staged = time.perf_counter_ns()  # from here the inputs are in the worker's reach
    flush()
    t2 = time.monotonic_ns()
    ns, answer = link.timed("call", p.keys, watch_idle=timed or watched, timeout_s=timeout_s)
    clocked = link.sent_ns - staged <= link.flush_ns + link.stage_gap_ns
    t3 = time.monotonic_ns()
    snapshots = [[v.clone() for v in c.out_views] for c in p.slots]
    sync_device(flush.device)
    for c, snapshot in zip(p.slots, snapshots, strict=True):
        c.snapshot = snapshot
    verdict = _judge(link, p, draws, answer, snapshots, timed or watched)
    link.phases["stage"] += t2 - t1
    link.phases["call" if timed else "warmup"] += t3 - t2
    link.phases["check"] += time.monotonic_ns() - t3
    if verdict is not None:
        p.finish(*verdict)
    elif timed and clocked:
        p.times.append(ns)
    return clocked or not timed


def _late_empty(link: WorkerLink, p: WorkloadRun, flush: CacheFlush) -> None:
    """An empty call right after a timed call of p, timed the same way: the overhead as it
    is now, which may have drifted since the calibration (see net_time for how it is used).
    It lies inside the idle watch: the worker's CPU during it counts as CPU used between
    calls, so work moved into the empty call is measured like work done between calls.
    A candidate that breaks it fails p: the empty path is part of the protocol."""
    t0 = time.monotonic_ns()
    link.pause()
    flush()
    ns, answer = link.timed("empty", p.keys, watch_idle=False)
    link.phases["empty"] += time.monotonic_ns() - t0
    if not answer["ok"]:
        p.finish("failed", f"an empty call failed: {str(answer.get('error', ''))[:300]}")
    else:
        p.late_empties.append(ns)


def _changed_since_answer(p: WorkloadRun) -> bool:
    """Finishes p when its output slots no longer hold what they held at its last answer."""
    if all(c.snapshot is None or all(same_bytes(v, s) for v, s in zip(c.out_views, c.snapshot,
                                                                      strict=True))
           for c in p.slots):
        return False
    p.finish("failed", "its outputs changed after it answered (work left running in the "
             "background)")
    return True


def _judge(link: WorkerLink, p: WorkloadRun, draws: list[Draw], answer: dict,
           snapshots: list[list[torch.Tensor]], timed: bool) -> tuple[Status, str] | None:
    if not answer["ok"]:
        return "failed", f"run failed: {str(answer.get('error', ''))[:500]}"
    digests = answer.get("digests")
    if not isinstance(digests, list) or len(digests) != len(snapshots) or any(
            d != transport.digest(s) for d, s in zip(digests, snapshots, strict=True)):
        return "failed", ("it answered before its outputs were in place (the digest in its "
                          "answer does not match the outputs read at the answer)")
    for c, d, snapshot in zip(p.slots, draws, snapshots, strict=True):
        check = check_outputs(snapshot, d.want, p.workload.tolerance, list(p.problem.outputs))
        p.calls += 1
        p.worst_abs = _worse(p.worst_abs, check.max_abs_error)
        p.worst_rel = _worse(p.worst_rel, check.max_rel_error)
        if not check.passed:
            return "incorrect", f"call {p.calls}: {check.detail}"
        for name, view, value in zip(p.problem.inputs, c.in_views, d.values, strict=True):
            if view is not None and name not in p.writable and not same_bytes(view, value):
                return "failed", f"run wrote into its input {name!r}"
    if (children := link.children()) > 0:
        return "failed", f"it left {children} child process(es) running after the call"
    base = link.baseline_threads
    if timed and base is not None and (n := link.threads()) > base:
        return "failed", (f"it left {n - base} more thread(s) running after the call than it "
                          "had after warm-up (work left in the background)")
    return None


def _reference_fault(e: Exception) -> str:
    return "the reference cannot run it: " + " ".join(f"{type(e).__name__}: {e}".split())[:500]


def _worse(a: float, b: float) -> float:
    return b if math.isnan(b) or b > a else a  # NaN, once seen, stays the worst


# ---------------------------------------------------------------------------- a problem


def round_order(todo: list, rng: random.Random, last: object = None) -> list:
    """One round of timed calls: the workloads in a new random order, never starting with
    the one called last, so no workload is called twice in a row while another waits."""
    order = rng.sample(todo, len(todo))
    if len(order) > 1 and order[0] is last:
        order.append(order.pop(0))
    return order


def groups(pending: list[WorkloadRun], budget_bytes: float) -> list[list[WorkloadRun]]:
    """Consecutive workloads whose arenas fit the budget together (one alone if it does not)."""
    out: list[list[WorkloadRun]] = []
    used = 0.0
    for p in pending:
        size = p.size * p.copies
        if out and used + size <= budget_bytes:
            out[-1].append(p)
            used += size
        else:
            out.append([p])
            used = size
    return out


def _open(link: WorkerLink, p: WorkloadRun) -> None:
    """The workload's arenas (one per copy) made here and mapped by the worker."""
    try:
        p.materialise()
    except transport.ArenaError:
        raise  # the evaluator's own fault
    except Exception as e:  # the reference's fault, not the candidate's
        p.finish("skipped", _reference_fault(e))
        return
    for c in p.slots:
        handle, fds = c.arena.handle()
        answer = link.request({"op": "open", "key": c.key, "arena": handle, "inputs": p.inputs,
                               "outputs": p.outputs, "names": list(p.problem.outputs)},
                              link.call_timeout_s, fds)
        if not answer["ok"]:
            p.finish("failed", "the worker could not map the workload: "
                     f"{answer.get('error', '')}")
            return


def _calibrate(link: WorkerLink, group: list[WorkloadRun], timing: Timing,
               rng: random.Random, flush: CacheFlush) -> None:
    """Empty calls, `reps` for each workload in shuffled rounds, each after the same flush,
    timed the same way as a call; made before the solution is loaded, so no candidate code
    can slow them down to inflate what is subtracted from its times."""
    last = None
    for p in group:
        p.empties.clear()
    flushes: list[int] = []
    for _ in range(timing.reps):
        for p in round_order([p for p in group if p.result is None], rng, last):
            link.pause()
            t0 = time.perf_counter_ns()
            flush()
            flushes.append(time.perf_counter_ns() - t0)
            ns, answer = link.timed("empty", p.keys, watch_idle=False)
            if not answer["ok"]:
                raise RuntimeError(f"an empty call failed: {answer.get('error', '')}")
            p.empties.append(ns)
            last = p
    if flushes:  # what the gap before a call's clock may hold besides stage_gap_s
        link.flush_ns = sorted(flushes)[len(flushes) // 2]


STOP_WAIT_S = 0.2  # how long a stopped worker may take until /proc shows every thread so


def _all_stopped(pid: int) -> bool:
    """Every thread of pid stopped by a signal, or gone (its link then says so)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("T", "t", "Z", "X"):
            return False
    return True


@dataclass(eq=False)
class _Turns:
    """The reference's side of an evaluation in turns (Timing.paired): its worker, a twin
    of each of the group's workloads, and the candidate's worker, stopped while it runs.
    `off` says why the turns ended early (the reference's side failed); `fault`, what the
    candidate did that fails it (it did not stop, or left processes running while it
    was stopped)."""

    link: WorkerLink
    twins: dict[int, WorkloadRun]  # by the candidate's workload key
    candidate_link: WorkerLink
    timing: Timing
    flush: CacheFlush
    phases: Counter
    off: str = ""
    fault: str = ""

    def stop(self, why: str) -> None:
        """No more turns. What was timed of the twins so far is not kept: the candidate's
        rounds after it would run without turns, faster, against a T_b scaled by the
        turns (so its workloads fail in the score, whoever ended the turns)."""
        self.off = self.off or why
        for twin in self.twins.values():
            twin.finish("failed", f"not timed in turns: {why}"[:500])

    def warm(self, p: WorkloadRun, trip: int) -> None:
        """Warm-up round trip `trip` of p's twin, the candidate's worker stopped."""
        twin = self.twins.get(p.key)
        if not self.off and twin is not None and twin.result is None:
            self._turn(lambda: _call(
                self.link, twin, trip, False, self.flush,
                max(self.timing.warmup_timeout_s, self.timing.call_timeout_s)))

    def block(self, round_: list[WorkloadRun]) -> None:
        """The reference's block of a round: after an untimed call that warms its worker,
        one timed call of each workload's twin in the round's order, the candidate's
        worker stopped throughout."""
        pairs = [(p, t) for p in round_ if (t := self.twins.get(p.key)) is not None
                 and t.result is None and t.timed_done < self.timing.reps]
        if not self.off and pairs:
            self._turn(lambda: self._timed(pairs))

    def _timed(self, pairs: list[tuple[WorkloadRun, WorkloadRun]]) -> None:
        _rewarm(self.link, pairs[-1][1], self.timing, self.flush)
        for _, twin in pairs:
            if twin.result is not None:
                continue
            if _call(self.link, twin, self.timing.warmup + twin.timed_done + twin.unclocked,
                     True, self.flush):
                twin.timed_done += 1
            else:
                twin.unclocked += 1
                if twin.unclocked > self.timing.reps:
                    twin.finish("failed", "its calls kept starting their clock late (on a "
                                "GPU: the device busy at the flush before them)")
            if self.timing.late_empties and twin.result is None:
                _late_empty(self.link, twin, self.flush)

    def _turn(self, run: Callable[[], object]) -> None:
        """run() with the candidate's worker stopped and the reference's continued; each
        worker's next call starts `idle_before_s` after it was continued (a call right
        after its worker was continued ran 15-35 µs slower on a CPU host)."""
        t0 = held = time.perf_counter_ns()
        candidate = self.candidate_link
        if not self._hold(candidate, "the candidate's worker"):
            candidate.held_ns += time.perf_counter_ns() - held
            return
        try:
            # a stopped worker cannot start a process: what runs beside it now would run
            # beside the reference's calls, on its CPU
            if (n := candidate.children()) > 0:
                self.fault = (f"it left {n} child process(es) running while the reference "
                              "was timed in turns, its worker stopped")
                return
            # ... and it stays stopped unless something continues it (a timer of its own
            # sending it SIGCONT): then it used CPU, or is no longer stopped, at the end
            cpu, threads = candidate.cpu_ns(), candidate.threads()
            self._release(self.link)
            try:
                run()
            except WorkerLost as e:
                self.stop(f"the reference's worker failed: {e.reason}")
            if not self.off:
                self._hold(self.link, "the reference's worker")
            if (candidate.cpu_ns() != cpu or candidate.threads() != threads
                    or not _all_stopped(candidate.worker.pid)
                    or candidate.children() > 0):
                self.fault = ("its worker ran while it was stopped for the reference's turn "
                              "(something continued it)")
        finally:
            self._release(candidate)
            candidate.held_ns += time.perf_counter_ns() - held
            self.phases["turns"] += time.perf_counter_ns() - t0

    def _hold(self, link: WorkerLink, who: str) -> bool:
        """Stop link's worker and wait until every thread of it is stopped. False where it
        cannot be: a candidate's worker that does not stop is its fault (it would choose
        when its times are held against the reference's); the reference's ends the turns."""
        candidate = link is self.candidate_link
        try:
            os.kill(link.worker.pid, signal.SIGSTOP)
        except ProcessLookupError:  # gone: its next call finds the worker lost
            return False
        except OSError as e:
            if candidate:
                self.fault = f"its worker could not be stopped for the reference's turn: {e}"
            else:
                self.stop(f"{who} could not be stopped: {e}")
            return False
        until = time.monotonic() + STOP_WAIT_S
        while not _all_stopped(link.worker.pid):
            if time.monotonic() > until:
                self._release(link)
                if candidate:
                    self.fault = (f"its worker did not stop within {STOP_WAIT_S:g} s for the "
                                  "reference's turn")
                else:
                    self.stop(f"{who} did not stop within {STOP_WAIT_S:g} s")
                return False
            time.sleep(0.0002)
        return True

    @staticmethod
    def _release(link: WorkerLink) -> None:
        """Continue link's worker; its next call starts `idle_before_s` from now."""
        with suppress(OSError):
            os.kill(link.worker.pid, signal.SIGCONT)
        link.woken()

    def close(self) -> None:
        """The reference's worker continued (whatever stopped the turns) and closed."""
        self._release(self.link)
        for twin in self.twins.values():
            twin.release()
        self.link.close()

    def finish(self) -> None:
        for twin in self.twins.values():
            if twin.times:
                twin.finish("ok")
            else:
                late = (f": {twin.unclocked} started their clock late (on a GPU: the device "
                        "busy at the flush before them)" if twin.unclocked else "")
                twin.finish("failed", f"no call of the reference was timed in turns{late}")


@dataclass(eq=False)
class _Reference:
    """In turns: the reference's twins of the workloads, where its solution lies, how its
    worker starts, and why the turns ended, if they did (once ended they stay so)."""

    twins: dict[int, WorkloadRun]
    solution_dir: Path
    launch: Launch
    build_dir: Path
    off: str = ""


def _start_turns(group: list[WorkloadRun], reference: _Reference, candidate: WorkerLink,
                 timing: Timing, rng: random.Random, flush: CacheFlush,
                 worker_cpu: int | None, phases: Counter) -> _Turns | None:
    """The reference's worker for the group, started, calibrated and loaded before the
    candidate's code is: a _Turns that says why it is off where that failed (None, and
    said, where the worker did not even start, or where turns ended in an earlier group:
    once ended they stay so)."""
    t0 = time.monotonic_ns()
    mine = {p.key: reference.twins[p.key] for p in group
            if reference.twins[p.key].result is None}
    if reference.off:
        for twin in mine.values():
            twin.finish("failed", f"not timed in turns: {reference.off}"[:500])
        return None
    try:
        link = WorkerLink(reference.launch(reference.build_dir), timing.call_timeout_s,
                          timing.idle_before_s)
    except Exception as e:  # noqa: BLE001 - the candidate is timed as without turns
        reference.off = f"the reference's worker did not start: {e}"[:300]
        for twin in mine.values():
            twin.finish("failed", reference.off)
        return None
    # its phases are its own, not counted; on a device, its calls allow a gap between
    # staging and clock of turns_gap_s only, so that the flush just before the clock finds
    # the device free: the stopped candidate's kernels would hold the flush up
    link.stage_gap_ns = int(_reference_gap_s(timing) * 1e9)
    turns = _Turns(link, mine, candidate, timing, flush, phases)
    try:
        _prepare_worker(link, list(mine.values()), timing, rng, flush, worker_cpu)
        _, error, _ = _load(link, reference.solution_dir, timing)
        if error:
            turns.stop(f"the reference {error}")
    except Exception as e:  # noqa: BLE001 - the turns end; the worker is closed by the caller
        turns.stop(str(e) or type(e).__name__)
    phases["turns"] += time.monotonic_ns() - t0
    return turns


def _reference_gap_s(timing: Timing) -> float:
    """The gap the reference's calls in turns allow between staging and clock."""
    if torch.device(timing.device).type == "cpu":  # a stopped worker's CPU work stops too
        return timing.stage_gap_s
    return min(timing.stage_gap_s, timing.turns_gap_s)


def _rewarm(link: WorkerLink, p: WorkloadRun, timing: Timing, flush: CacheFlush) -> None:
    """An untimed call of p (fresh inputs, checked) on a worker that was stopped while the
    other ran: what the other left in this CPU's caches is gone before its timed calls."""
    if p.result is None:  # watched: the call's own CPU is no work between calls
        _call(link, p, p.rewarm_trip(timing.warmup, timing.reps), False, flush, watched=True)


def _drive(link: WorkerLink, group: list[WorkloadRun], timing: Timing, rng: random.Random,
           flush: CacheFlush, turns: _Turns | None = None) -> None:
    """Warm-up for every workload of the group, then timed rounds, each in a new shuffled
    order; with `turns`, the reference's block of each round goes before or after the
    candidate's at random, and each block opens with an untimed call. A lost worker raises
    WorkerLost naming the workload whose call it was."""
    current = None
    try:
        for p in group:
            for i in range(timing.warmup):
                if p.result is None:
                    current = p  # the first call of a shape may compile: its allowance
                    if turns is not None:
                        turns.warm(p, i)
                        if turns.fault:
                            p.finish("failed", turns.fault)
                            continue
                    _call(link, p, i, False, flush,
                          max(timing.warmup_timeout_s, timing.call_timeout_s))
        link.baseline_threads = link.threads()
        if turns is not None:
            turns.link.baseline_threads = turns.link.threads()
        while todo := [p for p in group if p.result is None and p.timed_done < timing.reps]:
            order = round_order(todo, rng, current)
            first = turns is not None and rng.random() < 0.5
            if first:
                turns.block(order)
                if turns.fault:
                    for p in group:
                        p.finish("failed", turns.fault)
                    break
            if turns is not None:  # the round's last workload: none is called twice in a row
                current = order[-1]
                _rewarm(link, order[-1], timing, flush)
            for p in order:
                if p.result is None:
                    current = p
                    if _call(link, p, timing.warmup + p.timed_done + p.unclocked, True,
                             flush):
                        p.timed_done += 1
                    else:
                        p.unclocked += 1
                    if p.result is None and p.unclocked > timing.reps:
                        # the gap is this process's flush and message; the worker can lengthen
                        # it only by loading the host, which is its run's to answer for
                        p.finish("failed", f"{p.unclocked} of its calls started their clock "
                                 f"more than {timing.stage_gap_s * 1e3:g} ms after their "
                                 "inputs were staged (the host kept busy between calls)")
                    if timing.late_empties and p.result is None:
                        _late_empty(link, p, flush)
            if turns is not None and not first:
                turns.block(order)
            if turns is not None and turns.fault:
                for p in group:
                    p.finish("failed", turns.fault)
                break
    except WorkerLost as lost:
        lost.culprit = current
        raise
    if turns is not None:
        turns.finish()
    time.sleep(timing.settle_s)
    idle = link.idle_problem(timing.idle_cpu_share, timing.idle_cpu_floor_ms)
    for p in group:
        if not _changed_since_answer(p):
            p.finish("failed", idle) if idle else p.finish("ok")


def _load(link: WorkerLink, solution_dir: Path, timing: Timing) -> tuple[Status, str, str]:
    """Import the solution (compiling it): ("ok", "", "") or the status, the reason it did
    not load and the worker's traceback."""
    t0 = time.monotonic_ns()
    try:
        load = {"op": "load", "path": str(Path(solution_dir).absolute())}
        answer = link.request(load, timing.load_timeout_s)
    except WorkerLost as lost:
        return lost.status, f"did not load: {lost.reason}", ""
    finally:
        link.phases["load"] += time.monotonic_ns() - t0
    if answer["ok"]:
        return "ok", "", ""
    error = str(answer.get("error", "unknown error")).strip() or "unknown error"
    return "failed", f"did not load: {error}", str(answer.get("trace", ""))[-TRACE_CHARS:]


def _prepare_worker(link: WorkerLink, group: list[WorkloadRun], timing: Timing,
                    rng: random.Random, flush: CacheFlush, worker_cpu: int | None) -> None:
    """Before any candidate code: start the worker, open the group's arenas, calibrate.
    A failure here is the evaluator's (an infrastructure fault), so it raises."""
    t0 = time.monotonic_ns()
    try:
        answer = link.request({"op": "init", "device": timing.device,
                               "threads": timing.threads, "cpu": worker_cpu},
                              timing.load_timeout_s)
        if not answer["ok"]:
            raise RuntimeError(f"the worker did not start: {answer.get('error', '')}")
        for p in group:
            _open(link, p)
        _calibrate(link, group, timing, rng, flush)
    except WorkerLost as lost:
        raise RuntimeError(f"the worker failed before any candidate code: {lost.reason}"
                           ) from None
    finally:
        link.phases["start"] += time.monotonic_ns() - t0


def pinned_cpus(timing: Timing) -> tuple[int, int] | None:
    """(the trusted side's CPU, the worker's): the last two CPUs this thread may use, away
    from CPU 0 (where a host's interrupts and housekeeping tend to land) wherever there are
    more than two; None where the timing does not pin, its worker uses more than one
    thread (they would share one CPU), or this thread has a single CPU. One evaluation at
    a time: evaluations run side by side (a prewarm's) do not pin."""
    if not timing.pin_cpus or timing.threads != 1 or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[-1], cpus[-2]) if len(cpus) >= 2 else None


# polls at SCHED_IDLE on the CPU given, once it says so; dies with the thread that started it
_SPINNER = """import ctypes, os, sys
ctypes.CDLL(None).prctl(1, 9)
os.sched_setaffinity(0, {int(sys.argv[1])})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
sys.stdout.write("polling\\n")
sys.stdout.flush()
while True:
    pass
"""


POLLER_START_S = 10.0  # how long the poller may take to say it polls


@contextmanager
def awake_on(cpu: int | None):
    """While inside, a process polls on `cpu` at the lowest priority there is (SCHED_IDLE),
    so that the CPU never halts: any other thread woken there preempts it at once. The
    worker sleeps in the kernel between its calls, through the pause, the staging and the
    flush; on a virtual machine a halted CPU is woken through the hypervisor, late, and
    what runs on it then runs slowly for a while (an H100 host: one small kernel launched
    and waited for took 106 µs after 2 ms asleep, 80 µs with this poller, 14-23 µs with no
    pause; RESULTS.md). Yields a dict whose "said" is what was done: "" (no CPU given),
    "polling on CPU n" (with ", until it exited early" where it did), or "not polling:
    why": the evaluation goes on either way, and says which."""
    state = {"said": ""}
    if cpu is None:
        yield state
        return
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SPINNER, str(cpu)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        ready = select.select([proc.stdout], [], [], POLLER_START_S)[0]
        said = os.read(proc.stdout.fileno(), 64).strip() if ready else b""  # one write
        if said == b"polling":
            state["said"] = f"polling on CPU {cpu}"
        else:
            why = _stop(proc) or (f"it did not start within {POLLER_START_S:g} s"
                                  if not ready else f"it said {said[:40]!r}" if said
                                  else "it exited")
            state["said"], proc = f"not polling: {why[:200]}", None
    except BaseException as e:  # the poller is reaped whatever stopped its start
        if proc is not None:
            _stop(proc)
        if not isinstance(e, OSError):
            raise
        state["said"], proc = f"not polling: {e}", None
    try:
        yield state
    finally:
        if proc is not None:
            early = proc.poll()
            _stop(proc)
            if early is not None:
                state["said"] += f", until it exited early (status {early})"


def _stop(proc) -> str:
    """Kill and reap the poller; the last line of what it said on stderr, if any."""
    proc.kill()
    try:
        _, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        err = b""
        proc.wait()
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    lines = (err or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


@contextmanager
def _pinned(cpu: int | None):
    """This thread on `cpu` alone while inside (Linux applies it to the calling thread)."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _run_all(solution_dir: Path, work: list[WorkloadRun], timing: Timing, launch: Launch,
             build_dir: Path, rng: random.Random, phases: Counter,
             worker_cpu: int | None = None, reference: _Reference | None = None
             ) -> tuple[str, str]:
    """Every workload to a result: a worker for each group of workloads (and again for the
    rest of a group when one is lost, at most max_restarts times), with `reference` the
    reference's worker beside it in turns. Returns (why the solution did not load, or "";
    the workers' log tail)."""
    nbytes = timing.flush_bytes if timing.flush_bytes is not None else 2 * cache_bytes(
        timing.device)
    flush, restarts, logs = CacheFlush(timing.device, nbytes), 0, []
    load_error = trace = ""
    share = 2 if reference is not None else 1  # the twins' arenas beside the candidate's
    while pending := [p for p in work if p.result is None]:
        group = groups(pending, timing.group_mb * 2**20 / share)[0]
        t0 = time.monotonic_ns()
        link = WorkerLink(launch(build_dir), timing.call_timeout_s, timing.idle_before_s)
        link.phases, link.stage_gap_ns = phases, int(timing.stage_gap_s * 1e9)
        phases["start"] += time.monotonic_ns() - t0
        turns = None
        try:
            _prepare_worker(link, group, timing, rng, flush, worker_cpu)
            if reference is not None:
                turns = _start_turns(group, reference, link, timing, rng, flush, worker_cpu,
                                     phases)
            status, load_error, trace = _load(link, solution_dir, timing)
            if load_error:
                for p in pending:
                    p.finish(status, load_error.splitlines()[0][:500])
                break
            _drive(link, group, timing, rng, flush, turns)
        except WorkerLost as lost:
            for p in [lost.culprit] if lost.culprit is not None else group:
                p.finish(lost.status, lost.reason)
            for p in group:  # the rest start over in the next worker, on inputs never seen
                p.restart([rng.getrandbits(63) for _ in p.seeds])
                if reference is not None:
                    twin = reference.twins[p.key]
                    twin.restart([rng.getrandbits(63) for _ in twin.seeds])
            restarts += 1
            if restarts > timing.max_restarts:
                for p in work:
                    p.finish("failed", f"not run: the worker was lost {restarts} times")
        finally:
            try:
                if turns is not None:  # first: it continues the reference's worker
                    turns.close()
                    reference.off = reference.off or turns.off
            finally:
                for p in group:
                    p.release()
                logs.append(link.close())
    return load_error, "\n".join(x for x in [*logs, trace] if x)[-2 * TRACE_CHARS:]


def evaluate_problem(
    problem: Problem,
    solution_dir: Path,
    timing: Timing | None = None,
    *,
    workloads: Sequence[Workload] | None = None,
    launch: Launch = launch_subprocess,
    build_dir: Path | None = None,
    seed: int | None = None,
    reference_launch: Launch = launch_subprocess,
) -> ProblemEval:
    """Evaluate solution_dir/solution.py on the problem's workloads (or those given). The
    candidate's faults never raise: they come back as statuses with reasons. `seed` fixes
    the inputs (by default a secret one); `build_dir` is where its kernels compile (by
    default a folder made and removed here). In turns (timing.paired), the reference's
    worker is started with `reference_launch`, here: it runs trusted code."""
    timing = timing or Timing()
    started = time.monotonic()
    rng = random.Random(seed if seed is not None else secrets.randbits(64))
    entry = reference_entry(problem)
    results: dict[int, WorkloadEval] = {}
    work: list[WorkloadRun] = []
    for key, w in enumerate(problem.workloads if workloads is None else workloads):
        if (reason := skip_reason(problem, w)) is not None:
            results[key] = WorkloadEval(uuid=w.uuid, axes=dict(w.axes), status="skipped",
                                        reason=reason)
            continue
        w = shrink(problem, w, timing.max_elements) if timing.max_elements else w
        size = estimate_bytes(problem, w)
        copies = batch_copies(size, timing.batch, timing.batch_mb * 2**20)
        # warm-up and timed round trips, and as many again for timed ones not counted; in
        # turns, one untimed call a round besides (_rewarm)
        rewarms = 2 * timing.reps + 1 if timing.paired else 0
        seeds = [rng.getrandbits(63)
                 for _ in range((timing.warmup + 2 * timing.reps + rewarms) * copies)]
        work.append(WorkloadRun(problem=problem, workload=w, key=key, entry=entry,
                                device=timing.device, threads=timing.threads, seeds=seeds,
                                size=size, copies=copies))
    own_build, awake = build_dir is None, {"said": ""}
    build = Path(tempfile.mkdtemp(prefix="solexec-build-")) if own_build else Path(build_dir)
    phases: Counter = Counter()
    reference = None
    if timing.paired and work:
        folder = Path(tempfile.mkdtemp(prefix="solexec-turns-"))
        twins = {p.key: WorkloadRun(
            problem=problem, workload=p.workload, key=p.key, entry=entry, device=timing.device,
            threads=timing.threads, seeds=[rng.getrandbits(63) for _ in p.seeds], size=p.size,
            copies=p.copies) for p in work}
        reference = _Reference(twins, reference_solution(problem, folder / "solution"),
                               reference_launch, folder / "build")
    try:
        pins = pinned_cpus(timing)
        with _pinned(pins[0] if pins else None), awake_on(
                pins[1] if pins and timing.awake_cpu and work else None) as awake:
            load_error, log = _run_all(Path(solution_dir), work, timing, launch, build, rng,
                                       phases, pins[1] if pins else None, reference
                                       ) if work else ("", "")
    finally:
        for p in work:
            p.release()
        if own_build:
            shutil.rmtree(build, ignore_errors=True)
        if reference is not None:
            for twin in reference.twins.values():
                twin.release()
            shutil.rmtree(reference.build_dir.parent, ignore_errors=True)
    for p in work:
        results[p.key] = p.result
        if reference is not None and p.result is not None:
            results[p.key] = _with_turns(p.result, reference.twins[p.key])
    return ProblemEval(
        problem=problem.key, device=timing.device, workloads=[results[k] for k in sorted(results)],
        load_error=load_error, log_tail=log, wall_s=round(time.monotonic() - started, 3),
        phase_s={k: round(v / 1e9, 3) for k, v in sorted(phases.items())},
        awake=awake["said"],
        paired="" if reference is None else "in turns with the reference" + (
            f" until: {reference.off}" if reference.off else ""),
    )  # fmt: skip


def _with_turns(result: WorkloadEval, twin: WorkloadRun) -> WorkloadEval:
    """The candidate's result with the reference's time in turns, or why there is none."""
    done = twin.result
    if done is not None and done.status == "ok" and done.time_ns:
        return result.model_copy(update={"reference_ns": done.time_ns,
                                         "reference_calls": len(done.times_ns)})
    why = done.reason if done is not None else "the reference was not timed in turns"
    return result.model_copy(update={"reference_note": why[:300]})


def reference_solution(problem: Problem, dest: Path) -> Path:
    """The problem's reference written as a solution (dest/solution.py). Evaluated as a
    candidate is, through the same path, it gives the baseline T_b."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "solution.py").write_text(problem.reference)
    return dest
