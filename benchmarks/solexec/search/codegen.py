"""Triton expressions for a traced reference's pointwise and row-wise ops.

Generated kernels see a problem's outputs as a grid of rows by C columns (C is the last
dimension of the first output). Every value of the graph is one of four classes against
that grid: full (one element per output element), row (one per row: a keepdim statistic,
a [..., 1] input), col (one per column: a weight or bias of shape [C]) or scalar; Triton's
broadcasting then lines them up. Inputs are read where the reference reads them: a
contiguous input as it is, a chunk of the last dimension (`x.chunk(2, -1)`) at its
offset, a broadcast vector along rows or columns; any other layout is unsupported.

An `Emitter` writes one statement per node, each computed in float32 and rounded to the
node's dtype when that is 16-bit, as PyTorch does op by op. Two flavours: "flat" (a 1-D
block of elements: pointwise ops only) and "tile" (a [BLOCK_M, BLOCK_N] block of whole
rows: reductions over the last dimension, softmax and layer norm as well).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.solexec.search.graph import Graph, Node, Ref, Scalar, Value
from benchmarks.solexec.search.pointwise import POINTWISE, Unsupported, pow_expr

FLOATS = {torch.float32: "tl.float32", torch.float16: "tl.float16",
          torch.bfloat16: "tl.bfloat16"}
ALIASES = frozenset({"view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "expand",
                     "alias", "detach", "clone", "contiguous", "lift_fresh", "_reshape_alias",
                     "flatten"})  # fmt: skip


@dataclass(frozen=True)
class Mode:
    """How a kernel reads an input: "full", "chunk" (k-th block of C in a row of the
    input's width), "row", "col", "scalar" (element `offset`), "suffix" (the output's
    dimensions before k broadcast: row r reads row r % g, g the rows of dimensions k on)
    or "prefix" (dimensions from k on broadcast: row r reads row r // g)."""

    kind: str
    k: int = 0
    offset: int = 0


def _contiguous(dims: list[tuple[int, int]], unit: int) -> bool:
    expect = unit
    for size, stride in reversed(dims):
        if stride != expect:
            return False
        expect *= size
    return True


def value_class(v: Value, total: int, cols: int) -> str | None:
    """full, row, col or scalar against a grid of total elements in rows of `cols`."""
    n = math.prod(v.shape)
    if n == 1:
        return "scalar"
    last = v.shape[-1] if v.shape else 1
    if n == total and last == cols:
        return "full"
    if n == total // cols and (last == 1 or last != cols):
        return "row"
    if n == cols and last == cols:
        return "col"
    return None


def leaf_mode(v: Value, root: Value, frame: tuple[int, ...]) -> Mode | None:
    """How to read a view of an input against the output grid `frame` (see Mode), or None
    where the layout is another. Broadcast dimensions are stride 0 or size 1; the others
    must be laid out contiguously, rows of C (or of the input's width, for a chunk)."""
    total, cols = math.prod(frame), frame[-1]
    if math.prod(v.shape) == 1 or all(s == 0 or d == 1 for d, s in zip(v.shape, v.stride,
                                                                         strict=True)):
        return Mode("scalar", offset=v.offset)
    if len(v.shape) > len(frame) or total == 0:
        return None
    pad = len(frame) - len(v.shape)
    shape, stride = (1,) * pad + v.shape, (0,) * pad + v.stride
    per_row = shape[-1] == 1 or stride[-1] == 0
    if not per_row and (shape[-1] != cols or stride[-1] != 1):
        return None
    real = [i for i in range(len(frame) - 1) if shape[i] != 1 and stride[i] != 0]
    if any(shape[i] != frame[i] for i in real):
        return None
    dims = [(shape[i], stride[i]) for i in real]
    width = dims[-1][1] if dims else cols
    if not _contiguous(dims, 1 if per_row else width):
        return None
    wide = [i for i in range(len(frame) - 1) if frame[i] != 1]
    broadcast = [i for i in wide if i not in real]
    if per_row:
        return Mode("row") if not broadcast and v.offset == 0 else None
    if not real:
        return Mode("col") if v.offset == 0 else None
    if broadcast:
        if v.offset != 0 or width != cols:
            return None
        if max(broadcast) < min(real):
            return Mode("suffix", k=max(broadcast) + 1)
        if max(real) < min(broadcast):
            return Mode("prefix", k=max(real) + 1)
        return None
    if width == cols and v.offset == 0:
        return Mode("full")
    chunk = root.shape[-1] == width and v.offset % cols == 0 and v.offset + cols <= width
    return Mode("chunk", k=v.offset // cols) if chunk else None


def _informative(frame: tuple[int, ...]) -> int:
    return sum(d != 1 for d in frame)


@dataclass
class Emitter:
    """Statements computing graph values, and the kernel arguments they need.

    `graph` is the resolved trace, `twin` the same reference traced on another workload:
    each input's layout must read the same way in both (where a dimension is 1 in one
    trace, the other decides). `frame` is the output grid's shape in each trace. `bound`
    pre-names values (a GEMM's product)."""

    graph: Graph
    twin: Graph
    flavour: str  # "flat" or "tile"
    frame: tuple[int, ...]  # the first output's shape in graph
    twin_frame: tuple[int, ...]
    bound: dict[int, str] = field(default_factory=dict)
    prefix: str = "v"  # of the statements' variables
    lines: list[str] = field(default_factory=list)
    pointers: dict[str, str] = field(default_factory=dict)  # input name -> kernel arg
    widths: dict[str, str] = field(default_factory=dict)  # input name -> its row length arg
    groups: dict[int, str] = field(default_factory=dict)  # frame dim -> rows-per-group arg
    scalars: dict[str, str] = field(default_factory=dict)  # float input -> kernel arg
    _names: dict[int, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ values

    def name(self, ref: Ref) -> str:
        if ref.index in self.bound:
            return self.bound[ref.index]
        if ref.index not in self._names:
            self._names[ref.index] = self._emit(ref)
        return self._names[ref.index]

    def cls(self, ref: Ref) -> str | None:
        frame = self.frame
        return value_class(self.graph.values[ref.index], math.prod(frame), frame[-1])

    def _new(self, expr: str, dtype: torch.dtype) -> str:
        var = f"{self.prefix}{len(self.lines)}"
        if dtype == torch.bfloat16:
            expr = f"_bf16({expr})"
        elif dtype == torch.float16:
            expr = f"({expr}).to(tl.float16).to(tl.float32)"
        elif dtype not in (torch.float32, torch.bool):
            raise Unsupported(f"values of dtype {dtype}")
        self.lines.append(f"{var} = {expr}")
        return var

    def _emit(self, ref: Ref) -> str:
        v = self.graph.values[ref.index]
        if v.root is not None:
            return self._load(ref, v)
        node = self.graph.nodes[v.node]
        if node.kind == "view" or node.op in ALIASES:
            src = node.args[0]
            if not isinstance(src, Ref):
                raise Unsupported(f"{node.op} of a literal")
            before, after = self.cls(src), self.cls(ref)
            ok = after is not None and (before == after or before == "scalar" or (
                after == "full" and node.op == "expand" and before in ("row", "col")))
            if not ok:
                raise Unsupported(f"{node.op} that moves a computed value's elements")
            return self.name(src)
        if node.op == "_to_copy":
            return self._cast(self.name(node.args[0]), self.graph.values[node.args[0].index].dtype,
                              v.dtype)
        if node.op == "pow":
            a, b = self._args(node.args)
            tensor_exponent = f"tl.exp2({b} * tl.log2({a}))"
            expr = pow_expr(a, b) if node.overload == "Tensor_Scalar" else tensor_exponent
            return self._new(expr, v.dtype)
        if node.kind == "pointwise":
            fn = POINTWISE.get(node.op)
            if fn is None:
                raise Unsupported(f"pointwise op {node.op}")
            return self._new(fn(*self._args(node.args), **self._kwargs(node)), v.dtype)
        if self.flavour == "tile" and node.op in ROW_OPS:
            return ROW_OPS[node.op](self, node, ref)
        raise Unsupported(f"{node.kind} op {node.op}")

    def _cast(self, var: str, src: torch.dtype, dst: torch.dtype) -> str:
        if dst == torch.bool:
            return self._new(f"{var} != 0", dst)
        if src == torch.bool:
            return self._new(f"{var}.to(tl.float32)", dst)
        return self._new(var, dst)

    def _args(self, args: tuple) -> list:
        return [self.arg(a) for a in args]

    def _kwargs(self, node: Node) -> dict:
        return {k: self.arg(a) for k, a in node.kwargs.items()
                if k not in ("dtype", "layout", "device", "memory_format", "pin_memory")}

    def arg(self, a: object) -> object:
        if isinstance(a, Ref):
            return self.name(a)
        if isinstance(a, Scalar):
            return self.scalars.setdefault(a.name, f"s_{a.name}")
        if isinstance(a, float):
            return repr(a) if math.isfinite(a) else ('float("inf")' if a > 0 else
                                                    '(-float("inf"))')
        if isinstance(a, (bool, int, str)) or a is None:
            return a if not isinstance(a, bool) else str(a)
        raise Unsupported(f"argument {a!r}")

    # ------------------------------------------------------------------ inputs

    def _load(self, ref: Ref, v: Value) -> str:
        root_ref = self.graph.inputs[v.root]
        mode = leaf_mode(v, self.graph.values[root_ref.index], self.frame)
        tv, troot = self.twin.values[ref.index], self.twin.values[self.twin.inputs[v.root].index]
        other = leaf_mode(tv, troot, self.twin_frame)
        if mode != other:
            mine, theirs = _informative(self.frame), _informative(self.twin_frame)
            mode = mode if mine > theirs else other if theirs > mine else None
        if mode is None:
            raise Unsupported(f"input {v.root!r} is read in a layout the kernels do not take")
        ptr = self.pointers.setdefault(v.root, f"p_{v.root}")
        index, mask = self.index(mode, v.root)
        load = f"tl.load({ptr} + {index}, mask={mask}, other=0)" if mask else \
            f"tl.load({ptr} + {index})"
        if v.dtype == torch.bool:
            return self._new(f"{load} != 0", torch.bool)
        if v.dtype not in FLOATS:
            raise Unsupported(f"input {v.root!r} of dtype {v.dtype}")
        return self._new(f"{load}.to(tl.float32)", torch.float32)

    def index(self, mode: Mode, root: str) -> tuple[str, str | None]:
        flat = self.flavour == "flat"
        if mode.kind == "scalar":
            return str(mode.offset), None
        if mode.kind == "full":
            return ("offs", "mask") if flat else ("rows * C + cols", "mask")
        if mode.kind == "col":
            return ("col", "mask") if flat else ("cols", "cmask")
        if mode.kind == "row":
            return ("row", "mask") if flat else ("rows", "rmask")
        r, c = ("row", "col") if flat else ("rows", "cols")
        if mode.kind in ("suffix", "prefix"):
            group = self.groups.setdefault(mode.k, f"g_{mode.k}")
            op = "%" if mode.kind == "suffix" else "//"
            return f"({r} {op} {group}) * C + {c}", "mask"
        width = self.widths.setdefault(root, f"w_{root}")
        return f"{r} * {width} + {mode.k} * C + {c}", "mask"


# ---------------------------------------------------------------------------- row ops


def _last_dim(e: Emitter, node: Node, dims: object) -> None:
    rank = len(e.graph.values[node.args[0].index].shape)
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if [d % rank for d in dims] != [rank - 1] or e.cls(node.args[0]) != "full":
        raise Unsupported(f"{node.op} over dims {dims}, not the last one")


def _reduce(e: Emitter, x: str, how: str) -> str:
    fill = {"sum": "0.0", "max": '-float("inf")', "min": 'float("inf")'}[how]
    return f"tl.{how}(tl.where(mask, {x}, {fill}), axis=1)[:, None]"


def _row_sum(e: Emitter, node: Node, ref: Ref) -> str:
    _last_dim(e, node, node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
    x = e.name(node.args[0])
    total = _reduce(e, x, "sum")
    if node.op == "mean":
        total = f"{total} / C"
    return e._new(total, e.graph.values[ref.index].dtype)


def _row_max(e: Emitter, node: Node, ref: Ref) -> str:
    _last_dim(e, node, node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
    how = "max" if node.op == "amax" else "min"
    return e._new(_reduce(e, e.name(node.args[0]), how), e.graph.values[ref.index].dtype)


def _row_var(e: Emitter, node: Node, ref: Ref) -> str:
    _last_dim(e, node, node.args[1] if len(node.args) > 1 else node.kwargs.get("dim"))
    correction = node.kwargs.get("correction", 1)
    if correction is None:
        correction = 1
    x = e.name(node.args[0])
    mean = e._new(f"{_reduce(e, x, 'sum')} / C", torch.float32)
    d = e._new(f"tl.where(mask, {x} - {mean}, 0.0)", torch.float32)
    var = f"tl.sum({d} * {d}, axis=1)[:, None] / (C - {correction})"
    out = e._new(var if node.op == "var" else f"tl.sqrt({var})", e.graph.values[ref.index].dtype)
    return out


def _row_norm2(e: Emitter, node: Node, ref: Ref) -> str:
    order = node.args[1] if len(node.args) > 1 else node.kwargs.get("ord", 2)
    if order not in (2, 2.0):
        raise Unsupported(f"vector norm of order {order}")
    _last_dim(e, node, node.args[2] if len(node.args) > 2 else node.kwargs.get("dim"))
    x = e.name(node.args[0])
    return e._new(f"tl.sqrt({_reduce(e, f'{x} * {x}', 'sum')})", e.graph.values[ref.index].dtype)


def _row_softmax(e: Emitter, node: Node, ref: Ref) -> str:
    _last_dim(e, node, node.args[1])
    x = e.name(node.args[0])
    m = e._new(f"tl.where(rmask, {_reduce(e, x, 'max')}, 0.0)", torch.float32)
    p = e._new(f"tl.where(mask, tl.exp({x} - {m}), 0.0)", torch.float32)
    s = e._new(f"tl.maximum(tl.sum({p}, axis=1)[:, None], 1e-30)", torch.float32)
    dtype = e.graph.values[ref.index].dtype
    if node.op in ("_log_softmax", "log_softmax"):
        return e._new(f"{x} - {m} - tl.log({s})", dtype)
    return e._new(f"{p} / {s}", dtype)


def _row_layer_norm(e: Emitter, node: Node, ref: Ref) -> str:
    x_ref, shape, weight, bias, eps = node.args[:5]
    if len(shape) != 1:
        raise Unsupported("layer norm over more than the last dimension")
    _last_dim(e, node, -1)
    x = e.name(x_ref)
    mean = e._new(f"{_reduce(e, x, 'sum')} / C", torch.float32)
    d = e._new(f"tl.where(mask, {x} - {mean}, 0.0)", torch.float32)
    rstd = e._new(f"tl.rsqrt(tl.sum({d} * {d}, axis=1)[:, None] / C + {e.arg(eps)})",
                  torch.float32)
    out = f"{d} * {rstd}"
    if weight is not None:
        out = f"{out} * {e.name(weight)}"
    if bias is not None:
        out = f"{out} + {e.name(bias)}"
    results = [out, mean, rstd]
    position = node.outputs.index(ref.index)
    for i, o in enumerate(node.outputs):
        if i != position and o not in e._names:
            e._names[o] = e._new(results[i], e.graph.values[o].dtype)
    return e._new(results[position], e.graph.values[ref.index].dtype)


ROW_OPS: dict[str, Callable[[Emitter, Node, Ref], str]] = {
    "sum": _row_sum, "mean": _row_sum, "amax": _row_max, "amin": _row_max, "var": _row_var,
    "std": _row_var, "linalg_vector_norm": _row_norm2, "_softmax": _row_softmax,
    "softmax": _row_softmax, "_safe_softmax": _row_softmax, "_log_softmax": _row_softmax,
    "log_softmax": _row_softmax, "native_layer_norm": _row_layer_norm,
}  # fmt: skip

HELPERS = '''

@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _bf16(x):
    # float32 rounded to the nearest bfloat16 (ties to even), kept in float32
    b = x.to(tl.uint32, bitcast=True)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.to(tl.float32, bitcast=True)
'''
