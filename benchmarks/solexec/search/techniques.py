"""The technique library: ways to turn a problem's reference into a faster candidate.

A Technique has a name, the categories it is meant for, a search space over its launch
parameters (Optuna distributions), defaults that are a sound first try, and two calls:
`applies_to(problem)` and `render(problem, params)`, which returns the candidate's
editable files ({"solution.py": source}). Rendering needs no GPU and imports no Triton;
whether a candidate is correct and fast is for the evaluator to say.

* compile_default / compile_max_autotune / compile_reduce_overhead: the reference under
  torch.compile in that mode (dynamic=False), compiling in-process, with the compiler's
  caches in the candidate's own build folder (the worker's working directory).
* cuda_graph: the reference (eager or compiled) captured in a CUDA graph per input
  signature, for launch-bound workloads; inputs are copied into the graph's static
  buffers on every call and the outputs cloned out, so nothing is cached across calls.
* triton_elementwise, triton_rows, triton_softmax_online, triton_gemm_epilogue: Triton
  kernels generated from the traced ops (templates.py, gemm.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution

from benchmarks.solexec.problems import Problem
from benchmarks.solexec.search import gemm, templates
from benchmarks.solexec.search.analysis import Analysis, analyse
from benchmarks.solexec.search.codegen import Unsupported

ALL = ("gemm", "gemm_epilogue", "elementwise", "norm", "row_reduction", "softmax",
       "attention", "quant", "conv", "fused_block", "other")


@dataclass(frozen=True)
class Technique:
    name: str
    categories: tuple[str, ...]  # what it is meant for; applies_to decides per problem
    params: dict[str, BaseDistribution]  # the search space (empty: nothing to tune)
    defaults: dict[str, Any]
    build: Callable[[Analysis, Mapping], str] = field(repr=False)
    fits: Callable[[Analysis], bool] = field(repr=False, default=lambda a: True)
    feasible: Callable[[Mapping], bool] = field(repr=False, default=lambda params: True)
    weight: float = 1.0  # the offline proposer's odds of trying it before the others (WEIGHTS)
    # wraps a candidate's own `run` (build gets its source) rather than replacing the file:
    # applied to a parent that carries another technique, it adds itself to that one
    wraps: bool = False

    def applies_to(self, problem: Problem) -> bool:
        return self.fits(analyse(problem))

    def render(self, problem: Problem, params: Mapping | None = None,
               source: str | None = None) -> dict[str, str]:
        """The candidate's files for these launch parameters (defaults for those not given),
        from the reference, or around `source` (the parent's solution) for a technique that
        wraps (the others ignore it); raises Unsupported where the technique does not
        apply."""
        chosen = {**self.defaults, **dict(params or {})}
        if self.wraps and source is not None:
            return {"solution.py": self.build(analyse(problem), chosen, source)}
        return {"solution.py": self.build(analyse(problem), chosen)}

    def apply(self, problem: Problem) -> dict[str, str]:
        return self.render(problem)


def _choice(*values: Any) -> CategoricalDistribution:
    return CategoricalDistribution(list(values))


# ---------------------------------------------------------------------------- compile

CACHE_SETUP = '''
# The compiler's caches live in this candidate's own build folder: the evaluator's worker
# names them there (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) and works in that folder.
import torch as _torch
import torch._dynamo as _dynamo
import torch._inductor.config as _inductor_config

# One graph per input shape (dynamic=False) and a recompile limit no workload list reaches
# (past it torch would run eagerly without a word); compiled in this process, since the
# evaluator refuses child processes.
_dynamo.config.cache_size_limit = 4096
if hasattr(_dynamo.config, "recompile_limit"):
    _dynamo.config.recompile_limit = 4096
_inductor_config.compile_threads = 1
'''


def _compiled(mode: str) -> Callable[[Analysis, Mapping], str]:
    def build(a: Analysis, params: Mapping) -> str:
        return (a.problem.reference.rstrip() + "\n\n" + CACHE_SETUP
                + f'\n_reference_run = run\nrun = _torch.compile(_reference_run, mode="{mode}", '
                "dynamic=False)\n")
    return build


# ---------------------------------------------------------------------------- CUDA graphs

GRAPH_TAIL = '''

# A CUDA graph per input signature (shapes, dtypes, strides, device and scalar values), for
# workloads of at most GRAPH_MAX_ELEMENTS input elements, where launches dominate. Each call
# copies its inputs into the graph's static buffers, replays it, and returns clones of the
# static outputs: nothing computed for one call is handed to another.
GRAPH_MAX_ELEMENTS = {max_elements}
GRAPH_WARMUP_CALLS = 3
_graph_table = {{}}
_graph_inner = {inner}


def _graph_signature(args):
    return tuple((tuple(a.shape), a.dtype, tuple(a.stride()), str(a.device))
                 if isinstance(a, _torch.Tensor) else (type(a).__name__, a) for a in args)


def _graph_capture(args):
    static = [a.clone() if isinstance(a, _torch.Tensor) else a for a in args]
    side = _torch.cuda.Stream()
    side.wait_stream(_torch.cuda.current_stream())
    with _torch.cuda.stream(side), _torch.no_grad():
        for _ in range(GRAPH_WARMUP_CALLS):
            _graph_inner(*static)
    _torch.cuda.current_stream().wait_stream(side)
    graph = _torch.cuda.CUDAGraph()
    with _torch.cuda.graph(graph), _torch.no_grad():
        out = _graph_inner(*static)
    return graph, static, out


def _graph_clone(out):
    if isinstance(out, _torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_graph_clone(o) for o in out)
    if isinstance(out, dict):
        return {{k: _graph_clone(v) for k, v in out.items()}}
    return out


def run({params}):
    args = ({params},)
    tensors = [a for a in args if isinstance(a, _torch.Tensor)]
    if not tensors or not all(t.is_cuda for t in tensors) or sum(
            t.numel() for t in tensors) > GRAPH_MAX_ELEMENTS:
        return _graph_inner(*args)
    key = _graph_signature(args)
    if key not in _graph_table:
        _graph_table[key] = _graph_capture(args)
    graph, static, out = _graph_table[key]
    for buffer, a in zip(static, args):
        if isinstance(a, _torch.Tensor):
            buffer.copy_(a)
    graph.replay()
    return _graph_clone(out)
'''


def _graph_fits(a: Analysis) -> bool:
    """Capture needs control flow that does not read values, and inputs left as they are
    (a reference that updates an input would update the static buffer instead)."""
    return not a.data_dependent and not a.writes_inputs


def _graphed(a: Analysis, params: Mapping, source: str | None = None) -> str:
    """The graph around `run` of `source` (by default the reference): a candidate's own
    `run` (a generated kernel's launches, say) is captured as the reference's would be.
    The compiler is imported only for the compiled inner run: importing it costs a worker
    seconds."""
    # the parent's `run` under a name of the graph's own (its names start with `_graph` or
    # `GRAPH`, besides `_torch`): a generated kernel's file keeps the reference as
    # `_reference_run` for the shapes it does not take, which must stay
    inner = "_graph_parent_run"
    if params["inner"] == "compile" and source is not None and (
            source.strip() != a.problem.reference.strip()):
        raise Unsupported("the compiled inner run is the reference's; around a candidate's "
                          "own run the graph replays that run as it is (inner=eager)")
    body = (a.problem.reference if source is None else source).rstrip() + "\n\n"
    if params["inner"] == "compile":
        body += CACHE_SETUP + "\n_graph_parent_run = run\n"
        body += ('_compiled_run = _torch.compile(_graph_parent_run, mode="default", '
                 "dynamic=False)\n")
        inner = "_compiled_run"
    else:
        body += "import torch as _torch\n\n_graph_parent_run = run\n"
    return body + GRAPH_TAIL.format(max_elements=int(params["max_elements"]), inner=inner,
                                    params=", ".join(a.problem.inputs))


# ---------------------------------------------------------------------------- Triton


def _fits(render: Callable[[Analysis, Mapping], str], defaults: Mapping
          ) -> Callable[[Analysis], bool]:
    def fits(a: Analysis) -> bool:
        try:
            render(a, defaults)
        except Unsupported:
            return False
        return True
    return fits


def _triton(name: str, categories: tuple[str, ...], params: dict, defaults: dict,
            render: Callable[[Analysis, Mapping], str], **kw: Any) -> Technique:
    return Technique(name, categories, params, defaults, render, _fits(render, defaults), **kw)


TECHNIQUES: dict[str, Technique] = {t.name: t for t in [
    Technique("compile_default", ALL, {}, {}, _compiled("default")),
    Technique("compile_max_autotune", ALL, {}, {}, _compiled("max-autotune-no-cudagraphs")),
    Technique("compile_reduce_overhead", ALL, {}, {}, _compiled("reduce-overhead")),
    Technique("cuda_graph", ALL,
              {"inner": _choice("eager", "compile"),
               "max_elements": _choice(1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24)},
              {"inner": "eager", "max_elements": 1 << 20}, _graphed, _graph_fits, wraps=True),
    _triton("triton_elementwise", ("elementwise",),
            {"BLOCK": _choice(256, 512, 1024, 2048, 4096), "num_warps": _choice(1, 2, 4, 8)},
            {"BLOCK": 1024, "num_warps": 4}, templates.render_elementwise),
    _triton("triton_rows", ("norm", "row_reduction", "softmax"),
            {"BLOCK_M": _choice(1, 2, 4, 8, 16), "num_warps": _choice(1, 2, 4, 8, 16)},
            {"BLOCK_M": 1, "num_warps": 4}, templates.render_rows),
    _triton("triton_softmax_online", ("softmax",),
            {"BLOCK_M": _choice(1, 2, 4), "BLOCK_N": _choice(256, 512, 1024, 2048, 4096),
             "num_warps": _choice(2, 4, 8, 16)},
            {"BLOCK_M": 1, "BLOCK_N": 1024, "num_warps": 4}, templates.render_softmax_online),
    _triton("triton_gemm_epilogue", ("gemm", "gemm_epilogue"),
            {"BLOCK_M": _choice(32, 64, 128, 256), "BLOCK_N": _choice(32, 64, 128, 256),
             "BLOCK_K": _choice(32, 64, 128), "GROUP_M": _choice(1, 4, 8),
             "num_warps": _choice(4, 8), "num_stages": _choice(2, 3, 4, 5),
             "fp32_dot": _choice("ieee", "tf32")},
            {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
             "num_stages": 3, "fp32_dot": "ieee"},
            gemm.render, feasible=gemm.feasible),
]}


# The offline proposer's prior odds, from what the H100 measurements show (RESULTS.md): the
# reference's time is at a median 32 times its speed of light, most of it the host's launches
# of small kernels, which one graph replay or one generated kernel removes; autotuning
# compiles for minutes a trial (336-366 s of warm-up on a row reduction of 15 shapes) and
# has not been accepted yet, though it led on one seed of an elementwise problem (L1-028);
# and T_b is already the faster of the reference eager and under torch.compile's default
# mode on each workload, so compile_default can at best tie with it. A win anywhere still
# outweighs these: a technique accepted on a related problem is tried first there.
WEIGHTS = {"cuda_graph": 4.0, "triton_elementwise": 2.0, "triton_rows": 2.0,
           "triton_softmax_online": 2.0, "triton_gemm_epilogue": 2.0,
           "compile_max_autotune": 0.5, "compile_default": 0.25}
TECHNIQUES = {name: replace(t, weight=WEIGHTS.get(name, 1.0)) for name, t in TECHNIQUES.items()}


def applicable(problem: Problem) -> list[Technique]:
    """The techniques that apply to the problem, generated kernels first."""
    found = [t for t in TECHNIQUES.values() if t.applies_to(problem)]
    return sorted(found, key=lambda t: not t.name.startswith("triton_"))
