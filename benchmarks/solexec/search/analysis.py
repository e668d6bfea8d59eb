"""What the techniques need to know about a problem, worked out once and cached.

`analyse` traces the reference (graph.py) and categorises it (categorise.py). For the
generated Triton kernels it also traces a second workload, with other stand-ins for the
float scalar inputs (`trace_pair`): the second is the listed workload whose var axes differ
most from the first (or a new one drawn like the hidden workloads, where every listed
workload has the same axes), so constants derived from shapes are caught, not baked in.
`why_not` says why no kernel can be generated; the compile techniques do not need it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.solexec.build import smallest_workload
from benchmarks.solexec.hidden import hidden_workloads
from benchmarks.solexec.problems import Problem, Workload, resolve_axes, skip_reason
from benchmarks.solexec.search.categorise import Signature, signature
from benchmarks.solexec.search.graph import Graph, Varying, float_scalars, trace_any, trace_pair


@dataclass(frozen=True)
class Analysis:
    problem: Problem
    signature: Signature
    graph: Graph | None  # the first workload's graph, literals resolved
    twin: Graph | None  # the same reference on the second workload
    first: Workload | None
    second: Workload | None
    why_not: str  # why kernels cannot be generated from the graph ("" when they can)
    data_dependent: bool  # control flow reads tensor values (traced on the CPU, or not at all)
    writes_inputs: bool  # the reference updates an input in place

    @property
    def category(self) -> str:
        return self.signature.category


_CACHE: dict[tuple[str, str], Analysis] = {}


def analyse(problem: Problem) -> Analysis:
    key = (str(problem.folder), problem.reference)
    if key not in _CACHE:
        _CACHE[key] = _analyse(problem)
    return _CACHE[key]


def _analyse(problem: Problem) -> Analysis:
    first = smallest_workload(problem)
    if first is None:
        sig = signature(problem, None)
        return Analysis(problem, sig, None, None, None, None,
                        "no workload of this problem can run here", True, False)
    try:
        plain = trace_any(problem, first)
    except Exception as e:  # noqa: BLE001 - recorded as the reason
        sig = signature(problem, None)
        return Analysis(problem, sig, None, None, first, None,
                        f"the reference cannot be traced: {type(e).__name__}", True, False)
    sig = signature(problem, plain)
    data_dependent = plain.device != "meta"
    writes = bool(plain.written_inputs())
    second = _second_workload(problem, first)
    why = _why_not(problem, plain, data_dependent, writes)
    graph = twin = None
    if not why:
        try:
            graph = trace_pair(problem, first, second)
            twin = trace_pair(problem, second, first)
        except Varying as e:
            why = f"the traces of two workloads differ: {e}"
        except Exception as e:  # noqa: BLE001 - a stand-in value the reference refuses
            why = f"the reference fails with stand-in scalars: {type(e).__name__}: {e}"[:200]
    return Analysis(problem, sig, graph, twin, first, second, why, data_dependent, writes)


def _why_not(problem: Problem, graph: Graph, data_dependent: bool, writes: bool) -> str:
    if data_dependent:
        return "its control flow reads tensor values"
    if graph.setitem:
        return "it assigns into tensors by index"
    if writes or any(n.writes for n in graph.nodes):
        return "it updates tensors in place"
    floats = set(float_scalars(problem))
    for name, spec in problem.inputs.items():
        if spec.shape is None and name not in floats:
            values = {w.inputs[name].value for w in problem.workloads
                      if name in w.inputs and w.inputs[name].kind == "scalar"}
            if len(values) > 1:
                return f"its integer input {name!r} differs between workloads"
    return ""


def _second_workload(problem: Problem, first: Workload) -> Workload:
    base = resolve_axes(problem, first)
    runnable = [w for w in problem.workloads if skip_reason(problem, w) is None]

    def differs(w: Workload) -> tuple[int, int]:
        axes = resolve_axes(problem, w)
        changed = sum(axes.get(k) != v for k, v in base.items())
        return changed, -abs(math.log(_size(axes) / _size(base)))  # most axes, modest size

    best = max(runnable, key=differs)
    if differs(best)[0] > 0:
        return best
    try:
        drawn = hidden_workloads(problem, 1, seed=0)
    except Exception:  # noqa: BLE001 - no new workload can be drawn: the first serves twice
        drawn = []
    return drawn[0] if drawn else first


def _size(axes: dict[str, int]) -> float:
    return float(max(1, math.prod(max(1, v) for v in axes.values())))
