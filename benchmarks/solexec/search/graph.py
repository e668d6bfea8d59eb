"""The aten op graph of a SOL-ExecBench reference, recorded on meta tensors.

The reference runs under tracing.on_device (every tensor on meta, a reference written for
a GPU unchanged; "cpu" with small real tensors for control flow that reads values) and a
recording dispatch mode on top: each aten op becomes a `Node` whose tensor arguments are
`Ref`s to earlier values (a graph input, or an output of an earlier node) and whose other
arguments are kept as they were. Meta tensors keep sizes, strides and storage offsets,
so views of an input (a chunk, a transpose, a broadcast) are recorded with their layout.

Tracing twice, on two workloads and with two sets of stand-in values for the float scalar
inputs (`trace_pair`), tells apart the literals of a graph: a literal equal in both is a
constant of the reference; one equal to a float input's stand-in in each is that input; any
other that differs was derived from a shape or an input (a 1/sqrt(head_dim)) and cannot be
baked into generated code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.solexec.problems import Problem, Workload, make_inputs, reference_entry, shrink
from benchmarks.solexec.tracing import on_device

CONTRACTIONS = frozenset({
    "mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "linear", "convolution",
    "_convolution", "conv1d", "conv2d", "conv3d", "_scaled_mm", "_int_mm",
    "scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
    "_flash_attention_forward", "_efficient_attention_forward", "einsum", "addmv", "mv", "dot",
})  # fmt: skip
ATTENTION = frozenset(n for n in CONTRACTIONS if "attention" in n)
NORMS = frozenset({
    "native_layer_norm", "layer_norm", "rms_norm", "_fused_rms_norm", "native_group_norm",
    "group_norm", "native_batch_norm", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit", "instance_norm",
})  # fmt: skip
SOFTMAX = frozenset({"_softmax", "softmax", "_safe_softmax", "_log_softmax", "log_softmax"})
COPIES = frozenset({"_to_copy", "clone", "copy_", "lift_fresh", "contiguous", "to",
                    "detach", "alias"})
RESHAPES = frozenset({"_unsafe_view", "reshape", "_reshape_alias", "flatten", "unflatten"})
FACTORIES = frozenset({"empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like",
                       "full", "full_like", "arange", "empty_strided", "new_empty",
                       "new_zeros", "new_ones", "new_full", "scalar_tensor", "eye",
                       "linspace", "tensor", "randn", "rand", "randn_like", "rand_like",
                       "randint", "bernoulli", "normal"})  # fmt: skip


@dataclass(frozen=True)
class Ref:
    """A tensor argument: value number `index` of the graph."""

    index: int


@dataclass(frozen=True)
class Value:
    """A tensor of the trace: where it came from and its layout."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype
    input: str | None = None  # the graph input it is (None for a node's output)
    node: int | None = None  # the node that made it
    root: str | None = None  # the graph input it is a view of, through views only


@dataclass(frozen=True)
class Node:
    op: str  # the overload packet's name: "add", "mm", "_softmax"
    overload: str  # "Tensor", "Scalar", "default", ...
    kind: str  # see op_kind
    args: tuple
    kwargs: dict
    outputs: tuple[int, ...]
    writes: tuple[int, ...] = ()  # values it writes into (in-place ops, out=)


@dataclass
class Graph:
    inputs: dict[str, Any]  # name -> Ref (tensor input) or the Python scalar given
    values: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)  # Ref or literal, in output order
    setitem: bool = False  # the reference assigned into a tensor by index
    device: str = "meta"

    def producer(self, ref: Ref) -> Node | None:
        node = self.values[ref.index].node
        return None if node is None else self.nodes[node]

    def compute_nodes(self) -> list[Node]:
        """Nodes that compute (not views, copies or factories)."""
        return [n for n in self.nodes if n.kind not in ("view", "copy", "factory")]

    def written_inputs(self) -> set[str]:
        return {r for n in self.nodes for i in n.writes if (r := self.values[i].root)}

    def dtypes(self) -> set[torch.dtype]:
        return {v.dtype for v in self.values}


def op_kind(func: Any) -> str:
    """contraction, attention, norm, softmax, reduction, pointwise, view, copy, factory or
    other (indexing, scatter, sort, fft, ...)."""
    name = func.overloadpacket.__name__
    if name in ATTENTION:
        return "attention"
    if name in CONTRACTIONS:
        return "contraction"
    if name in NORMS:
        return "norm"
    if name in SOFTMAX:
        return "softmax"
    if name in COPIES:
        return "copy"
    if name in RESHAPES:
        return "view"
    if name in FACTORIES or name.endswith("_like"):
        return "factory"
    schema = func._schema
    if any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
        return "view"
    if torch.Tag.pointwise in func.tags:
        return "pointwise"
    if torch.Tag.reduction in func.tags or name in ("logsumexp", "var_mean", "std_mean"):
        return "reduction"
    return "other"


def _written_args(func: Any) -> list[str]:
    return [a.name for a in func._schema.arguments
            if a.alias_info is not None and a.alias_info.is_write]


class _Recorder(TorchDispatchMode):
    def __init__(self, graph: Graph, keep: list) -> None:
        super().__init__()
        self.graph, self.keep, self.ids = graph, keep, {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def ref(self, t: torch.Tensor, *, input: str | None = None, node: int | None = None,
            root: str | None = None) -> Ref:
        known = self.ids.get(id(t))
        if known is not None and node is None and input is None:
            return Ref(known)
        self.keep.append(t)  # ids stay unique while the graph is built
        value = Value(tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype,
                      input=input, node=node, root=root if root is not None else input)
        self.graph.values.append(value)
        self.ids[id(t)] = len(self.graph.values) - 1
        return Ref(len(self.graph.values) - 1)

    def encode(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.ref(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self.encode(v) for v in value)
        if isinstance(value, dict):
            return {k: self.encode(v) for k, v in value.items()}
        return value

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        enc_args, enc_kwargs = self.encode(args), self.encode(kwargs)
        out = func(*args, **kwargs)
        kind = op_kind(func)
        index = len(self.graph.nodes)
        written = _written_args(func)
        bound = dict(zip([a.name for a in func._schema.arguments], args, strict=False))
        bound.update(kwargs)
        writes = tuple(self.ids[id(t)] for n in written
                       if isinstance(t := bound.get(n), torch.Tensor) and id(t) in self.ids)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        roots = [self.graph.values[r.index].root for r in _refs(enc_args)[:1]]
        root = roots[0] if kind == "view" and roots else None
        out_refs = []
        for o in outs:
            if isinstance(o, torch.Tensor):
                if writes and id(o) in self.ids:  # an in-place op returns its target
                    out_refs.append(self.ids[id(o)])
                else:
                    out_refs.append(self.ref(o, node=index, root=root).index)
        self.graph.nodes.append(Node(func.overloadpacket.__name__, func._overloadname, kind,
                                     enc_args, enc_kwargs, tuple(out_refs), writes))
        return out


def _refs(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    return []


def refs(value: Any) -> list[Ref]:
    """The Refs in a node's (nested) arguments."""
    return _refs(value)


class _SetItemWatch(TorchFunctionMode):
    """Notes index assignment, which the meta placement skips (it changes values only)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__setitem__:
            self.graph.setitem = True
        return func(*args, **(kwargs or {}))


def trace_graph(problem: Problem, workload: Workload, *, device: str = "meta",
                scalars: Mapping[str, Any] | None = None) -> Graph:
    """The reference's op graph on one workload; `scalars` replace scalar inputs' values.
    Raises what the reference raises."""
    with on_device(device):
        inputs = make_inputs(problem, workload, seed=0, device=device)
    inputs.update(scalars or {})
    graph = Graph(inputs={}, device=device)
    keep: list = []
    recorder = _Recorder(graph, keep)
    for name, v in inputs.items():
        graph.inputs[name] = recorder.ref(v, input=name) if isinstance(v, torch.Tensor) else v
    entry = reference_entry(problem)
    with torch.no_grad(), on_device(device), _SetItemWatch(graph), recorder:
        out = entry(*(inputs[n] for n in problem.inputs))
    if isinstance(out, Mapping):
        out = [out[n] for n in problem.outputs]
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    graph.outputs = [recorder.ref(o) if isinstance(o, torch.Tensor) else o for o in outs]
    return graph


def trace_any(problem: Problem, workload: Workload, **kw: Any) -> Graph:
    """On meta, else on small real CPU tensors (references whose control flow reads values)."""
    try:
        return trace_graph(problem, workload, **kw)
    except Exception:  # noqa: BLE001 - the CPU fallback below says why if it fails too
        return trace_graph(problem, shrink(problem, workload, 1 << 12), device="cpu", **kw)


# ---------------------------------------------------------------------------- literals

_STAND_INS = (0.0123456789, 0.0234567891)  # base values of float inputs in the two traces


def float_scalars(problem: Problem) -> list[str]:
    return [n for n, s in problem.inputs.items()
            if s.shape is None and s.dtype.startswith(("float", "bfloat"))]


def stand_ins(problem: Problem, which: int) -> dict[str, float]:
    return {n: _STAND_INS[which] * (k + 1) for k, n in enumerate(float_scalars(problem))}


@dataclass(frozen=True)
class Scalar:
    """A literal of the graph that is a float scalar input of `run`."""

    name: str


class Varying(Exception):  # noqa: N818 - a verdict on a graph, not an error
    """The two traces differ in more than literals that are constants or scalar inputs."""


def trace_pair(problem: Problem, first: Workload, second: Workload) -> Graph:
    """The graph of `first` with each literal resolved: constants stay, a float scalar
    input's value becomes Scalar(name); raises Varying where the traces' structure or a
    derived literal differs."""
    a = trace_graph(problem, first, scalars=stand_ins(problem, 0))
    b = trace_graph(problem, second, scalars=stand_ins(problem, 1))
    names = {**{v: n for n, v in stand_ins(problem, 0).items()}}
    other = stand_ins(problem, 1)
    if len(a.nodes) != len(b.nodes) or a.setitem != b.setitem:
        raise Varying("the two workloads trace to different op sequences")
    nodes = []
    for x, y in zip(a.nodes, b.nodes, strict=True):
        if (x.op, x.overload) != (y.op, y.overload):
            raise Varying(f"op {x.op} against {y.op}")
        if x.kind in ("view", "factory"):  # sizes: their layouts are read off the values
            nodes.append(x)
            continue
        args = _resolve(x.args, y.args, names, other, x.op)
        kwargs = _resolve(x.kwargs, y.kwargs, names, other, x.op)
        nodes.append(replace(x, args=args, kwargs=kwargs))
    return replace(a, nodes=nodes)


def _resolve(x: Any, y: Any, names: dict, other: dict, op: str) -> Any:
    if isinstance(x, Ref) or isinstance(y, Ref):
        if not (isinstance(x, Ref) and isinstance(y, Ref)):
            raise Varying(f"{op}: a tensor in one trace, a literal in the other")
        return x
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and len(x) == len(y):
        return type(x)(_resolve(u, v, names, other, op) for u, v in zip(x, y, strict=True))
    if isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys():
        return {k: _resolve(x[k], y[k], names, other, op) for k in x}
    if isinstance(x, float) and isinstance(y, float):
        if x in names and other.get(names[x]) == y:
            return Scalar(names[x])
        if x == y or (math.isnan(x) and math.isnan(y)):
            return x
        raise Varying(f"{op}: a literal derived from the workload ({x} against {y})")
    if type(x) is not type(y) or x != y:
        raise Varying(f"{op}: an argument derived from the workload ({x!r} against {y!r})")
    return x
