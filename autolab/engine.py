"""Slots, and the engine that places trials on them: Dask distributed.

A slot runs one trial at a time: one GPU, a group of GPUs for a multi-GPU benchmark, or a
share of the CPU cores for a CPU benchmark. Each slot is a Dask worker holding one unit of
the `slot` resource, so Dask's scheduler - not autolab - decides which trial runs where and
when; a worker started on another host adds that host's slots to the campaign (README:
"Many hosts"). A slot's GPUs come from its worker's name: `gpu3` (or `host-a/gpu3`) is a
slot whose trials start at GPU 3; `cpu0` is a CPU slot.

The orchestrator keeps the archive and Prefect's cache: a worker receives only what its
trial needs (the candidate's files, seed, split, the trial setup and the data path) and
returns the trial's record. It never sees the archive, the params or any key.

The engine also keeps each slot's duty cycle: it samples the scheduler a few times a second
for the slots that are running a trial, and, for each idle one, the reason the
orchestrator's `Activity` gives (a trial waiting for the engine, a proposal being made, a
decision being taken, the run draining).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from autolab.records import Split, Trial, now

SLOT = "slot"  # the Dask worker resource each slot holds one of
WAIT_STEP_S = 10.0  # how often a waiting trial checks that slots are left
NO_SLOT_S = 120.0  # a trial with no slot to go to for this long is an infrastructure fault
IDLE_REASONS = ("engine", "proposal", "decision", "stopping", "orchestrator")


@dataclass(frozen=True)
class Slot:
    name: str
    gpu: int | None  # the slot's first GPU; None for a CPU slot


def parse_slot(name: str) -> Slot:
    """`gpu3`, `host-a/gpu3`: GPUs from 3 on; anything else (`cpu0`) a CPU slot."""
    m = re.search(r"(?:^|/)gpu(\d+)$", str(name))
    return Slot(str(name), int(m.group(1)) if m else None)


def visible_gpus() -> list[int]:
    """The GPUs this host may use, by index: CUDA_VISIBLE_DEVICES if set (indices only),
    else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        items = [g.strip() for g in env.split(",") if g.strip()]
        if not all(g.isdigit() for g in items):
            raise ValueError(f"CUDA_VISIBLE_DEVICES={env!r}: give GPU indices, not UUIDs, "
                             "for the engine's slots")
        return [int(g) for g in items]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    listed = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return list(range(len(listed)))


def local_slots(hardware: str, count: int | None, gpus_per_slot: int, cpu_slots: int,
                gpus: list[int] | None = None) -> list[Slot]:
    """This host's slots: for a GPU benchmark, its GPUs (CUDA_VISIBLE_DEVICES's, or all)
    in groups of `gpus_per_slot` of consecutive indices (all of them unless `count` is
    given); for a CPU benchmark, `count` or `cpu_slots` shares of the cores."""
    if hardware == "gpu":
        have = visible_gpus() if gpus is None else gpus
        groups = [have[i:i + gpus_per_slot] for i in range(0, len(have), gpus_per_slot)]
        groups = [g for g in groups if len(g) == gpus_per_slot
                  and g == list(range(g[0], g[0] + gpus_per_slot))]
        if count is not None:
            if count > len(groups):
                raise ValueError(f"engine.slots={count} needs {count * gpus_per_slot} GPUs "
                                 f"(in groups of consecutive indices); this host has {have}")
            groups = groups[:count]
        if not groups:  # no GPU at all: one slot, whose trial reports the missing GPU
            return [Slot("gpu0", 0)]
        return [Slot(f"gpu{g[0]}", g[0]) for g in groups]
    return [Slot(f"cpu{i}", None) for i in range(count or cpu_slots)]


# -- the trial a slot runs ---------------------------------------------------------------------


class TrialJob(BaseModel):
    """Everything a slot needs for one trial, and nothing more."""

    benchmark: str
    candidate_id: str
    files: dict[str, str]
    seed: int
    split: Split
    setup: dict  # runner.TrialSetup, as JSON: what the head host's trials share
    work_root: str
    prepared_dir: str
    cache_root: str | None = None

    @property
    def trial_id(self) -> str:
        from autolab.runner import TrialSetup

        return Trial.key(self.candidate_id, self.seed, self.split,
                         TrialSetup.model_validate(self.setup).key())


def run_job(job: TrialJob) -> Trial:
    """Runs on a Dask worker: the trial on this worker's slot, in the sandbox."""
    from distributed import get_worker

    from autolab.runner import TrialSetup, run_trial
    from benchmarks import get_benchmark

    slot = parse_slot(get_worker().name)
    bench = get_benchmark(job.benchmark)
    trial = run_trial(
        bench, job.candidate_id, job.files, job.seed, job.split,
        TrialSetup.model_validate(job.setup), work_root=Path(job.work_root),
        prepared_dir=Path(job.prepared_dir), gpu=slot.gpu,
        cache_root=Path(job.cache_root) if job.cache_root else None,
    )  # fmt: skip
    return trial.model_copy(update={"slot": slot.name})


# -- what the orchestrator is doing, for the idle slots' reasons -------------------------------


class Activity:
    """Counts of iterations in each phase, set by the campaign as they go."""

    RATE_WINDOW_S = 120.0  # returned trials counted over this long for the rate
    LATENCIES = 16  # proposals whose time to a built candidate is the latency's median

    def __init__(self, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._phases: Counter[str] = Counter()
        self._pending = 0  # trials asked for and not yet returned (queued, placed or running)
        self._unproposed: dict[int, float] = {}  # iterations started, their candidate not
        # built yet, with when they started
        self._returned: deque[float] = deque()  # when trials came back, the last window's
        self._latencies: deque[float] = deque(maxlen=self.LATENCIES)
        self._first_ask: float | None = None
        # the run's stage: "start" (before the first iteration), "research" (iterations
        # being started), "stopping" (a stop reached: those in flight finish, then
        # confirmation)
        self.stage = "start"

    def starting(self, index: int) -> None:
        """Iteration `index` was started: until `proposed`, its trials are still to come."""
        with self._lock:
            self._unproposed.setdefault(index, self._clock())

    def proposed(self, index: int) -> None:
        """Iteration `index` has its candidate built (or ended without one)."""
        with self._lock:
            started = self._unproposed.pop(index, None)
            if started is not None:
                self._latencies.append(self._clock() - started)

    @property
    def proposing(self) -> int:
        """Iterations started whose candidates are not built yet."""
        with self._lock:
            return len(self._unproposed)

    def asked(self, n: int, returned: bool = True) -> None:
        """n more trials asked for (negative: returned; `returned=False`: given up on,
        which the rate of returned trials does not count)."""
        with self._lock:
            self._pending += n
            if n > 0 and self._first_ask is None:
                self._first_ask = self._clock()
            if n < 0 and returned:
                now = self._clock()
                self._returned.extend([now] * -n)
                self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        """Drop the returns older than the rate's window (the lock held)."""
        while self._returned and self._returned[0] < now - self.RATE_WINDOW_S:
            self._returned.popleft()

    def ending_soon(self) -> int:
        """Trials the slots will hand back while one more proposal is being made: the rate
        at which trials came back over the last window times the median time from an
        iteration's start to its built candidate. A queue that covers them keeps the slots
        busy through a proposer's thinking (0 until both have been seen)."""
        with self._lock:
            now = self._clock()
            self._forget_old(now)
            if not self._returned or not self._latencies or self._first_ask is None:
                return 0
            span = max(min(now - self._first_ask, self.RATE_WINDOW_S), 1.0)
            latency = sorted(self._latencies)[len(self._latencies) // 2]
            return math.ceil(len(self._returned) / span * latency)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self._lock:
            self._phases[name] += 1
        try:
            yield
        finally:
            with self._lock:
                self._phases[name] -= 1

    def idle_reason(self, waiting_for_engine: int) -> str:
        """Why a slot with nothing to run is idle, most specific first."""
        with self._lock:
            phases, proposing = +self._phases, bool(self._unproposed)
        if waiting_for_engine > 0:
            return "engine"
        if proposing:
            return "proposal"
        if phases.get("decision"):
            return "decision"
        return "stopping" if self.stage == "stopping" else "orchestrator"


def more_iterations(slots: int, busy: int, waiting: int, proposing: int, running: int,
                    per_iteration: int, ahead: int, cap: int | None = None) -> bool:
    """Whether the campaign should start another iteration now: while the trials waiting
    for a slot, and those the proposals being made will bring (`per_iteration` each), do
    not cover the free slots plus `ahead` iterations' worth. At most slots + ahead
    iterations run at once (or `cap`)."""
    if running == 0:
        return True
    if running >= (cap if cap is not None else slots + ahead):
        return False
    coming = waiting + proposing * per_iteration
    return coming < (slots - busy) + ahead * per_iteration


# -- duty cycle ---------------------------------------------------------------------------------


class SlotUsage(BaseModel):
    slot: str
    busy_s: float = 0.0
    idle_s: dict[str, float] = Field(default_factory=dict)  # by reason
    trials: int = 0

    @property
    def total_s(self) -> float:
        return self.busy_s + sum(self.idle_s.values())

    @property
    def duty_cycle(self) -> float | None:
        return self.busy_s / self.total_s if self.total_s > 0 else None


class Usage(BaseModel):
    """One run's slots: busy and idle seconds (by reason) from samples every `interval_s`;
    over the whole run, and over its research stage alone (from the first iteration, which
    starts beside the seed's baseline, to the stop: without the draining and the
    confirmation)."""

    started: float  # unix time
    ended: float
    interval_s: float
    slots: list[SlotUsage] = Field(default_factory=list)
    research: list[SlotUsage] = Field(default_factory=list)
    trials: int = 0
    trial_overhead_s: float | None = Field(
        None, description="mean of (the engine's time from submit to result) - (the trial's "
        "own wall time): what placing a trial on a slot costs")

    def duty_cycle(self, research: bool = False) -> float | None:
        slots = self.research if research else self.slots
        total = sum(s.total_s for s in slots)
        return sum(s.busy_s for s in slots) / total if total > 0 else None


@dataclass
class _Monitor:
    interval_s: float
    started: float = field(default_factory=time.time)
    slots: dict[str, SlotUsage] = field(default_factory=dict)
    research: dict[str, SlotUsage] = field(default_factory=dict)

    def add(self, busy: dict[str, bool], reason: str, dt: float, stage: str) -> None:
        for name, is_busy in busy.items():
            for table in (self.slots, self.research) if stage == "research" else (self.slots,):
                u = table.setdefault(name, SlotUsage(slot=name))
                if is_busy:
                    u.busy_s += dt
                else:
                    u.idle_s[reason] = u.idle_s.get(reason, 0.0) + dt


# -- the engine --------------------------------------------------------------------------------


@dataclass
class _Placed:
    """A trial placed on the engine: its Dask future, and whether the request that placed
    it has recorded it (the error if that failed)."""

    future: object
    kept: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Engine:
    """A Dask client on this host's slots (a local in-process cluster) or on a scheduler
    that workers on many hosts joined (`address`)."""

    def __init__(self, slots: list[Slot] | None = None, address: str | None = None,
                 activity: Activity | None = None, interval_s: float = 0.2):
        from distributed import Client

        if address is None and not slots:
            raise ValueError("an engine needs local slots or a scheduler address")
        self.activity = activity or Activity()
        self.cluster = None
        if address is None:
            self.cluster = _local_cluster(slots or [])
            self.client = Client(self.cluster, set_as_default=False)
        else:
            self.client = Client(address, set_as_default=False, timeout=60)
        self._lock = threading.Lock()
        self._running: dict[str, _Placed] = {}  # trial id -> its placement
        self._overheads: list[float] = []
        self._trials: Counter[str] = Counter()
        self._research_trials: Counter[str] = Counter()  # those that ended in that stage
        self._monitor = _Monitor(interval_s)
        self._last: tuple[int, int, int] = (0, 0, 0)  # slots, busy, waiting: the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="autolab-duty-cycle",
                                        daemon=True)
        self._thread.start()

    # -- placing trials

    def slot_names(self) -> list[str]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return sorted(str(w.get("name")) for w in workers if w.get("resources", {}).get(SLOT))

    def run(self, job: TrialJob, lookup: Callable[[], Trial | None] = lambda: None,
            keep: Callable[[Trial], None] = lambda trial: None) -> Trial:
        """The trial on the first free slot; blocks until it is done. Two iterations asking
        for the same trial at once (a parent both re-run on one seed) share one run. An
        infrastructure fault (a worker lost twice, an exception outside the candidate) is
        raised.

        `lookup` finds the trial already recorded and `keep` records it: the run that placed
        the trial keeps it before others may ask for it afresh, and a request that finds it
        neither running nor recorded is the only one that places it again, so a trial that
        ends while another iteration asks for it is never run twice."""
        t0, submitted = time.monotonic(), now()
        with self._lock:
            placed = self._running.get(job.trial_id)
            if placed is None and (recorded := lookup()) is not None:
                return recorded
            owner = placed is None
            if owner:
                key = f"trial-{job.trial_id}-{uuid.uuid4().hex[:8]}"
                placed = _Placed(self.client.submit(run_job, job, key=key, pure=False,
                                                    resources={SLOT: 1}))
                self._running[job.trial_id] = placed
        if not owner:  # the run is shared, and so is whether it was recorded
            trial = self._result(placed.future)
            placed.kept.wait()
            if placed.error is not None:
                raise RuntimeError(f"trial {job.trial_id} ran but could not be recorded: "
                                   f"{placed.error}") from placed.error
            return trial
        try:
            trial = self._result(placed.future)
            self._count(trial, t0, submitted)
            keep(trial)
        except BaseException as err:
            placed.error = err
            raise
        finally:
            placed.kept.set()
            with self._lock:
                self._running.pop(job.trial_id, None)
        return trial

    def _count(self, trial: Trial, t0: float, submitted) -> None:
        """What the engine adds to a trial: from submit to result, less the time queued for
        a free slot (to the trial's start on it) and the trial's own time."""
        queued = max(0.0, (trial.started_at - submitted).total_seconds())
        with self._lock:
            self._overheads.append(max(0.0, time.monotonic() - t0 - queued - trial.wall_s))
            self._trials[trial.slot] += 1
            if self.activity.stage == "research":
                self._research_trials[trial.slot] += 1

    def _result(self, future) -> Trial:
        """The future's trial; raised if no slot is left to run it for NO_SLOT_S (every
        worker gone, or none joined the scheduler), instead of waiting for ever."""
        from distributed import TimeoutError as DaskTimeout

        slotless = 0.0
        while True:
            try:
                return future.result(timeout=WAIT_STEP_S)
            except (DaskTimeout, TimeoutError):
                slotless = slotless + WAIT_STEP_S if not self.slot_names() else 0.0
                if slotless >= NO_SLOT_S:
                    future.cancel()
                    raise RuntimeError(f"no slot to run a trial on for {NO_SLOT_S:.0f} s: "
                                       "every worker of the engine is gone") from None

    # -- duty cycle

    def _busy(self) -> tuple[dict[str, bool], int]:
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        processing = self.client.processing()
        busy = {str(w.get("name")): bool(processing.get(addr)) for addr, w in info.items()
                if w.get("resources", {}).get(SLOT)}
        running = sum(busy.values())
        return busy, max(0, self.activity.pending - running)

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._monitor.interval_s):
            try:
                busy, waiting = self._busy()
            except Exception:  # noqa: BLE001 - a scheduler going away ends the sampling
                if self._stop.is_set():
                    return
                continue
            now = time.monotonic()
            reason = self.activity.idle_reason(waiting)
            with self._lock:
                self._monitor.add(busy, reason, now - last, self.activity.stage)
                self._last = (len(busy), sum(busy.values()), waiting)
            last = now

    def load(self) -> tuple[int, int, int]:
        """(slots, slots running a trial, trials waiting for a slot) at the last sample."""
        return self._last

    def usage(self) -> Usage:
        with self._lock:
            overheads = list(self._overheads)
            trials = Counter(self._trials)
            slots = [s.model_copy(update={"trials": trials.get(s.slot, 0)}, deep=True)
                     for _, s in sorted(self._monitor.slots.items())]
            done = Counter(self._research_trials)
            research = [s.model_copy(update={"trials": done.get(s.slot, 0)}, deep=True)
                        for _, s in sorted(self._monitor.research.items())]
        return Usage(started=self._monitor.started, ended=time.time(),
                     interval_s=self._monitor.interval_s, slots=slots, research=research,
                     trials=len(overheads),
                     trial_overhead_s=sum(overheads) / len(overheads) if overheads else None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _local_cluster(slots: list[Slot]):
    """An in-process Dask cluster: one single-threaded worker per slot, named after it. The
    trials themselves run in sandboxed processes; the workers only start and await them."""
    import logging

    import dask
    from distributed import Scheduler, SpecCluster, Worker

    logging.getLogger("distributed").setLevel(logging.ERROR)
    # every in-process worker would sample the host's CPU, memory, disk and network twice a
    # second, its own stacks every 10 ms (the profiler) and its event loop's lag every
    # 20 ms: with many slots that costs more than the trials' own orchestration
    dask.config.set({"distributed.admin.system-monitor.interval": "10s",
                     "distributed.worker.profile.enabled": False,
                     "distributed.admin.tick.interval": "1s",
                     "distributed.admin.system-monitor.disk": False,
                     "distributed.admin.system-monitor.host-cpu": False,
                     "distributed.worker.memory.monitor-interval": "10s",
                     "distributed.scheduler.http.routes": [],
                     "distributed.worker.http.routes": []})
    workers = {
        s.name: {"cls": Worker, "options": {"nthreads": 1, "name": s.name,
                                             "resources": {SLOT: 1}, "memory_limit": 0,
                                             "dashboard": False,
                                             "dashboard_address": "127.0.0.1:0"}}
        for s in slots
    }
    # in-process transport, no dashboards: the cluster serves nothing on the network (Dask
    # still opens its HTTP listeners; they are bound to 127.0.0.1 and given no route)
    scheduler = {"cls": Scheduler, "options": {"protocol": "inproc://", "dashboard": False,
                                               "dashboard_address": "127.0.0.1:0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.ERROR,
                       name="autolab")
