"""The trusted material of one workload's calls: what each call is given and must give back.

Each call has a `Draw`: inputs made from the call's own seed (secret, fresh for every
call), the reference's outputs on a copy of them, and the inputs the reference itself wrote
into (a KV cache updated in place: a candidate may write there too, and its outputs are
what is judged). A draw is made just before its call, outside the clock, and only the
current one is kept. The workload's arena (transport.py) holds one call's inputs and
outputs; it exists while the workload's group is evaluated (evaluate.py), so the trusted
side holds, per workload of the group, one arena and one draw.
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


@dataclass(eq=False)
class WorkloadRun:
    """One workload's material and progress through an evaluation."""

    problem: Problem
    workload: Workload
    key: int
    entry: Callable
    device: str
    threads: int
    seeds: list[int]  # one per call: warm-up, then timed
    size: int  # estimated arena bytes
    scalars: dict[str, object] = field(default_factory=dict)
    out_shapes: list[tuple[torch.dtype, tuple[int, ...]]] | None = None
    current: tuple[int, Draw] | None = None
    arena: transport.HostArena | transport.DeviceArena | None = None
    inputs: list[tuple[str, object]] = field(default_factory=list)  # for `open`
    outputs: list[transport.Slot] = field(default_factory=list)
    in_views: list[torch.Tensor | None] = field(default_factory=list)
    out_views: list[torch.Tensor] = field(default_factory=list)
    writable: set[str] = field(default_factory=set)
    times: list[int] = field(default_factory=list)
    empties: list[int] = field(default_factory=list)
    late_empties: list[int] = field(default_factory=list)  # timed between the calls
    timed_done: int = 0
    calls: int = 0
    worst_abs: float = 0.0
    worst_rel: float = 0.0
    snapshot: list[torch.Tensor] | None = None
    result: WorkloadEval | None = None

    def draw(self, index: int) -> Draw:
        if self.current is None or self.current[0] != index:
            d = draw(self.problem, self.workload, self.seeds[index], self.scalars, self.entry,
                     self.device, self.threads)
            shapes = [(t.dtype, tuple(t.shape)) for t in d.want]
            if self.out_shapes is not None and shapes != self.out_shapes:
                raise ValueError("the reference's output shapes change with the input values")
            self.current, self.out_shapes = (index, d), shapes
            if not self.scalars:
                self.scalars = {n: v for n, v in zip(self.problem.inputs, d.values, strict=True)
                                if not isinstance(v, torch.Tensor)}
        self.writable |= self.current[1].written
        return self.current[1]

    def materialise(self) -> None:
        """The arena laid out from the first call's draw, and the views on it. Raises when
        the reference cannot run the workload."""
        first = self.draw(0)
        tensors = [(i, v) for i, v in enumerate(first.values) if isinstance(v, torch.Tensor)]
        slots, size = transport.plan([(v.dtype, tuple(v.shape)) for _, v in tensors]
                                     + list(self.out_shapes or []))
        self.arena = transport.new_arena(size, self.device)
        by_index = dict(zip([i for i, _ in tensors], slots, strict=False))
        self.inputs = [("tensor", by_index[i]) if i in by_index else ("scalar", v)
                       for i, v in enumerate(first.values)]
        self.outputs = slots[len(tensors):]
        self.in_views = [transport.view(self.arena.tensor, by_index[i]) if i in by_index
                         else None for i in range(len(first.values))]
        self.out_views = [transport.view(self.arena.tensor, s) for s in self.outputs]

    def restart(self, seeds: list[int]) -> None:
        """Start the calls over, on new seeds (a new worker replaces a lost one: nothing it
        may have kept, on disk or elsewhere, from the old one's inputs can answer these)."""
        if self.result is None:
            self.seeds, self.current, self.snapshot = seeds, None, None
            self.times, self.empties, self.late_empties, self.timed_done = [], [], [], 0

    def release(self) -> None:
        """Drop the arena, its views and the current draw (the group is done)."""
        if self.arena is not None:
            self.arena.close()
        self.arena, self.current, self.snapshot = None, None, None
        self.in_views, self.out_views = [], []

    def stage(self, d: Draw) -> None:
        """The call's inputs into their slots; poison into the output slots (NaN for the
        floating dtypes that have one, a byte pattern changing with each call otherwise)."""
        for view, value in zip(self.in_views, d.values, strict=True):
            if view is not None:
                transport.as_bytes(view).copy_(transport.as_bytes(value))
        for view in self.out_views:
            if view.dtype in _NAN_DTYPES:
                fill = 0xFF  # NaN in every one of these formats
            elif view.dtype == torch.bool:
                fill = self.calls % 2
            else:
                fill = 0xA5 ^ (self.calls % 256)
            transport.as_bytes(view).fill_(fill)

    def finish(self, status: Status, reason: str = "") -> None:
        if self.result is not None:
            return
        ok = status == "ok"
        time_ns, median, overhead = (net_time(self.times, self.empties, self.late_empties)
                                     if ok else (None,) * 3)
        self.result = WorkloadEval(
            uuid=self.workload.uuid, axes=dict(self.workload.axes), status=status,
            reason=reason, time_ns=time_ns, median_ns=median, times_ns=list(self.times),
            overhead_ns=overhead, overhead_times_ns=list(self.empties),
            late_overhead_times_ns=list(self.late_empties),
            max_abs_error=self.worst_abs if self.calls else None,
            max_rel_error=self.worst_rel if self.calls else None, calls_checked=self.calls,
        )  # fmt: skip
