"""The offline kernel search's technique library (benchmarks/solexec/search): generated
Triton kernels against their references under Triton's CPU interpreter, categories of real
problems, the compile techniques through the trusted evaluator on CPU, CUDA-graph wrapping,
and the tuner on a toy space. Small problems are written here in the public layout."""

from __future__ import annotations

import importlib.util
import json
import os
import textwrap
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch
from optuna.distributions import CategoricalDistribution

from benchmarks.protocol import EditNotApplicable
from benchmarks.solexec.build import check_files, smallest_workload
from benchmarks.solexec.evaluate import Timing, evaluate_problem
from benchmarks.solexec.launch import Forkserver
from benchmarks.solexec.problems import (
    check_outputs,
    load_problems,
    make_inputs,
    run_reference,
    shrink,
)
from benchmarks.solexec.search import TECHNIQUES, Technique, Unsupported, signature, tune
from benchmarks.solexec.search.analysis import analyse

DATA = Path(os.environ.get("AUTOLAB_SOLEXEC_DIR", Path(__file__).resolve().parents[2] / "shared"
                           / "data" / "sol-execbench"))
FAST = Timing(warmup=1, reps=2, call_timeout_s=120.0, load_timeout_s=120.0,
              flush_bytes=1 << 16, max_elements=256, settle_s=0.01, idle_cpu_floor_ms=5.0,
              stage_gap_s=0.05)
needs_data = pytest.mark.skipif(not (DATA / "benchmark").is_dir() and not DATA.is_dir(),
                                reason=f"the SOL-ExecBench data is not at {DATA} "
                                "(set AUTOLAB_SOLEXEC_DIR)")


def problem(tmp_path: Path, name: str, reference: str, inputs: dict, outputs: dict,
            axes: dict, workloads: list[dict], tolerance: float = 1e-4):
    """A problem in the public layout, written under tmp_path and loaded as the dataset is."""
    folder = tmp_path / "bench" / "L1" / name
    folder.mkdir(parents=True)
    spec = lambda s: {"shape": s[0], "dtype": s[1]}  # noqa: E731
    (folder / "definition.json").write_text(json.dumps({
        "name": name, "description": "", "reference": textwrap.dedent(reference),
        "axes": {k: ({"type": "var"} if v is None else {"type": "const", "value": v})
                 for k, v in axes.items()},
        "inputs": {k: spec(v) for k, v in inputs.items()},
        "outputs": {k: spec(v) for k, v in outputs.items()}}))
    lines = []
    for i, w in enumerate(workloads):
        scalars = {k: {"type": "scalar", "value": w.pop(k)} for k in list(w) if k in inputs}
        sources = {k: scalars.get(k, {"type": "random"}) for k in inputs}
        lines.append(json.dumps({"uuid": f"w{i}", "axes": w, "inputs": sources,
                                 "tolerance": {"max_atol": tolerance, "max_rtol": tolerance}}))
    (folder / "workload.jsonl").write_text("\n".join(lines) + "\n")
    return next(p for p in load_problems(tmp_path / "bench") if p.name == name)


def run_candidate(p, files: dict[str, str], folder: Path, seed: int = 1):
    """The candidate imported here and checked against the reference on every workload."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    assert check_files(p, folder) is None
    spec = importlib.util.spec_from_file_location(f"candidate_{folder.name}",
                                                  folder / "solution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for w in p.workloads:
        inputs = make_inputs(p, w, seed=seed)
        want = run_reference(p, {k: v.clone() if isinstance(v, torch.Tensor) else v
                                 for k, v in inputs.items()})
        got = module.run(*(inputs[n] for n in p.inputs))
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        check = check_outputs(got, want, w.tolerance)
        assert check.passed, (w.axes, check.detail)
    return module


GEGLU = """
    import torch
    import torch.nn.functional as F

    def run(x, bias, scale):
        gate, value = x.chunk(2, dim=-1)
        return F.gelu(gate, approximate="tanh") * value * scale + bias
"""
RMSNORM = """
    import torch

    def run(hidden, residual, weight, eps):
        x = (hidden + residual).to(torch.float32)
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return (weight * (x * rstd).to(torch.float16)), (hidden + residual)
"""
SOFTMAX = """
    import torch

    def run(scores, scale):
        return torch.softmax(torch.tanh(scores * scale) * 5.0, dim=-1)
"""
LINEAR = """
    import torch
    import torch.nn.functional as F

    def run(x, weight, bias, residual):
        return F.gelu(F.linear(x, weight) + bias) + residual
"""


@pytest.fixture
def triton_on_cpu():
    pytest.importorskip("triton", reason="triton is not installed")
    assert os.environ.get("TRITON_INTERPRET") == "1"


def geglu(tmp_path):
    return problem(tmp_path, "001_geglu", GEGLU,
                   {"x": (["B", "S", "D2"], "float32"), "bias": (["D"], "float32"),
                    "scale": (None, "float32")},
                   {"out": (["B", "S", "D"], "float32")}, {"B": None, "S": None, "D": 48,
                                                           "D2": 96},
                   [{"B": 2, "S": 5, "scale": 0.5}, {"B": 1, "S": 3, "scale": 2.0}])


def test_the_elementwise_template_fuses_a_chunked_gelu_gate(tmp_path, triton_on_cpu):
    p = geglu(tmp_path)
    for block in (64, 256):
        files = TECHNIQUES["triton_elementwise"].render(p, {"BLOCK": block})
        assert "@triton.jit" in files["solution.py"] and "s_scale" in files["solution.py"]
        run_candidate(p, files, tmp_path / f"ew{block}")


def test_the_row_template_takes_a_residual_rmsnorm_with_two_outputs(tmp_path, triton_on_cpu):
    p = problem(tmp_path, "002_rmsnorm", RMSNORM,
                {"hidden": (["T", "H"], "float16"), "residual": (["T", "H"], "float16"),
                 "weight": (["H"], "float16"), "eps": (None, "float32")},
                {"out": (["T", "H"], "float16"), "sum": (["T", "H"], "float16")},
                {"T": None, "H": 40}, [{"T": 7, "eps": 1e-6}, {"T": 3, "eps": 1e-5}],
                tolerance=1e-3)
    assert signature(p).category == "norm"
    assert not TECHNIQUES["triton_elementwise"].applies_to(p)
    for block_m in (1, 4):
        run_candidate(p, TECHNIQUES["triton_rows"].render(p, {"BLOCK_M": block_m}),
                      tmp_path / f"rows{block_m}")


def test_softmax_single_pass_and_online_agree_with_the_reference(tmp_path, triton_on_cpu):
    p = problem(tmp_path, "003_softmax", SOFTMAX,
                {"scores": (["B", "N"], "float32"), "scale": (None, "float32")},
                {"probs": (["B", "N"], "float32")}, {"B": None, "N": None},
                [{"B": 3, "N": 150, "scale": 0.3}, {"B": 5, "N": 37, "scale": 1.5}])
    assert signature(p).category == "softmax"
    run_candidate(p, TECHNIQUES["triton_rows"].render(p, {"BLOCK_M": 2}), tmp_path / "rows")
    online = TECHNIQUES["triton_softmax_online"]
    for block_n in (16, 256):  # rows longer than a block take several steps
        run_candidate(p, online.render(p, {"BLOCK_M": 2, "BLOCK_N": block_n}),
                      tmp_path / f"online{block_n}")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_gemm_template_fuses_bias_activation_and_residual(tmp_path, triton_on_cpu, dtype):
    p = problem(tmp_path, f"004_linear_{dtype}", LINEAR,
                {"x": (["B", "S", "K"], dtype), "weight": (["N", "K"], dtype),
                 "bias": (["N"], dtype), "residual": (["B", "S", "N"], dtype)},
                {"out": (["B", "S", "N"], dtype)}, {"B": None, "S": None, "K": 40, "N": 24},
                [{"B": 2, "S": 9}, {"B": 1, "S": 3}], tolerance=1e-2)
    assert signature(p).category == "gemm_epilogue"
    technique = TECHNIQUES["triton_gemm_epilogue"]
    params = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_stages": 2}
    run_candidate(p, technique.render(p, params), tmp_path / "gemm")
    assert technique.feasible(technique.defaults)
    assert not technique.feasible({**technique.defaults, "BLOCK_M": 256, "BLOCK_N": 256,
                                   "BLOCK_K": 128, "num_stages": 5})


def test_generated_kernels_refuse_what_they_cannot_express(tmp_path):
    p = problem(tmp_path, "005_transpose", "def run(x):\n    return (x.t() * 2.0).contiguous()\n",
                {"x": (["M", "N"], "float32")}, {"y": (["N", "M"], "float32")},
                {"M": None, "N": None}, [{"M": 4, "N": 6}, {"M": 8, "N": 3}])
    assert not TECHNIQUES["triton_elementwise"].applies_to(p)
    with pytest.raises(Unsupported, match="layout"):
        TECHNIQUES["triton_elementwise"].render(p)
    shape_scaled = problem(tmp_path, "006_mean_by_hand",
                           "def run(x):\n    return x.sum(-1, keepdim=True) / x.shape[-1] * x\n",
                           {"x": (["M", "N"], "float32")}, {"y": (["M", "N"], "float32")},
                           {"M": None, "N": None}, [{"M": 4, "N": 6}, {"M": 8, "N": 3}])
    assert "derived from the workload" in analyse(shape_scaled).why_not


# ---------------------------------------------------------------------------- categories


@pytest.fixture(scope="module")
def real():
    if not DATA.is_dir():
        pytest.skip(f"the SOL-ExecBench data is not at {DATA} (set AUTOLAB_SOLEXEC_DIR)")
    keys = ["L1/069_rms_norm", "L1/085_geglu_activation", "L1/030_attention_output_projection_"
            "with_residual", "L1/046_attention_softmax_with_softcapping_and_dropout",
            "L1/041_strided_conv2d_downsampling", "L2/002_decoder_layer_full_block",
            "Quant/003_fp8_mlp_gate_up_projection", "FlashInfer-Bench/004_gemm_n128_k2048",
            "FlashInfer-Bench/012_gqa_paged_decode_h32_kv4_d128_ps1"]
    found = {p.key: p for p in load_problems(DATA) if p.key in keys}
    if len(found) != len(keys):
        pytest.skip(f"the data at {DATA} lacks {sorted(set(keys) - set(found))}")
    return found


@needs_data
def test_real_problems_get_the_category_their_ops_say(real):
    want = {
        "L1/069_rms_norm": "norm",
        "L1/085_geglu_activation": "elementwise",
        "L1/030_attention_output_projection_with_residual": "gemm_epilogue",
        "L1/046_attention_softmax_with_softcapping_and_dropout": "softmax",
        "L1/041_strided_conv2d_downsampling": "conv",
        "L2/002_decoder_layer_full_block": "fused_block",
        "Quant/003_fp8_mlp_gate_up_projection": "quant",
        "FlashInfer-Bench/004_gemm_n128_k2048": "gemm",
        "FlashInfer-Bench/012_gqa_paged_decode_h32_kv4_d128_ps1": "attention",
    }
    sigs = {k: signature(real[k]) for k in want}
    assert {k: s.category for k, s in sigs.items()} == want
    assert not sigs["FlashInfer-Bench/012_gqa_paged_decode_h32_kv4_d128_ps1"].traced  # no
    # workload runs here (its inputs are safetensors blobs): read from the source text
    assert sigs["L1/069_rms_norm"].key == "norm|add,mean,mul,pow,rsqrt|bfloat16"
    applies = {k: {t.name for t in TECHNIQUES.values() if t.applies_to(real[k])} for k in want}
    assert "triton_rows" in applies["L1/069_rms_norm"]
    assert "triton_elementwise" in applies["L1/085_geglu_activation"]
    assert "triton_gemm_epilogue" in applies["L1/030_attention_output_projection_with_residual"]
    assert "triton_softmax_online" in applies[
        "L1/046_attention_softmax_with_softcapping_and_dropout"]
    assert "cuda_graph" in applies["L2/002_decoder_layer_full_block"]


# ---------------------------------------------------------------------------- compile, graphs


@needs_data
def test_a_compiled_reference_passes_the_trusted_evaluator_on_cpu(real, tmp_path):
    """The real geglu problem under torch.compile, run by the evaluator's worker on CPU:
    built, correct on fresh inputs every call, the compiler's cache in its build folder."""
    p = real["L1/085_geglu_activation"]
    sources = {name: TECHNIQUES[name].render(p)["solution.py"] for name in
               ("compile_default", "compile_max_autotune", "compile_reduce_overhead")}
    for name, mode in [("compile_default", '"default"'),
                       ("compile_max_autotune", '"max-autotune-no-cudagraphs"'),
                       ("compile_reduce_overhead", '"reduce-overhead"')]:
        assert f"mode={mode}, dynamic=False" in sources[name]
        assert "compile_threads = 1" in sources[name]
    folder = tmp_path / "compiled"
    folder.mkdir()
    (folder / "solution.py").write_text(sources["compile_default"])
    workload = shrink(p, smallest_workload(p), FAST.max_elements)
    with Forkserver() as server:
        result = evaluate_problem(p, folder, FAST, workloads=[workload], launch=server.launch,
                                  build_dir=tmp_path / "build", seed=3)
    assert result.passed, (result.workloads, result.log_tail[-2000:])
    assert (tmp_path / "build" / "compile-cache" / "inductor").is_dir()


def test_cuda_graph_wraps_the_reference_and_runs_it_as_is_off_the_gpu(tmp_path):
    p = geglu(tmp_path)
    files = TECHNIQUES["cuda_graph"].render(p, {"max_elements": 1 << 10})
    module = run_candidate(p, files, tmp_path / "graph")
    assert module.GRAPH_MAX_ELEMENTS == 1 << 10 and module._graph_table == {}  # CPU: none
    x = torch.ones(2, 3)
    sig = module._graph_signature
    assert sig((x, 1.0)) != sig((x, 2.0))  # scalars are keyed
    assert sig((x, 1.0)) != sig((x.t(), 1.0))  # layouts too
    compiled = TECHNIQUES["cuda_graph"].render(p, {"inner": "compile"})["solution.py"]
    assert "_graph_inner = _compiled_run" in compiled
    writes = problem(tmp_path, "007_inplace", "def run(cache, x):\n    cache.add_(x)\n"
                     "    return cache * 2.0\n",
                     {"cache": (["N"], "float32"), "x": (["N"], "float32")},
                     {"y": (["N"], "float32")}, {"N": None}, [{"N": 4}, {"N": 8}])
    assert not TECHNIQUES["cuda_graph"].applies_to(writes)
    assert TECHNIQUES["compile_default"].applies_to(writes)


def test_an_eager_graph_imports_no_compiler_and_wraps_a_parent_s_own_kernels(tmp_path,
                                                                             triton_on_cpu):
    """The graph around the reference eager imports nothing of torch.compile (a worker of a
    solution that does imports the compiler, seconds a trial); applied to a parent with a
    generated kernel, it wraps that parent's `run`, kernels and all."""
    from benchmarks.solexec.benchmark import _technique_edit, uses_compile

    p = geglu(tmp_path)
    eager = TECHNIQUES["cuda_graph"].render(p, {"inner": "eager"})["solution.py"]
    assert "_dynamo" not in eager and "_inductor" not in eager and ".compile" not in eager
    (tmp_path / "eager").mkdir()
    (tmp_path / "eager" / "solution.py").write_text(eager)
    assert not uses_compile(tmp_path / "eager")
    graph, kernel = (_technique_edit(p, TECHNIQUES[n])
                     for n in ("cuda_graph", "triton_elementwise"))
    parent = kernel.apply(p.reference, BLOCK=256, num_warps=4)
    stacked = graph.apply(parent, inner="eager", max_elements=1 << 20)
    assert stacked.startswith("# technique: cuda_graph\n# technique: triton_elementwise\n")
    assert parent.rstrip() in stacked and "@triton.jit" in stacked
    module = run_candidate(p, {"solution.py": stacked}, tmp_path / "stacked")
    import inspect

    assert inspect.getsource(module._graph_parent_run) in parent  # the parent's own run
    assert inspect.getsource(module._graph_parent_run) not in p.reference
    with pytest.raises(EditNotApplicable, match="applied already"):
        graph.apply(stacked, inner="eager", max_elements=1 << 20)
    # a technique that replaces the file still starts from the reference
    alone = graph.apply(p.reference, inner="eager", max_elements=1 << 20)
    assert kernel.apply(alone, BLOCK=256, num_warps=4) == parent


def test_a_graph_around_a_row_kernel_keeps_its_fallback_to_the_reference(tmp_path,
                                                                         triton_on_cpu):
    """A row kernel's file runs rows too long for it through the reference it keeps as
    `_reference_run`; the graph around it must not take that name for the kernel's run
    (the fallback would then call itself)."""
    from benchmarks.solexec.benchmark import _technique_edit
    from benchmarks.solexec.search.templates import MAX_ROW

    p = problem(tmp_path, "003_softmax", SOFTMAX,
                {"scores": (["B", "N"], "float32"), "scale": (None, "float32")},
                {"probs": (["B", "N"], "float32")}, {"B": None, "N": None},
                [{"B": 3, "N": 150, "scale": 0.3}, {"B": 1, "N": MAX_ROW + 8, "scale": 1.5}])
    rows, graph = (_technique_edit(p, TECHNIQUES[n]) for n in ("triton_rows", "cuda_graph"))
    parent = rows.apply(p.reference, BLOCK_M=1, num_warps=4)
    run_candidate(p, {"solution.py": parent}, tmp_path / "rows")
    stacked = graph.apply(parent, inner="eager", max_elements=1 << 20)
    module = run_candidate(p, {"solution.py": stacked}, tmp_path / "stacked")
    assert module._reference_run is not module.run
    with pytest.raises(EditNotApplicable, match="compiled inner run is the reference's"):
        graph.apply(parent, inner="compile", max_elements=1 << 20)
    assert "_torch.compile(_graph_parent_run" in graph.apply(p.reference, inner="compile",
                                                             max_elements=1 << 20)


# ---------------------------------------------------------------------------- tune


def test_tune_finds_the_best_parameters_of_a_toy_space_and_never_repeats_one(tmp_path):
    p = geglu(tmp_path)
    toy = Technique(
        "toy", ("elementwise",),
        {"a": CategoricalDistribution([1, 2, 3, 4]), "b": CategoricalDistribution(["x", "y"])},
        {"a": 1, "b": "x"}, lambda a, params: f"# {params['a']} {params['b']}\n",
        feasible=lambda params: params["a"] != 4)
    calls = []

    def fake_time(files, params):
        calls.append(params)
        assert files["solution.py"] == f"# {params['a']} {params['b']}\n"
        if params["a"] == 2:
            return None  # a candidate that fails
        return (params["a"] - 3) ** 2 + (params["b"] != "y") + 1.0

    result = tune(p, toy, 6, fake_time, seed=1)
    assert result.best_params == {"a": 3, "b": "y"} and result.best_time == 1.0
    assert calls[0] == {"a": 1, "b": "x"}  # the defaults first
    assert all(c["a"] != 4 for c in calls)  # infeasible sets are never evaluated
    assert len({tuple(sorted(c.items())) for c in calls}) == len(calls) == 6
    assert result.failures == 2
    fixed = tune(p, replace(TECHNIQUES["compile_default"]), 5, lambda files, params: 2.5)
    assert fixed.trials == [({}, 2.5)]  # nothing to tune: one candidate
