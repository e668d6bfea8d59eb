"""Roofline (T_SOL) estimates: FLOPs, bytes, precision, devices, meta execution, and
hand-computed counts for the kernels the benchmark is made of.

Everything but the last test builds its own tiny inputs; the last one reads a few real
problems through the loader and is skipped where the dataset is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import torch
import torch.nn.functional as F

from benchmarks.solexec.problems import load_problems
from benchmarks.solexec.roofline import DEVICES, count, count_workload, device_spec, estimate, price
from benchmarks.solexec.tracing import SolUnavailable

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(
    os.environ.get("AUTOLAB_SOLEXEC_DIR", ROOT.parent / "shared" / "data" / "sol-execbench")
)
SPECS = list(DEVICES.values())
B200 = DEVICES["B200"]


def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


# --- FLOPs, bytes, bound ----------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_gemm_is_2mnk_flops_and_compute_bound_when_large(spec):
    m, n, k = 8192, 8192, 8192
    sol = estimate(matmul, {"a": meta(m, k), "b": meta(k, n)}, spec)
    assert sol.tensor_core_flops == 2 * m * n * k
    assert sol.bytes == (m * k + k * n + m * n) * 2
    assert sol.bound == "compute"
    assert sol.t_sol_s == pytest.approx(2 * m * n * k / spec.tensor_peaks["bf16"])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_skinny_gemm_is_memory_bound(spec):
    m, n, k = 8, 8192, 8192
    sol = estimate(matmul, {"a": meta(m, k), "b": meta(k, n)}, spec)
    assert sol.tensor_core_flops == 2 * m * n * k
    assert sol.bound == "memory"
    assert sol.t_sol_s == pytest.approx((m * k + k * n + m * n) * 2 / spec.hbm_bandwidth)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_elementwise_op_is_memory_bound_and_moves_input_plus_output(spec):
    x = meta(4096, 4096, dtype=torch.float32)
    sol = estimate(lambda x: torch.relu(x * 2.0), {"x": x}, spec)
    assert sol.tensor_core_flops == 0
    assert sol.cuda_core_flops == 2 * x.numel()  # one FLOP per output element, two ops
    assert sol.input_bytes == sol.output_bytes == x.numel() * 4
    assert sol.bound == "memory"
    assert sol.t_sol_s == pytest.approx(2 * x.numel() * 4 / spec.hbm_bandwidth)


def test_a_tensor_passed_twice_is_read_once():
    x = meta(1024, 1024)
    sol = estimate(lambda a, b: a + b, {"a": x, "b": x}, DEVICES["B200"])
    assert sol.input_bytes == x.numel() * 2


def test_conv2d_flops():
    n, c, h, w, k, r = 8, 64, 56, 56, 128, 3
    inputs = {"x": meta(n, c, h, w), "weight": meta(k, c, r, r)}
    sol = estimate(lambda x, weight: F.conv2d(x, weight, padding=1), inputs, DEVICES["B200"])
    assert sol.tensor_core_flops == 2 * n * k * h * w * c * r * r


def test_linear_and_batched_matmul_flops():
    def block(x, w, q, kv):
        return F.linear(x, w), torch.bmm(q, kv)

    inputs = {"x": meta(64, 512), "w": meta(256, 512), "q": meta(4, 32, 16), "kv": meta(4, 16, 8)}
    sol = estimate(block, inputs, DEVICES["H100 SXM"])
    assert sol.tensor_core_flops == 2 * 64 * 256 * 512 + 2 * 4 * 32 * 8 * 16


# --- precision → peak -------------------------------------------------------------------


def big_square(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {"a": meta(16384, 16384, dtype=dtype), "b": meta(16384, 16384, dtype=dtype)}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_bf16_matmul_uses_the_bf16_tensor_core_peak(spec):
    sol = estimate(matmul, big_square(torch.bfloat16), spec)
    assert (sol.precision, sol.rate_class) == ("bf16", "bf16")
    assert sol.t_compute_s == pytest.approx(sol.tensor_core_flops / spec.tensor_peaks["bf16"])


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fp32_matmul_follows_the_leaderboard_policy(spec):
    """SOLAR's leaderboard setup (configs/execbench/leaderboard_b200.yaml, fp32_as: fp16)
    prices fp32 problems at the 16-bit tensor-core rate, not TF32; tf32 and the CUDA-core
    fp32 rate are its alternatives."""
    inputs = big_square(torch.float32)
    flops = 2 * 16384**3
    default = estimate(matmul, inputs, spec)
    assert (default.precision, default.rate_class) == ("fp32", "fp16")
    assert default.t_compute_s == pytest.approx(flops / spec.tensor_peaks["fp16"])
    tf32 = estimate(matmul, inputs, spec, fp32_as="tf32")
    assert tf32.t_compute_s == pytest.approx(flops / spec.tensor_peaks["tf32"])
    cuda_core = estimate(matmul, inputs, spec, fp32_as="fp32")
    assert cuda_core.t_compute_s == pytest.approx(flops / spec.cuda_core_fp32)


def test_one_precision_per_problem_from_its_narrowest_input():
    """A bf16 problem that upcasts to fp32 before its matmul is still priced at bf16."""
    sol = estimate(lambda a, b: a.float() @ b.float(), big_square(torch.bfloat16), DEVICES["B200"])
    assert sol.flops_by_class == {"tensor_core:float32": 2 * 16384**3, "cuda_core": 0}
    assert sol.rate_class == "bf16"


def test_quantised_dtype_anywhere_in_the_trace_sets_the_rate():
    def fp8_linear(a, b):
        aq, bq = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
        return (aq.to(torch.bfloat16) @ bq.to(torch.bfloat16).t()) * a.abs().amax().item()

    sol = estimate(fp8_linear, big_square(torch.bfloat16), DEVICES["B200"])
    assert sol.rate_class == "fp8"
    assert sol.t_compute_s == pytest.approx(2 * 16384**3 / DEVICES["B200"].tensor_peaks["fp8"])


def test_fp4_is_priced_at_fp8_on_parts_without_fp4_tensor_cores():
    assert DEVICES["H100 SXM"].peak("fp4") == DEVICES["H100 SXM"].tensor_peaks["fp8"]
    assert DEVICES["B200"].peak("fp4") == 2 * DEVICES["B200"].tensor_peaks["fp8"]


# --- devices ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("torch_name", "key"),
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200"),
        ("NVIDIA B200", "B200"),
        ("B200", "B200"),
    ],
)
def test_device_names_map_to_specs(torch_name, key):
    assert device_spec(torch_name) is DEVICES[key]


@pytest.mark.parametrize("torch_name", ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe", "Tesla T4"])
def test_unknown_or_different_parts_are_refused(torch_name):
    with pytest.raises(ValueError, match="no roofline spec"):
        device_spec(torch_name)


def test_datasheet_numbers():
    h100, h200, b200 = DEVICES["H100 SXM"], DEVICES["H200"], DEVICES["B200"]
    assert h100.hbm_bandwidth == 3.35e12 and h200.hbm_bandwidth == 4.8e12
    assert h100.tensor_peaks["bf16"] == pytest.approx(989.5e12)
    assert h200.tensor_peaks == h100.tensor_peaks
    assert b200.tensor_peaks["bf16"] == pytest.approx(2.25e15)
    assert b200.tensor_peaks["fp4"] == pytest.approx(9e15)
    assert "fp4" not in h100.tensor_peaks


# --- meta execution ---------------------------------------------------------------------


def test_meta_estimate_of_a_huge_shape_allocates_nothing():
    rss = psutil.Process().memory_info().rss
    n = 1 << 20  # two 2 TiB operands and a 2 TiB product
    sol = estimate(matmul, {"a": meta(n, n), "b": meta(n, n)}, DEVICES["B200"])
    assert sol.tensor_core_flops == 2 * n**3
    assert sol.bytes == 3 * n * n * 2
    assert psutil.Process().memory_info().rss - rss < 200 * 2**20


def test_reference_written_for_a_gpu_runs_on_meta():
    def reference(x):
        positions = torch.arange(x.shape[0], device="cuda", dtype=torch.float32)
        return (x.cuda() * positions[:, None]).to("cuda")

    sol = estimate(reference, {"x": meta(1000, 10, dtype=torch.float32)}, DEVICES["H200"])
    assert sol.output_bytes == 1000 * 10 * 4


def test_scale_reads_and_guards_run_on_meta():
    """Quantised references read a global scale back and test it; on meta it reads 1.0."""

    def reference(x, w):
        scale = x.abs().amax() / 448.0
        if scale == 0:
            scale = torch.tensor(1.0)
        return (x / scale.item()) @ w

    sol = estimate(reference, {"x": meta(64, 64), "w": meta(64, 64)}, DEVICES["B200"])
    assert sol.tensor_core_flops == 2 * 64**3


@pytest.mark.parametrize(
    "reference",
    [
        lambda x: x[x > 0].sum(),
        lambda x: x.new_zeros(int(x.sum().item())),
        lambda x: torch.nonzero(x),
    ],
)
def test_data_dependent_references_report_a_reason(reference):
    with pytest.raises(SolUnavailable) as raised:
        estimate(reference, {"x": meta(16, dtype=torch.int64)}, DEVICES["B200"])
    assert raised.value.reason.startswith("data-dependent op on meta tensors")


def test_cpu_fallback_counts_routed_work():
    """Real (CPU) inputs let routing run; contractions are counted, not computed."""

    def moe(x, w, expert):
        out = torch.zeros_like(x)
        for e in range(w.shape[0]):
            rows = (expert == e).nonzero().squeeze(-1)
            out[rows] = x[rows] @ w[e]
        return out

    inputs = {"x": torch.randn(64, 16), "w": torch.randn(4, 16, 16), "expert": torch.arange(64) % 4}
    with pytest.raises(SolUnavailable):
        estimate(moe, {k: v.to("meta") for k, v in inputs.items()}, DEVICES["B200"])
    sol = estimate(moe, inputs, DEVICES["B200"])
    assert sol.tensor_core_flops == 2 * 64 * 16 * 16


def test_cpu_fallback_outputs_are_distinct_tensors():
    """Contraction outputs made real on the CPU share no storage, so each is counted."""

    def two_products(x, w, gate):
        assert int(gate.sum()) == 2  # a value read back: meta cannot run this
        return x @ w, x @ w

    inputs = {"x": torch.randn(8, 16), "w": torch.randn(16, 32), "gate": torch.ones(2)}
    sol = estimate(two_products, inputs, B200)
    assert sol.output_bytes == 2 * 8 * 32 * 4


def test_one_trace_prices_every_device():
    counts = count(matmul, {"a": meta(4096, 4096), "b": meta(4096, 4096)})
    for spec in SPECS:
        assert price(counts, spec) == estimate(
            matmul, {"a": meta(4096, 4096), "b": meta(4096, 4096)}, spec
        )


def test_repeated_ops_hit_the_meta_cache_and_count_alike():
    def loop(x, w):
        for _ in range(50):
            x = torch.tanh(x @ w)
        return x

    sol = estimate(loop, {"x": meta(256, 512), "w": meta(512, 512)}, B200)
    assert sol.tensor_core_flops == 50 * 2 * 256 * 512 * 512
    assert sol.cuda_core_flops == 50 * 256 * 512
    assert sol.bytes == (256 * 512 + 512 * 512 + 256 * 512) * 2


# --- validation: hand-computed FLOPs and bytes -------------------------------------------
# Each case states its counts from first principles; where SOLAR counts differently the
# test says how.


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_hand_bf16_matmul(spec):
    m, n, k = 1000, 3000, 500
    sol = estimate(matmul, {"a": meta(m, k), "b": meta(k, n)}, spec)
    assert sol.flops_by_class == {"tensor_core:bfloat16": 2 * m * n * k, "cuda_core": 0}
    assert (sol.input_bytes, sol.output_bytes) == ((m * k + k * n) * 2, m * n * 2)
    want = max(
        2 * m * n * k / spec.tensor_peaks["bf16"], (m * k + k * n + m * n) * 2 / spec.hbm_bandwidth
    )
    assert sol.t_sol_s == pytest.approx(want)


@pytest.mark.parametrize("causal", [False, True])
def test_hand_batched_attention(causal):
    """4·B·H·S²·D tensor-core FLOPs (QKᵀ and PV, 2·B·H·S²·D each), causal or not: the
    mask is not credited, as in torch.utils.flop_counter and SOLAR. Bytes: Q, K, V read
    and O written once, bf16. On meta tensors SDPA runs its math decomposition, whose bf16
    inputs are upcast, so the FLOPs are recorded under float32; the problem is still priced
    at its inputs' bf16 rate."""
    b, h, s, d = 4, 16, 1024, 128
    qkv = {name: meta(b, h, s, d) for name in "qkv"}
    sol = estimate(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), qkv, B200
    )
    assert sol.tensor_core_flops == 4 * b * h * s * s * d
    assert (sol.input_bytes, sol.output_bytes) == (3 * b * h * s * d * 2, b * h * s * d * 2)
    assert sol.rate_class == "bf16" and sol.bound == "compute"
    assert sol.t_sol_s == pytest.approx(4 * b * h * s * s * d / B200.tensor_peaks["bf16"])


def rmsnorm(x, weight):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)
    return (y * weight.float()).to(x.dtype)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_hand_rmsnorm_is_memory_bound_on_its_input_weight_and_output(spec):
    tokens, hidden = 8192, 4096
    sol = estimate(rmsnorm, {"x": meta(tokens, hidden), "weight": meta(hidden)}, spec)
    assert sol.tensor_core_flops == 0 and sol.bound == "memory"
    assert sol.input_bytes == (tokens * hidden + hidden) * 2  # the float32 copies stay on chip
    assert sol.output_bytes == tokens * hidden * 2
    assert sol.t_sol_s == pytest.approx(sol.bytes / spec.hbm_bandwidth)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hand_softmax_moves_input_and_output_at_their_dtype(dtype):
    rows, cols = 4096, 32000
    sol = estimate(lambda x: torch.softmax(x, dim=-1), {"x": meta(rows, cols, dtype=dtype)}, B200)
    size = torch.empty((), dtype=dtype).element_size()
    assert (sol.input_bytes, sol.output_bytes) == (rows * cols * size, rows * cols * size)
    assert sol.cuda_core_flops == rows * cols  # one per input element, as a reduction
    assert sol.bound == "memory"
    assert sol.t_sol_s == pytest.approx(2 * rows * cols * size / B200.hbm_bandwidth)


def test_hand_fp8_scaled_mm_is_priced_at_the_fp8_rate():
    m, n, k = 4096, 4096, 8192
    inputs = {
        "a": meta(m, k, dtype=torch.float8_e4m3fn),
        "b": meta(n, k, dtype=torch.float8_e4m3fn),
        "scale_a": meta(1, dtype=torch.float32),
        "scale_b": meta(1, dtype=torch.float32),
    }

    def scaled_mm(a, b, scale_a, scale_b):
        return torch._scaled_mm(a, b.t(), scale_a, scale_b, out_dtype=torch.bfloat16)

    for spec in SPECS:
        sol = estimate(scaled_mm, inputs, spec)
        assert sol.flops_by_class == {"tensor_core:float8_e4m3fn": 2 * m * n * k, "cuda_core": 0}
        assert sol.input_bytes == m * k + n * k + 4 + 4
        assert sol.output_bytes == m * n * 2
        assert sol.rate_class == "fp8" and sol.bound == "compute"
        assert sol.t_sol_s == pytest.approx(2 * m * n * k / spec.tensor_peaks["fp8"])


def test_hand_embedding_gather_reads_the_whole_table():
    """Bytes: the indices, the whole table, the gathered rows written. SOLAR counts only
    the gathered rows of the table (tokens x hidden), so where the table is larger than the
    rows taken from it this T_SOL is larger than SOLAR's."""
    tokens, vocab, hidden = 4096, 128_256, 4096
    inputs = {"ids": meta(tokens, dtype=torch.int64), "table": meta(vocab, hidden)}
    sol = estimate(lambda ids, table: F.embedding(ids, table), inputs, B200)
    assert sol.tensor_core_flops == 0 and sol.bound == "memory"
    assert sol.input_bytes == tokens * 8 + vocab * hidden * 2
    assert sol.output_bytes == tokens * hidden * 2
    solar_bytes = tokens * 8 + 2 * tokens * hidden * 2
    assert sol.t_sol_s > solar_bytes / B200.hbm_bandwidth


# --- the real dataset -------------------------------------------------------------------


@pytest.mark.skipif(not (DATA_DIR / "benchmark").is_dir(), reason="SOL-ExecBench data absent")
def test_estimates_run_on_real_problems():
    wanted = {
        "FlashInfer-Bench/007_gemm_n4096_k4096",
        "FlashInfer-Bench/025_rmsnorm_h4096",
        "L1/001_attention_softmax_dropout_value_matmul_backward",
        "Quant/001_fp8_attention_output_projection",
        "Quant/020_nvfp4_linear_layer",
    }
    problems = [p for p in load_problems(DATA_DIR) if p.key in wanted]
    assert {p.key for p in problems} == wanted
    for problem in problems:
        workload = problem.workloads[0]
        counts, traced_on, meta_failure = count_workload(problem, workload)
        assert (traced_on, meta_failure) == ("meta", None)
        sol = price(counts, B200)
        assert sol.t_sol_s > 0
        if "gemm" in problem.name:
            m = workload.axes["M"]
            assert sol.tensor_core_flops == 2 * m * 4096 * 4096
            assert sol.bytes == (m * 4096 + 4096 * 4096 + m * 4096) * 2
        if "rmsnorm" in problem.name:
            assert sol.bound == "memory" and sol.tensor_core_flops == 0
        if problem.subset == "Quant":
            assert sol.rate_class == ("fp8" if "fp8" in problem.name else "fp4")
