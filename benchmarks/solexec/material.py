"""The trusted material of one workload's calls: what each call is given and must give back.

Each call has a `Draw`: inputs made from the call's own seed (secret, fresh for every
call), the reference's outputs on a copy of them, and the inputs the reference itself wrote
into (a KV cache updated in place: a candidate may write there too, and its outputs are
what is judged). A draw is made just before its call, outside the clock, and only the
current ones are kept. One round trip to the worker may carry several calls of a
workload (`copies`, see evaluate.py): each has its own arena (transport.py), holding that
call's inputs and outputs, and its own draw. The arenas exist while the workload's group
is evaluated (evaluate.py), so the trusted side holds, per workload of the group, `copies`
arenas and draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.solexec import transport
from benchmarks.solexec.link import net_time
from benchmarks.solexec.problems import (
    Problem,
    Workload,
    make_inputs,
    resolve_axes,
    run_reference,
    tensor_shape,
    torch_dtype,
)
from benchmarks.solexec.results import Status, WorkloadEval

_NAN_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16,
                         torch.float8_e4m3fn, torch.float8_e5m2})


@dataclass(frozen=True)
class Draw:
    values: list[object]  # the call's inputs in definition order: pristine, private
    want: list[torch.Tensor]  # the reference's outputs on a copy of them
    written: frozenset[str]  # inputs the reference wrote into


def draw(problem: Problem, workload: Workload, seed: int, scalars: dict, entry: Callable,
         device: str, threads: int) -> Draw:
    """On CPU the reference runs with the worker's number of threads: a reduction split
    another way gives bf16 results further apart than some tolerances allow, and the
    reference run as a solution must reproduce itself."""
    names = list(problem.inputs)
    made = make_inputs(problem, workload, seed=seed, device=device)
    values = [scalars.get(n, made[n]) for n in names]  # scalars are the workload's, fixed
    copies = [v.clone() if isinstance(v, torch.Tensor) else v for v in values]
    before = torch.get_num_threads()
    try:
        if torch.device(device).type == "cpu":
            torch.set_num_threads(threads)
        out = run_reference(problem, dict(zip(names, copies, strict=True)), entry)
    finally:
        torch.set_num_threads(before)
    written = frozenset(n for n, v, c in zip(names, values, copies, strict=True)
                        if isinstance(v, torch.Tensor) and not same_bytes(v, c))
    return Draw(values, [t.to(device).contiguous() for t in out], written)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(transport.as_bytes(a), transport.as_bytes(b))


def estimate_bytes(problem: Problem, workload: Workload) -> int:
    """An arena's size from the declared shapes: one call's inputs and outputs."""
    axes = resolve_axes(problem, workload)
    total = 0
    for spec in [*problem.inputs.values(), *problem.outputs.values()]:
        shape = tensor_shape(spec, axes)
        if shape is not None:
            try:
                itemsize = torch_dtype(spec.dtype).itemsize
            except ValueError:
                itemsize = 1
            total += math.prod(shape) * itemsize
    return total


def batch_copies(size: int, most: int, batch_bytes: float) -> int:
    """How many calls of a workload one round trip carries: `most`, fewer where their arenas
    together would pass batch_bytes, never fewer than one."""
    return max(1, min(int(most), int(batch_bytes // max(1, size))))


@dataclass(eq=False)
class Copy:
    """One call's place in a round trip: its own arena, the views on it, and what its
    output slots held at the last answer."""

    key: str  # the worker's name for it
    arena: transport.HostArena | transport.DeviceArena | None = None
    in_views: list[torch.Tensor | None] = field(default_factory=list)
    out_views: list[torch.Tensor] = field(default_factory=list)
    snapshot: list[torch.Tensor] | None = None

    def release(self) -> None:
        if self.arena is not None:
            self.arena.close()
        self.arena, self.snapshot, self.in_views, self.out_views = None, None, [], []


@dataclass(eq=False)
class WorkloadRun:
    """One workload's material and progress through an evaluation. Its calls go `copies`
    to a round trip: call c of the run is the round trip's copy c % copies, and the seeds
    are one per call (warm-up round trips first, then the timed ones)."""

    problem: Problem
    workload: Workload
    key: int
    entry: Callable
    device: str
    threads: int
    seeds: list[int]  # one per call: (warm-up + timed round trips) x copies
    size: int  # estimated arena bytes of one call
    copies: int = 1  # calls per round trip
    scalars: dict[str, object] = field(default_factory=dict)
    out_shapes: list[tuple[torch.dtype, tuple[int, ...]]] | None = None
    current: tuple[int, list[Draw]] | None = None  # a round trip's draws
    inputs: list[tuple[str, object]] = field(default_factory=list)  # each copy's layout,
    outputs: list[transport.Slot] = field(default_factory=list)  # for `open`
    slots: list[Copy] = field(default_factory=list)
    writable: set[str] = field(default_factory=set)
    times: list[int] = field(default_factory=list)
    empties: list[int] = field(default_factory=list)
    late_empties: list[int] = field(default_factory=list)  # timed between the calls
    timed_done: int = 0
    unclocked: int = 0  # timed round trips whose clock started too long after the staging
    rewarmed: int = 0  # untimed round trips between timed ones (evaluate.py, in turns)
    calls: int = 0
    worst_abs: float = 0.0
    worst_rel: float = 0.0
    result: WorkloadEval | None = None

    @property
    def keys(self) -> list[str]:
        """The worker's names for this workload's copies, in the order a round trip runs
        them."""
        return [c.key for c in self.slots]

    def _draw_one(self, index: int) -> Draw:
        d = draw(self.problem, self.workload, self.seeds[index], self.scalars, self.entry,
                 self.device, self.threads)
        shapes = [(t.dtype, tuple(t.shape)) for t in d.want]
        if self.out_shapes is not None and shapes != self.out_shapes:
            raise ValueError("the reference's output shapes change with the input values")
        self.out_shapes = shapes
        if not self.scalars:
            self.scalars = {n: v for n, v in zip(self.problem.inputs, d.values, strict=True)
                            if not isinstance(v, torch.Tensor)}
        return d

    def draws(self, trip: int) -> list[Draw]:
        """Round trip `trip`'s draws, one per copy (only the current trip's are kept)."""
        if self.current is None or self.current[0] != trip:
            self.current = None  # the previous trip's go before the next ones are made
            made = [self._draw_one(trip * self.copies + j) for j in range(self.copies)]
            self.current = (trip, made)
        for d in self.current[1]:
            self.writable |= d.written
        return self.current[1]

    def materialise(self) -> None:
        """The arenas laid out from the first round trip's draws, one per copy, and the
        views on them. Raises when the reference cannot run the workload."""
        first = self.draws(0)[0]
        tensors = [(i, v) for i, v in enumerate(first.values) if isinstance(v, torch.Tensor)]
        plan, size = transport.plan([(v.dtype, tuple(v.shape)) for _, v in tensors]
                                    + list(self.out_shapes or []))
        by_index = dict(zip([i for i, _ in tensors], plan, strict=False))
        self.inputs = [("tensor", by_index[i]) if i in by_index else ("scalar", v)
                       for i, v in enumerate(first.values)]
        self.outputs = plan[len(tensors):]
        self.slots = []
        for j in range(self.copies):
            c = Copy(key=f"{self.key}.{j}")
            self.slots.append(c)
            c.arena = transport.new_arena(size, self.device)
            c.in_views = [transport.view(c.arena.tensor, by_index[i]) if i in by_index
                          else None for i in range(len(first.values))]
            c.out_views = [transport.view(c.arena.tensor, s) for s in self.outputs]

    def rewarm_trip(self, warmup: int, reps: int) -> int:
        """The next untimed round trip between timed ones: after every warm-up and timed
        trip the seeds hold (warm-up, then twice `reps`)."""
        self.rewarmed += 1
        return warmup + 2 * reps + self.rewarmed - 1

    def restart(self, seeds: list[int]) -> None:
        """Start the calls over, on new seeds (a new worker replaces a lost one: nothing it
        may have kept, on disk or elsewhere, from the old one's inputs can answer these)."""
        if self.result is None:
            self.seeds, self.current = seeds, None
            for c in self.slots:
                c.snapshot = None
            self.times, self.empties, self.late_empties, self.timed_done = [], [], [], 0
            self.unclocked = self.rewarmed = 0

    def release(self) -> None:
        """Drop the arenas, their views and the current draws (the group is done)."""
        for c in self.slots:
            c.release()
        self.slots, self.current = [], None

    def stage(self, draws: list[Draw]) -> None:
        """Each call's inputs into its copy's slots; poison into the output slots (NaN for
        the floating dtypes that have one, a byte pattern changing with each call
        otherwise)."""
        for j, (c, d) in enumerate(zip(self.slots, draws, strict=True)):
            for view, value in zip(c.in_views, d.values, strict=True):
                if view is not None:
                    transport.as_bytes(view).copy_(transport.as_bytes(value))
            for view in c.out_views:
                if view.dtype in _NAN_DTYPES:
                    fill = 0xFF  # NaN in every one of these formats
                elif view.dtype == torch.bool:
                    fill = (self.calls + j) % 2
                else:
                    fill = 0xA5 ^ ((self.calls + j) % 256)
                transport.as_bytes(view).fill_(fill)

    def finish(self, status: Status, reason: str = "") -> None:
        """The result. A round trip's time less the overhead of one is shared by its
        calls: time_ns is per call, the medians and raw lists are per round trip."""
        if self.result is not None:
            return
        ok = status == "ok"
        time_ns, median, overhead = (net_time(self.times, self.empties, self.late_empties)
                                     if ok else (None,) * 3)
        if time_ns is not None:
            time_ns /= self.copies
        self.result = WorkloadEval(
            uuid=self.workload.uuid, axes=dict(self.workload.axes), status=status,
            reason=reason, time_ns=time_ns, median_ns=median, times_ns=list(self.times),
            overhead_ns=overhead, overhead_times_ns=list(self.empties),
            late_overhead_times_ns=list(self.late_empties),
            max_abs_error=self.worst_abs if self.calls else None,
            max_rel_error=self.worst_rel if self.calls else None, calls_checked=self.calls,
            calls_per_trip=self.copies,
        )  # fmt: skip
