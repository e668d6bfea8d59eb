"""A tiled Triton GEMM with the reference's epilogue fused in.

Takes a reference whose one contraction is `mm` or `addmm` of an input (any leading
dimensions flattened into M rows of K) by a 2-D weight ([N, K] used transposed, as
F.linear does, or [K, N]), followed by pointwise ops only: bias, activation, residual,
scaling, casts. Each program computes a BLOCK_M x BLOCK_N tile of the product in float32
over K in steps of BLOCK_K, programs grouped GROUP_M tiles down for L2 reuse, then
applies the epilogue (codegen.Emitter over the tile, the product rounded to its dtype as
PyTorch returns it) and stores each output. float32 operands multiply at the precision
`fp32_dot` names ("ieee" matches PyTorch's default; "tf32" is faster and looser).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from benchmarks.solexec.search.adapter import (
    HEADER,
    indent,
    kernel_args,
    prologue,
    reference_block,
    returned,
    store_lines,
)
from benchmarks.solexec.search.analysis import Analysis
from benchmarks.solexec.search.codegen import FLOATS, HELPERS, Emitter, Unsupported
from benchmarks.solexec.search.graph import Graph, Node, Ref
from benchmarks.solexec.search.templates import _frame, _graph, _stores

SHARED_MEMORY = 200 * 1024  # bytes a tile's pipeline may hold (H100/H200 allow 227 KiB)


def _operands(g: Graph, node: Node) -> tuple[Ref, Ref, Ref | None, str]:
    """(a, b, bias, weight layout "nk" or "kn") of an mm/addmm, or Unsupported."""
    if node.op == "mm":
        a, b = node.args[:2]
        bias = None
    else:
        bias, a, b = node.args[:3]
        if node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
            raise Unsupported("addmm with beta or alpha")
    va, vb = g.values[a.index], g.values[b.index]
    if va.root is None or vb.root is None:
        raise Unsupported("a GEMM operand is computed, not an input")
    ra, rb = g.values[g.inputs[va.root].index], g.values[g.inputs[vb.root].index]
    m, k = va.shape
    if va.stride != (k, 1) or va.offset or ra.shape[-1] != k or math.prod(ra.shape) != m * k:
        raise Unsupported("the GEMM's left operand is not an input's rows")
    if len(rb.shape) != 2 or vb.offset:
        raise Unsupported("the GEMM's weight is not a 2-D input")
    if vb.stride == (1, k) and rb.shape == (vb.shape[1], k):
        layout = "nk"
    elif vb.stride == (vb.shape[1], 1) and rb.shape == vb.shape:
        layout = "kn"
    else:
        raise Unsupported("the GEMM's weight is read in another layout")
    if va.dtype != vb.dtype or va.dtype not in FLOATS:
        raise Unsupported(f"GEMM operands of dtypes {va.dtype} and {vb.dtype}")
    return a, b, bias, layout


def _contraction(a: Analysis) -> Node:
    g, _ = _graph(a)
    heavy = [n for n in g.compute_nodes() if n.kind != "pointwise"]
    if len(heavy) != 1 or heavy[0].op not in ("mm", "addmm"):
        raise Unsupported("not one mm/addmm with pointwise ops around it")
    return heavy[0]


def applies(a: Analysis) -> bool:
    try:
        lower(a)
    except Unsupported:
        return False
    return True


def lower(a: Analysis) -> tuple[Emitter, list, Node, tuple[Ref, Ref, Ref | None, str]]:
    node = _contraction(a)
    g, t = _graph(a)
    operands = _operands(g, node)
    _operands(t, t.nodes[g.nodes.index(node)])
    out = g.values[node.outputs[0]]
    e = Emitter(g, t, "tile", _frame(g, g.outputs[0]), _frame(t, t.outputs[0]))
    if e.cls(Ref(node.outputs[0])) != "full":
        raise Unsupported("the GEMM's product is not laid out like the first output")
    e.bound[node.outputs[0]] = "prod"
    bias = operands[2]
    if bias is not None:  # addmm: the bias joins the product before its rounding
        if e.cls(bias) not in ("col", "scalar", "full"):
            raise Unsupported("an addmm bias of another shape")
        e.lines.append(f"acc = acc + {e.name(bias)}")
    rounding = {torch.bfloat16: "_bf16(acc)", torch.float16: "acc.to(tl.float16).to(tl.float32)"}
    e.lines.append("prod = " + rounding.get(out.dtype, "acc"))
    stores = _stores(a, e, ("full",))
    roots = {g.values[operands[0].index].root, g.values[operands[1].index].root}
    if roots & set(e.pointers):
        raise Unsupported("a GEMM operand is read by the epilogue too")
    return e, stores, node, operands


def feasible(params: Mapping) -> bool:
    """Whether a tile's software pipeline fits in shared memory (2-byte operands: the
    tightest case is checked again at launch by Triton)."""
    per_stage = (params["BLOCK_M"] + params["BLOCK_N"]) * params["BLOCK_K"] * 2
    return per_stage * params["num_stages"] <= SHARED_MEMORY


def render(a: Analysis, params: Mapping) -> str:
    e, stores, node, (lhs, rhs, _, layout) = lower(a)
    g = e.graph
    x, w = g.values[lhs.index].root, g.values[rhs.index].root
    names, launch = kernel_args(e, a.problem, stores)
    dot = "tl.dot(a, b, acc)"
    if g.values[lhs.index].dtype == torch.float32:
        dot = f'tl.dot(a, b, acc, input_precision="{params.get("fp32_dot", "ieee")}")'
    head = ["pid = tl.program_id(0)",
            "num_m = tl.cdiv(M, BLOCK_M)", "num_n = tl.cdiv(N, BLOCK_N)",
            "group = GROUP_M * num_n", "first_m = (pid // group) * GROUP_M",
            "size_m = min(num_m - first_m, GROUP_M)",
            "pid_m = first_m + (pid % group) % size_m", "pid_n = (pid % group) // size_m",
            "rm = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)",
            "rn = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)",
            "rk = tl.arange(0, BLOCK_K)",
            "a_ptrs = a_ptr + rm[:, None] * K + rk[None, :]",
            "b_ptrs = b_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn",
            "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
            "for k in range(0, tl.cdiv(K, BLOCK_K)):"]
    loop = ["left = K - k * BLOCK_K",
            "a = tl.load(a_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < left), other=0.0)",
            "b = tl.load(b_ptrs, mask=(rk[:, None] < left) & (rn[None, :] < N), other=0.0)",
            f"acc = {dot}", "a_ptrs += BLOCK_K", "b_ptrs += BLOCK_K * stride_bk"]
    tail = ["rows = rm[:, None]", "cols = rn[None, :]", "C = N", "rmask = rows < M",
            "cmask = cols < N", "mask = rmask & cmask",
            *e.lines, *store_lines(stores, flat=False)]
    kernel = ("\n\n@triton.jit\ndef _gemm_kernel(a_ptr, b_ptr, "
              + "".join(f"{n}, " for n in names)
              + "M, N, K, stride_bk, stride_bn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, "
              "BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):\n" + indent(head) + "\n"
              + indent(loop, 2) + "\n" + indent(tail) + "\n")
    n_dim, strides = ("0", ("1", "0")) if layout == "nk" else ("1", ("0", "1"))
    bm, bn = int(params["BLOCK_M"]), int(params["BLOCK_N"])
    body = [*prologue(a.problem, [n for n in a.problem.inputs if n in e.pointers or n in (x, w)],
                      stores),
            f"K = {x}.shape[-1]", f"M = {x}.numel() // K if K else 0",
            f"N = {w}.shape[{n_dim}]",
            "if M == 0 or N == 0 or K == 0:",
            f"    return _reference_run({', '.join(a.problem.inputs)})",
            f"grid = (triton.cdiv(M, {bm}) * triton.cdiv(N, {bn}),)",
            f"_gemm_kernel[grid]({x}, {w}, " + "".join(f"{s}, " for s in launch)
            + f"M, N, K, {w}.stride({strides[0]}), {w}.stride({strides[1]}), "
            f"BLOCK_M={bm}, BLOCK_N={bn}, BLOCK_K={int(params['BLOCK_K'])}, "
            f"GROUP_M={int(params['GROUP_M'])}, num_warps={int(params['num_warps'])}, "
            f"num_stages={int(params['num_stages'])})",
            f"return {returned(a.problem)}"]
    args = ", ".join(a.problem.inputs)
    return (HEADER.format(title="The reference's GEMM and its epilogue in one Triton kernel.",
                          key=a.problem.key, params=dict(params))
            + reference_block(a.problem) + HELPERS + kernel
            + f"\n\ndef run({args}):\n" + indent(body) + "\n")
