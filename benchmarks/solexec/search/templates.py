"""Triton kernels generated from a reference's traced ops: pointwise fusion, row-wise
fusion (norms, row reductions, single-pass softmax) and the online softmax.

Each `render_*` takes an Analysis and the launch parameters and returns solution.py's
text, or raises Unsupported saying why the problem is not one it takes. The kernel's
body comes from codegen.Emitter; adapter.py writes `run` around it.

* elementwise: one program per BLOCK elements of the flattened outputs; the graph holds
  pointwise ops only.
* rows: one program per BLOCK_M whole rows (BLOCK_N, the row length rounded up to a
  power of two, columns at once); reductions over the last dimension, softmax and layer
  norm allowed. Rows longer than MAX_ROW fall back to the reference.
* softmax_online: one softmax over the last dimension, with pointwise ops before and
  after it; two passes over each row in chunks of BLOCK_N (a running max and sum, then
  the outputs), so a row of any length fits.
"""

from __future__ import annotations

from collections.abc import Mapping

from benchmarks.solexec.search.adapter import (
    HEADER,
    Stored,
    indent,
    kernel_args,
    prologue,
    reference_block,
    returned,
    store_lines,
)
from benchmarks.solexec.search.analysis import Analysis
from benchmarks.solexec.search.codegen import HELPERS, ROW_OPS, Emitter, Unsupported
from benchmarks.solexec.search.graph import Ref

MAX_ROW = 1 << 16  # longest row the single-pass kernel holds in registers
MAX_TILE = 1 << 14  # elements a program of the row kernel holds at once


def _graph(a: Analysis):
    if a.graph is None or a.twin is None:
        raise Unsupported(a.why_not or "no graph")
    if not all(isinstance(o, Ref) for o in a.graph.outputs):
        raise Unsupported("an output is not a tensor")
    return a.graph, a.twin


def _frame(graph, ref: Ref) -> tuple[int, ...]:
    shape = graph.values[ref.index].shape or (1,)
    if 0 in shape:
        raise Unsupported("an empty output")
    return shape


def _emitter(a: Analysis, flavour: str) -> Emitter:
    g, t = _graph(a)
    return Emitter(g, t, flavour, _frame(g, g.outputs[0]), _frame(t, t.outputs[0]))


def _stores(a: Analysis, e: Emitter, allowed: tuple[str, ...]) -> list[Stored]:
    stores = []
    for name, ref in zip(a.problem.outputs, e.graph.outputs, strict=True):
        cls = e.cls(ref)
        if cls not in allowed:
            raise Unsupported(f"output {name!r} is not laid out like the first output")
        want = a.problem.outputs[name].dtype
        if str(e.graph.values[ref.index].dtype).removeprefix("torch.") != want:
            raise Unsupported(f"output {name!r} has another dtype than the definition says")
        stores.append(Stored(name, e.name(ref), cls))
    return stores


def _module(a: Analysis, title: str, params: Mapping, kernel: str, run_body: list[str]) -> str:
    args = ", ".join(a.problem.inputs)
    return (HEADER.format(title=title, key=a.problem.key, params=dict(params))
            + reference_block(a.problem) + HELPERS + kernel
            + f"\n\ndef run({args}):\n" + indent(run_body) + "\n")


def _used(a: Analysis, e: Emitter) -> list[str]:
    used = [n for n in a.problem.inputs if n in e.pointers]
    if not used:
        raise Unsupported("no tensor input is read")
    return used


# ---------------------------------------------------------------------------- elementwise


def render_elementwise(a: Analysis, params: Mapping) -> str:
    e = _emitter(a, "flat")
    stores = _stores(a, e, ("full",))
    names, launch = kernel_args(e, a.problem, stores)
    kernel = (f"\n\n@triton.jit\ndef _fused_kernel({', '.join(names)}, n_elements, C, "
              "BLOCK: tl.constexpr):\n" + indent([
                  "offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)",
                  "mask = offs < n_elements", "row = offs // C", "col = offs % C",
                  *e.lines, *store_lines(stores, flat=True)]) + "\n")
    first = f"out_{stores[0].output}"
    body = [*prologue(a.problem, _used(a, e), stores),
            f"n = {first}.numel()",
            f"C = {first}.shape[-1] if {first}.dim() else 1",
            "if n == 0:", f"    return {returned(a.problem)}",
            f"grid = (triton.cdiv(n, {int(params['BLOCK'])}),)",
            f"_fused_kernel[grid]({', '.join([*launch, 'n', 'C'])}, "
            f"BLOCK={int(params['BLOCK'])}, num_warps={int(params['num_warps'])})",
            f"return {returned(a.problem)}"]
    return _module(a, "Pointwise ops of the reference fused into one Triton kernel.", params,
                   kernel, body)


# ---------------------------------------------------------------------------- rows


def _row_launch(a: Analysis, e: Emitter, stores: list[Stored], kernel_name: str,
                launch: list[str], consts: str, block_n: str) -> list[str]:
    first = f"out_{next(s.output for s in stores if s.cls == 'full')}"
    return [*prologue(a.problem, _used(a, e), stores),
            f"C = {first}.shape[-1]",
            f"R = {first}.numel() // C if C else 0",
            "if R == 0:", f"    return {returned(a.problem)}",
            f"BLOCK_N = {block_n}",
            "if BLOCK_N is None:",
            f"    return _reference_run({', '.join(a.problem.inputs)})",
            f"BLOCK_M = {consts}",
            "grid = (triton.cdiv(R, BLOCK_M),)",
            f"{kernel_name}[grid]({', '.join([*launch, 'R', 'C'])}, BLOCK_M=BLOCK_M, "
            "BLOCK_N=BLOCK_N, num_warps=NUM_WARPS)",
            f"return {returned(a.problem)}"]


def render_rows(a: Analysis, params: Mapping) -> str:
    e = _emitter(a, "tile")
    stores = _stores(a, e, ("full", "row"))
    if not any(s.cls == "full" for s in stores):
        raise Unsupported("no output of whole rows")
    if not any(n.op in ROW_OPS for n in e.graph.nodes):
        raise Unsupported("no reduction over rows: the elementwise kernel fits better")
    names, launch = kernel_args(e, a.problem, stores)
    kernel = (f"\n\n@triton.jit\ndef _rows_kernel({', '.join(names)}, R, C, "
              "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):\n" + indent([
                  "rows = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))"
                  "[:, None]",
                  "cols = tl.arange(0, BLOCK_N)[None, :]",
                  "rmask = rows < R", "cmask = cols < C", "mask = rmask & cmask",
                  *e.lines, *store_lines(stores, flat=False)]) + "\n")
    kernel += f"\n\nNUM_WARPS = {int(params['num_warps'])}\n"
    body = _row_launch(
        a, e, stores, "_rows_kernel", launch,
        f"max(1, min({int(params['BLOCK_M'])}, {MAX_TILE} // BLOCK_N))",
        f"triton.next_power_of_2(C) if C <= {MAX_ROW} else None")
    return _module(a, "The reference's row-wise ops (reductions over the last dimension "
                   "with what surrounds them) in one Triton kernel, whole rows per program.",
                   params, kernel, body)


# ---------------------------------------------------------------------------- online softmax


def render_softmax_online(a: Analysis, params: Mapping) -> str:
    g, _ = _graph(a)
    softmaxes = [n for n in g.nodes if n.op in ("_softmax", "softmax", "_safe_softmax")]
    others = [n for n in g.nodes if n.op in ROW_OPS and n not in softmaxes]
    if len(softmaxes) != 1 or others:
        raise Unsupported("not a single softmax with pointwise ops around it")
    node = softmaxes[0]
    first = _emitter(a, "tile")
    if first.cls(node.args[0]) != "full":
        raise Unsupported("the softmax's input is not laid out like the output")
    x1 = first.name(node.args[0])
    rank = len(g.values[node.args[0].index].shape)
    if node.args[1] % rank != rank - 1:
        raise Unsupported("softmax over another dimension than the last")
    out = node.outputs[0]
    second = _emitter(a, "tile")
    second.prefix = "u"
    second.scalars, second.pointers, second.widths = first.scalars, first.pointers, first.widths
    x2 = second.name(node.args[0])
    dtype = g.values[out].dtype
    sm = second._new(f"tl.exp({x2} - m_row) / l_row", dtype)
    second.bound[out] = sm
    stores = _stores(a, second, ("full",))
    names, launch = kernel_args(second, a.problem, stores)
    loop = ["cols = start + tl.arange(0, BLOCK_N)[None, :]", "cmask = cols < C",
            "mask = rmask & cmask"]
    kernel = (f"\n\n@triton.jit\ndef _softmax_kernel({', '.join(names)}, R, C, "
              "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):\n" + indent([
                  "rows = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))"
                  "[:, None]",
                  "rmask = rows < R",
                  'm_run = tl.full([BLOCK_M, BLOCK_N], -float("inf"), tl.float32)',
                  "l_run = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)",
                  "for start in range(0, C, BLOCK_N):"]) + "\n" + indent([
                  *loop, *first.lines,
                  f'x_in = tl.where(mask, {x1}, -float("inf"))',
                  "m_new = tl.maximum(m_run, x_in)",
                  'm_safe = tl.where(m_new == -float("inf"), 0.0, m_new)',
                  "l_run = l_run * tl.exp(m_run - m_safe) + tl.exp(x_in - m_safe)",
                  "m_run = m_new"], 2) + "\n" + indent([
                  "m_row = tl.max(m_run, axis=1)[:, None]",
                  'm_row = tl.where(m_row == -float("inf"), 0.0, m_row)',
                  "l_row = tl.sum(l_run * tl.exp(m_run - m_row), axis=1)[:, None]",
                  "l_row = tl.where(l_row == 0.0, 1.0, l_row)",
                  "for start in range(0, C, BLOCK_N):"]) + "\n" + indent([
                  *loop, *second.lines, *store_lines(stores, flat=False)], 2) + "\n")
    kernel += f"\n\nNUM_WARPS = {int(params['num_warps'])}\n"
    body = _row_launch(a, second, stores, "_softmax_kernel", launch,
                       f"{int(params['BLOCK_M'])}",
                       f"min({int(params['BLOCK_N'])}, triton.next_power_of_2(C))")
    return _module(a, "The reference's softmax as a two-pass online softmax in Triton, with "
                   "the pointwise ops around it fused in.", params, kernel, body)
