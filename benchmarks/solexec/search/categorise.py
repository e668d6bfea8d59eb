"""A category and an operator signature for each problem, from its traced op graph.

The rules read the aten ops the reference ran (graph.py), in this order:

* quant: an fp8/fp4 tensor anywhere (inputs or traced), or a scaled/int matmul;
* attention: a fused attention op, or two batched matmuls around a softmax; with other
  contractions too (the projections around it) it is a fused_block;
* with contractions (mm, addmm, bmm, convolution): convolutions alone or with pointwise
  ops are conv; contractions that feed one another, or come with norms, softmax,
  reductions or indexing, are a fused_block; otherwise gemm, or gemm_epilogue when
  pointwise ops come with them (bias, activation, residual, scaling);
* without: indexing, sorting, scans or scatters make it other; then norm (a norm op, or a
  mean/var reduction followed by rsqrt/sqrt/div), softmax, row_reduction, elementwise.

A reference that cannot be traced (no runnable workload here, or values the fallback
cannot supply) is categorised from its source text by the same families, matched as
calls. The signature is the category, the sorted set of compute ops and the input dtypes:
two problems with the same signature are the same computation up to shapes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import torch

from benchmarks.solexec.build import smallest_workload
from benchmarks.solexec.problems import Problem
from benchmarks.solexec.search.graph import Graph, Node, refs, trace_any

CATEGORIES = ("gemm", "gemm_epilogue", "elementwise", "norm", "row_reduction", "softmax",
              "attention", "quant", "conv", "fused_block", "other")
QUANT_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2, torch.float4_e2m1fn_x2})
QUANT_OPS = frozenset({"_scaled_mm", "_int_mm"})
MATMULS = frozenset({"mm", "addmm", "matmul", "linear", "einsum", "addmv", "mv", "dot"})
BATCHED = frozenset({"bmm", "baddbmm", "addbmm"})
CONVS = frozenset({"convolution", "_convolution", "conv1d", "conv2d", "conv3d"})
MOVEMENT = frozenset({"cat", "stack", "constant_pad_nd", "roll", "repeat", "tril", "triu",
                      "flip", "_local_scalar_dense", "fill_", "zero_", "copy_",
                      "split_with_sizes_copy", "index_select", "index", "gather"})  # fmt: skip
NORM_ROOTS = frozenset({"rsqrt", "sqrt", "reciprocal", "div"})
NORM_STATS = frozenset({"mean", "var", "std", "var_mean", "linalg_vector_norm", "norm"})


@dataclass(frozen=True)
class Signature:
    """What a problem computes, for carrying techniques between related problems."""

    category: str
    ops: tuple[str, ...]  # compute ops of the trace, sorted, each once
    dtypes: tuple[str, ...]  # input tensor dtypes, sorted, each once
    traced: bool  # False: categorised from the source text

    @property
    def key(self) -> str:
        return f"{self.category}|{','.join(self.ops)}|{','.join(self.dtypes)}"


def _input_dtypes(problem: Problem) -> tuple[str, ...]:
    return tuple(sorted({s.dtype for s in problem.inputs.values() if s.shape is not None}))


def signature(problem: Problem, graph: Graph | None = None) -> Signature:
    """The problem's category and signature; traces the reference unless given its graph."""
    if graph is None:
        workload = smallest_workload(problem)
        try:
            graph = trace_any(problem, workload) if workload is not None else None
        except Exception:  # noqa: BLE001 - the source text decides instead
            graph = None
    dtypes = _input_dtypes(problem)
    if graph is None:
        ops = tuple(sorted(_source_ops(problem.reference)))
        return Signature(_from_source(problem, set(ops)), ops, dtypes, traced=False)
    ops = tuple(sorted({n.op for n in graph.compute_nodes()} - {"_local_scalar_dense"}))
    return Signature(categorise_graph(graph, dtypes), ops, dtypes, traced=True)


def category(problem: Problem) -> str:
    return signature(problem).category


def categorise_graph(graph: Graph, input_dtypes: tuple[str, ...] = ()) -> str:
    nodes = graph.compute_nodes()
    ops = Counter(n.op for n in nodes)
    kinds = Counter(n.kind for n in nodes if n.op not in MOVEMENT)
    if graph.dtypes() & QUANT_DTYPES or QUANT_OPS & set(ops) or any(
            d.startswith(("float8", "float4")) for d in input_dtypes):
        return "quant"
    batched = sum(ops[o] for o in BATCHED)
    plain = sum(ops[o] for o in MATMULS)
    convs = sum(ops[o] for o in CONVS)
    attention_core = kinds["attention"] > 0 or (kinds["softmax"] > 0 and batched >= 2)
    if attention_core:
        return "fused_block" if plain or convs else "attention"
    contractions = [n for n in nodes if n.kind == "contraction"]
    others = kinds["other"] > 0
    if contractions:
        heavy = kinds["norm"] or kinds["softmax"] or kinds["reduction"] or others
        if convs and not heavy and convs == len(contractions):
            return "conv"
        if heavy or convs or _chained(graph, contractions):
            return "fused_block"
        return "gemm_epilogue" if kinds["pointwise"] else "gemm"
    if others:
        return "other"
    if kinds["norm"] or _decomposed_norm(graph):
        return "norm"
    if kinds["softmax"]:
        return "softmax"
    if kinds["reduction"]:
        return "row_reduction"
    return "elementwise" if kinds["pointwise"] or nodes else "other"


def _chained(graph: Graph, contractions: list[Node]) -> bool:
    """Whether one contraction's output reaches another's input."""
    made_by = {}
    for i, node in enumerate(graph.nodes):
        for out in node.outputs:
            made_by[out] = i
    reach: dict[int, set[int]] = {}  # node index -> contraction nodes upstream of it
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    for i, node in enumerate(graph.nodes):
        upstream: set[int] = set()
        for r in refs((node.args, node.kwargs)):
            j = made_by.get(r.index)
            if j is not None:
                upstream |= reach.get(j, set())
                if graph.nodes[j].kind == "contraction":
                    upstream.add(j)
        reach[i] = upstream
    return any(reach[index[id(c)]] for c in contractions)


def _decomposed_norm(graph: Graph) -> bool:
    """A statistic (mean, var, norm) whose result reaches rsqrt/sqrt/div: a hand-written
    RMSNorm, LayerNorm or GroupNorm."""
    stats = {out for n in graph.nodes if n.op in NORM_STATS for out in n.outputs}
    if not stats:
        return False
    derived = set(stats)
    for node in graph.nodes:
        if any(r.index in derived for r in refs((node.args, node.kwargs))):
            if node.op in NORM_ROOTS:
                return True
            derived.update(node.outputs)
    return False


# ---------------------------------------------------------------------------- source text

_SOURCE_FAMILIES = {
    "attention": r"scaled_dot_product_attention|flash_attn|\battention\(",
    "softmax": r"\bsoftmax\(|\blog_softmax\(",
    "matmul": r"\bmatmul\(|\bmm\(|\bbmm\(|\blinear\(|\beinsum\(|[^@]@[^@=]",
    "conv": r"\bconv[123]d\(|\bconvolution\(",
    "norm": r"layer_norm\(|rms_norm\(|group_norm\(|\brsqrt\(",
    "reduction": r"\.(sum|mean|amax|amin|max|min|var|std|logsumexp)\(",
    "other": r"\b(nonzero|topk|sort|argsort|scatter\w*|gather|index_\w+|cumsum|bincount|"
             r"searchsorted|unique|embedding)\(",
    "pointwise": r"\b(exp|sigmoid|silu|gelu|relu|tanh|sqrt|pow)\(|[^*]\*[^*]|\+",
}  # fmt: skip


def _source_ops(source: str) -> set[str]:
    code = re.sub(r'"""[\s\S]*?"""|#[^\n]*', "", source)
    return {name for name, pattern in _SOURCE_FAMILIES.items() if re.search(pattern, code)}


def _from_source(problem: Problem, families: set[str]) -> str:
    if any(d.startswith(("float8", "float4")) for d in _input_dtypes(problem)):
        return "quant"
    if "attention" in families or ("softmax" in families and "matmul" in families):
        return "attention"
    if "matmul" in families or "conv" in families:
        if families & {"norm", "softmax", "other"}:
            return "fused_block"
        if "conv" in families:
            return "conv"
        return "gemm_epilogue" if "pointwise" in families else "gemm"
    for family in ("other", "norm", "softmax"):
        if family in families:
            return family
    if "reduction" in families:
        return "row_reduction"
    return "elementwise" if "pointwise" in families else "other"
