"""Speed-of-light (T_SOL) estimates for SOL-ExecBench workloads, from a roofline.

T_SOL is the time a perfect kernel would need on a given GPU: the larger of the time to do
its tensor-core arithmetic at the part's peak rate and the time to move its minimum bytes at
the part's memory bandwidth. The reference runs on meta tensors under a dispatch-level
counter (tracing.py), so nothing is allocated and any shape is cheap; ``count`` traces once
and ``price`` turns the count into a T_SOL on each device.

Conventions follow NVIDIA's SOLAR, which computes the public SOL-ExecBench bounds
(NVlabs/SOLAR: solar/perf/perf_model.py, docs/SOL_GUIDE.md, scripts/run_execbench_problem.py,
configs/execbench/leaderboard_b200.yaml):

* FLOPs. Contractions (mm, bmm, addmm, baddbmm, convolution, scaled-dot-product and
  flash/efficient attention, _scaled_mm) are tensor-core FLOPs, 2 per multiply-accumulate,
  counted with torch.utils.flop_counter's formulas and recorded per operand dtype. Every
  other op is CUDA-core work: one FLOP per output element for pointwise ops, one per input
  element for reductions and for softmax/norm kernels, none for data movement (views,
  copies, casts, indexing, concatenation), as SOLAR gives those zero compute.
* Compute time. SOLAR prices all of a problem's tensor-core FLOPs at one rate, chosen from
  the problem's precision: the narrowest floating dtype among its tensor inputs, overridden
  by fp8/fp4 whenever a quantised dtype appears anywhere in the computation (SOLAR scans the
  reference for them; here the traced ops are scanned). fp32 problems are priced at the
  16-bit tensor-core rate, the leaderboard setting (``fp32_as: fp16``); "tf32" and "fp32"
  (CUDA-core rate) are the alternatives SOLAR offers. CUDA-core FLOPs are reported but left
  out of T_SOL, as in SOLAR, because elementwise work is memory-bound and its bytes are
  already counted; ``include_cuda_core=True`` lets them overlap with the tensor cores
  (t_compute = max of the two), SOLAR's original design.
* Bytes. Each unique input tensor is read once and each output written once, at its own
  dtype (SOLAR's per-tensor-dtype "fused" accounting); intermediates stay on chip. SOLAR
  counts only the read footprint of inputs that are sliced or gathered (an embedding table,
  a KV cache): for those this estimate moves more bytes, so its T_SOL is larger.
* T_SOL = max(t_compute, t_memory): one whole-graph roofline, compute and memory overlapping
  perfectly. The bound is "compute" when t_compute >= t_memory.

Validation: the tests check FLOPs and bytes against hand counts for a GEMM, batched
attention, RMSNorm, softmax, an fp8 _scaled_mm and an embedding gather. Against the B200
SOL published on the leaderboard's problem pages, memory-bound elementwise and RMSNorm
kernels agree within about 1% plus a constant of about 0.4 us that the published values
carry; compute-bound fp32 GEMMs come out at 0.8 of them (the published values imply
1.8 PFLOP/s for dense 16-bit MACs, the datasheet's 2.25 is used here). Some fp32 problems
(a GroupNorm, memory-bound fp32 GEMMs) are priced there at fewer bytes than their tensors
hold, and SOLAR counts no bytes for the source of an index_add_: there this estimate is
larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_flatten

from benchmarks.solexec.problems import Problem, Workload, make_inputs, reference_entry
from benchmarks.solexec.tracing import SolUnavailable, on_device, trace

TERA = 1e12

# Peak dense throughput (FLOP/s; int8 in OP/s) and HBM bandwidth (bytes/s), per GPU.
# Datasheets quote tensor-core rates "with sparsity"; the dense rates below are half of them.
# FP64 and the CUDA-core rates have no sparse variant and are taken as printed.


@dataclass(frozen=True)
class DeviceSpec:
    """One GPU's roofline: HBM bandwidth, dense tensor-core peaks, CUDA-core peaks.

    tensor_peaks maps a precision class ("fp64", "tf32", "fp16", "bf16", "fp8", "int8",
    "fp4") to dense FLOP/s; a part without a class (fp4 before Blackwell) leaves it out.
    """

    name: str
    hbm_bandwidth: float
    tensor_peaks: Mapping[str, float]
    cuda_core_fp32: float
    cuda_core_fp64: float
    source: str

    def peak(self, rate_class: str) -> float:
        """FLOP/s for a rate class; "fp32" means the CUDA-core fp32 rate.

        fp4 on a part without FP4 tensor cores is priced at its FP8 rate: a kernel there
        unpacks fp4 operands to the narrowest format the tensor cores take.
        """
        if rate_class == "fp32":
            return self.cuda_core_fp32
        if rate_class == "fp4" and "fp4" not in self.tensor_peaks:
            rate_class = "fp8"
        if rate_class not in self.tensor_peaks:
            raise KeyError(f"{self.name} has no {rate_class} tensor-core rate")
        return self.tensor_peaks[rate_class]


_HOPPER_PEAKS = {  # H100 SXM5 and H200 SXM share the GH100 compute
    "fp64": 67 * TERA,
    "tf32": 989 / 2 * TERA,
    "fp16": 1979 / 2 * TERA,
    "bf16": 1979 / 2 * TERA,
    "fp8": 3958 / 2 * TERA,
    "int8": 3958 / 2 * TERA,
}

DEVICES: dict[str, DeviceSpec] = {
    "H100 SXM": DeviceSpec(
        name="H100 SXM",
        hbm_bandwidth=3.35 * TERA,
        tensor_peaks=_HOPPER_PEAKS,
        cuda_core_fp32=67 * TERA,
        cuda_core_fp64=34 * TERA,
        source="NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (sparse rates halved)",
    ),
    "H200": DeviceSpec(
        name="H200",
        hbm_bandwidth=4.8 * TERA,
        tensor_peaks=_HOPPER_PEAKS,
        cuda_core_fp32=67 * TERA,
        cuda_core_fp64=34 * TERA,
        source="NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (sparse rates halved)",
    ),
    "B200": DeviceSpec(
        name="B200",
        hbm_bandwidth=7.7 * TERA,
        tensor_peaks={
            "fp64": 37 * TERA,
            "tf32": 2.2 / 2 * 1000 * TERA,
            "fp16": 4.5 / 2 * 1000 * TERA,
            "bf16": 4.5 / 2 * 1000 * TERA,
            "fp8": 9 / 2 * 1000 * TERA,
            "int8": 9 / 2 * 1000 * TERA,
            "fp4": 18 / 2 * 1000 * TERA,
        },
        cuda_core_fp32=75 * TERA,
        cuda_core_fp64=37 * TERA,
        source="NVIDIA Blackwell datasheet, HGX B200 per-GPU column (1,000 W; sparse rates "
        "halved; 180 GB HBM3e at 7.7 TB/s)",
    ),
}

# torch.cuda.get_device_name() substrings, most specific first.
_NAME_PATTERNS = (
    ("H100 NVL", None),
    ("H100 PCIE", None),
    ("H100", "H100 SXM"),
    ("H200", "H200"),
    ("GH200", None),
    ("B200", "B200"),
)


def device_spec(torch_device_name: str) -> DeviceSpec:
    """The spec for a torch.cuda.get_device_name() string such as "NVIDIA H100 80GB HBM3".

    PCIe/NVL H100 variants have lower clocks and bandwidth than the SXM part in the table,
    so they are refused rather than silently given SXM numbers.
    """
    upper = torch_device_name.upper()
    if upper in (key.upper() for key in DEVICES):
        return next(spec for key, spec in DEVICES.items() if key.upper() == upper)
    for pattern, key in _NAME_PATTERNS:
        if pattern in upper:
            if key is None:
                break
            return DEVICES[key]
    raise ValueError(
        f"no roofline spec for GPU {torch_device_name!r}; known parts: {', '.join(DEVICES)} "
        "(add a DeviceSpec from the part's datasheet)"
    )


# --- precision --------------------------------------------------------------------------

_DTYPE_PRECISION = {
    torch.float64: "fp64",
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "fp8",
    torch.float8_e5m2: "fp8",
    torch.float8_e4m3fnuz: "fp8",
    torch.float8_e5m2fnuz: "fp8",
    torch.float4_e2m1fn_x2: "fp4",
    torch.int8: "int8",
    torch.uint8: "int8",
    torch.int16: "int8",
    torch.int32: "int8",
    torch.int64: "int8",
    torch.bool: "int8",
}
# SOLAR's order of preference when a problem mixes precisions: narrowest float first.
_PRECISION_ORDER = ("fp4", "fp8", "bf16", "fp16", "fp32", "fp64", "int8")
_QUANTISED = frozenset({"fp4", "fp8"})
FP32_POLICIES = ("fp16", "tf32", "fp32")


def problem_precision(input_dtypes: set[torch.dtype], traced_dtypes: set[torch.dtype]) -> str:
    """SOLAR's single precision class for a problem: the narrowest floating dtype among its
    tensor inputs, unless fp8/fp4 appears anywhere in the computation."""
    traced = {_DTYPE_PRECISION.get(d) for d in traced_dtypes} & _QUANTISED
    inputs = {_DTYPE_PRECISION.get(d, "int8") for d in input_dtypes}
    for precision in _PRECISION_ORDER:
        if precision in traced or precision in inputs:
            return precision
    return "fp16"


def rate_class(precision: str, fp32_as: str = "fp16") -> str:
    """The tensor-core rate a precision class is priced at; fp32 follows ``fp32_as``."""
    if fp32_as not in FP32_POLICIES:
        raise ValueError(f"fp32_as must be one of {FP32_POLICIES}, not {fp32_as!r}")
    return fp32_as if precision == "fp32" else precision


# --- estimate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SolEstimate:
    """A workload's roofline on one device.

    flops_by_class keys: "tensor_core:<operand dtype>" for contractions as traced, and
    "cuda_core" for everything else; ``precision`` is the class all tensor-core FLOPs were
    priced at (SOLAR's one-rate-per-problem convention) and ``rate_class`` the peak used.
    """

    device: str
    flops_by_class: dict[str, int]
    precision: str
    rate_class: str
    input_bytes: int
    output_bytes: int
    t_compute_s: float
    t_memory_s: float
    t_sol_s: float
    bound: str
    traced_dtypes: tuple[str, ...] = field(default=())

    @property
    def bytes(self) -> int:
        return self.input_bytes + self.output_bytes

    @property
    def tensor_core_flops(self) -> int:
        return sum(v for k, v in self.flops_by_class.items() if k.startswith("tensor_core:"))

    @property
    def cuda_core_flops(self) -> int:
        return self.flops_by_class.get("cuda_core", 0)


def unique_tensor_bytes(values: Any) -> int:
    """Bytes of the distinct tensors in a nested structure, each storage counted once."""
    seen: dict[int, int] = {}
    for value in tree_flatten(values)[0]:
        if isinstance(value, torch.Tensor):
            key = value.untyped_storage()._cdata
            seen[key] = max(seen.get(key, 0), value.numel() * value.element_size())
    return sum(seen.values())


@dataclass(frozen=True)
class Counts:
    """What one traced run of a reference costs, whatever the device: the part of an
    estimate that needs the trace. ``price`` turns it into a T_SOL on one device."""

    tensor_flops: dict[str, int]  # operand dtype -> tensor-core FLOPs
    cuda_core_flops: int
    input_bytes: int
    output_bytes: int
    input_dtypes: frozenset[torch.dtype]
    traced_dtypes: frozenset[torch.dtype]

    @property
    def flops_by_class(self) -> dict[str, int]:
        flops = {f"tensor_core:{k}": v for k, v in sorted(self.tensor_flops.items()) if v}
        return {**flops, "cuda_core": self.cuda_core_flops}

    def precision(self) -> str:
        return problem_precision(set(self.input_dtypes), set(self.traced_dtypes))


def count(
    fn: Callable[..., Any], inputs: Mapping[str, Any], device: str | torch.device | None = None
) -> Counts:
    """FLOPs and bytes of fn(**inputs), traced on ``device`` (see trace); raises
    SolUnavailable (with a one-line reason) when the reference cannot run there."""
    traced = trace(fn, inputs, device)
    return Counts(
        tensor_flops=traced.tensor_flops,
        cuda_core_flops=traced.cuda_core_flops,
        input_bytes=unique_tensor_bytes(list(inputs.values())),
        output_bytes=unique_tensor_bytes(traced.output),
        input_dtypes=frozenset(v.dtype for v in inputs.values() if isinstance(v, torch.Tensor)),
        traced_dtypes=traced.dtypes,
    )


def price(
    counts: Counts,
    spec: DeviceSpec,
    *,
    precision: str | None = None,
    fp32_as: str = "fp16",
    include_cuda_core: bool = False,
) -> SolEstimate:
    """T_SOL of counted work on ``spec``. ``precision`` overrides SOLAR's inferred
    precision class."""
    precision = precision or counts.precision()
    priced_at = rate_class(precision, fp32_as)
    tensor_flops = sum(counts.tensor_flops.values())
    t_tensor = tensor_flops / spec.peak(priced_at) if tensor_flops else 0.0
    t_cuda = counts.cuda_core_flops / spec.cuda_core_fp32 if include_cuda_core else 0.0
    t_compute = max(t_tensor, t_cuda)
    t_memory = (counts.input_bytes + counts.output_bytes) / spec.hbm_bandwidth
    t_sol = max(t_compute, t_memory)
    if not math.isfinite(t_sol):
        raise SolUnavailable(f"non-finite T_SOL ({t_sol})")
    return SolEstimate(
        device=spec.name,
        flops_by_class=counts.flops_by_class,
        precision=precision,
        rate_class=priced_at,
        input_bytes=counts.input_bytes,
        output_bytes=counts.output_bytes,
        t_compute_s=t_compute,
        t_memory_s=t_memory,
        t_sol_s=t_sol,
        bound="compute" if t_compute >= t_memory and t_compute > 0 else "memory",
        traced_dtypes=tuple(sorted(str(d).removeprefix("torch.") for d in counts.traced_dtypes)),
    )


def estimate(
    fn: Callable[..., Any],
    inputs: Mapping[str, Any],
    spec: DeviceSpec,
    *,
    precision: str | None = None,
    fp32_as: str = "fp16",
    include_cuda_core: bool = False,
) -> SolEstimate:
    """T_SOL of fn(**inputs) on ``spec``: count, then price. Inputs are meta tensors and
    Python scalars (or CPU tensors, which the reference then really computes on)."""
    return price(
        count(fn, inputs),
        spec,
        precision=precision,
        fp32_as=fp32_as,
        include_cuda_core=include_cuda_core,
    )


# --- workloads --------------------------------------------------------------------------


def _count_on(problem: Problem, workload: Workload, device: str) -> Counts:
    """Inputs from the loader on ``device`` ("meta", or "cpu" with small tensors real) and
    the reference's count on them."""
    try:
        with on_device(device):
            inputs = make_inputs(problem, workload, seed=0, device=device)
    except Exception as exc:  # a generator that cannot run here is a recorded reason
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
        raise SolUnavailable(f"input function failed on {device} tensors: {text}") from exc
    return count(reference_entry(problem), inputs, device)


def count_workload(
    problem: Problem, workload: Workload, meta_failure: str | None = None
) -> tuple[Counts, str, str | None]:
    """A workload's count, the device it was traced on ("meta" or "cpu"), and why not on
    meta. The CPU fallback is for references whose control flow reads tensor values; given
    ``meta_failure`` (another workload's of the problem), meta is not tried. Raises
    SolUnavailable with both reasons when neither works."""
    if meta_failure is None:
        try:
            return _count_on(problem, workload, "meta"), "meta", None
        except SolUnavailable as exc:
            meta_failure = exc.reason
    try:
        return _count_on(problem, workload, "cpu"), "cpu", meta_failure
    except SolUnavailable as exc:
        raise SolUnavailable(f"{meta_failure} | CPU fallback: {exc.reason}") from exc
