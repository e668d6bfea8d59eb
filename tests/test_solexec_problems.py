"""SOL-ExecBench problems: loading, axes, skips, inputs, references, the correctness rule,
categories and CPU shrinking, on small fixture problems in the public layout; plus one pass
over the real dataset when it is present (AUTOLAB_SOLEXEC_DIR or ../shared/data)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks.solexec.problems import (
    Check,
    ProblemFormatError,
    Tolerance,
    category,
    check_outputs,
    evaluate_expression,
    load_problems,
    make_inputs,
    random_tensor,
    reference_entry,
    resolve_axes,
    run_reference,
    shrink,
    skip_reason,
    tensor_shape,
)

FIXTURES = Path(__file__).parent / "fixtures" / "solexec"
DATA = Path(
    os.environ.get(
        "AUTOLAB_SOLEXEC_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "data" / "sol-execbench",
    )
)


@pytest.fixture(scope="module")
def problems():
    return {p.key: p for p in load_problems(FIXTURES)}


def workload(problem, uuid):
    return next(w for w in problem.workloads if w.uuid == uuid)


# ---------------------------------------------------------------------------- loading


def test_fixtures_load_in_dataset_order(problems):
    assert list(problems) == [
        "L1/001_small_matmul",
        "L1/002_rmsnorm_custom_inputs",
        "L2/001_scaled_add_with_scalars",
        "L2/002_causal_attention",
        "Quant/001_fp8_patch_mean_pool",
        "FlashInfer-Bench/001_gather_rows_from_blob",
    ]
    rms = problems["L1/002_rmsnorm_custom_inputs"]
    assert rms.custom_entry == "get_inputs"
    assert list(rms.inputs) == ["x", "weight", "eps"]
    assert rms.inputs["eps"].shape is None
    assert [p.subset for p in load_problems(FIXTURES, ["Quant"])] == ["Quant"]
    with pytest.raises(FileNotFoundError, match="L3"):
        load_problems(FIXTURES, ["L3"])


def test_tolerances_read_both_ratio_spellings_and_default_when_absent(problems):
    mm = problems["L1/001_small_matmul"]
    assert workload(mm, "mm-4").tolerance == Tolerance(1e-5, 1e-5)
    assert workload(mm, "mm-4096").tolerance.required_matched_ratio == 0.98
    pool = problems["Quant/001_fp8_patch_mean_pool"]
    assert pool.workloads[0].tolerance.required_matched_ratio == 0.99
    blob = problems["FlashInfer-Bench/001_gather_rows_from_blob"].workloads[0].tolerance
    assert blob == Tolerance(allow_negative_inf=True)
    assert workload(problems["L2/001_scaled_add_with_scalars"], "add-zeros").tolerance == (
        Tolerance()
    )


def copy_problem(tmp_path, subset="L1", name="001_small_matmul"):
    folder = tmp_path / "benchmark" / subset / name
    shutil.copytree(FIXTURES / "benchmark" / subset / name, folder)
    return folder


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        ("definition.json", lambda d: "{not json", r"definition.json: invalid JSON"),
        ("definition.json", lambda d: {k: v for k, v in d.items() if k != "axes"}, "'axes'"),
        ("definition.json", lambda d: {**d, "reference": "def go(A, B): pass"}, "run"),
        ("definition.json", lambda d: {**d, "reference": "def run(B, A): pass"}, "inputs"),
        ("definition.json", lambda d: {**d, "axes": {**d["axes"], "N": {"type": "x"}}}, "N"),
        (
            "definition.json",
            lambda d: {**d, "axes": {**d["axes"], "E": {"type": "expr", "expression": "M**2"}}},
            "Pow",
        ),
        ("workload.jsonl", lambda w: "{}\n{", r"workload.jsonl:1: key 'axes' missing"),
        ("workload.jsonl", lambda w: json.dumps(w) + "\n{", r"workload.jsonl:2: invalid JSON"),
        (
            "workload.jsonl",
            lambda w: json.dumps({**w, "tolerance": {"max_atol": "big"}}),
            r"workload.jsonl:1: tolerance: key 'max_atol' has type str",
        ),
        (
            "workload.jsonl",
            lambda w: json.dumps({**w, "tolerance": {"atol": 1}}),
            r"workload.jsonl:1: unknown key tolerance.atol",
        ),
    ],
)
def test_malformed_files_name_the_file_and_key(tmp_path, file, edit, message):
    folder = copy_problem(tmp_path)
    path = folder / file
    text = path.read_text()
    original = json.loads(text) if file.endswith(".json") else json.loads(text.splitlines()[0])
    edited = edit(original)
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    with pytest.raises(ProblemFormatError, match=message) as error:
        load_problems(tmp_path)
    assert str(folder) in str(error.value)


# ---------------------------------------------------------------------------- axes


def test_axes_resolve_var_const_and_expr(problems):
    pool = problems["Quant/001_fp8_patch_mean_pool"]
    axes = resolve_axes(pool, pool.workloads[0])
    assert axes == {"seq_len": 1024, "patch": 4, "num_patches": 256, "hidden": 8}
    assert tensor_shape(pool.outputs["pooled"], axes) == (256, 8)
    mm = problems["L1/001_small_matmul"]
    assert resolve_axes(mm, workload(mm, "mm-4")) == {"M": 4, "N": 8, "K": 16}


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(a + 2 * b - 1) // b + 1", 6), ("a % b - -a", 11), ("a * (b + 1) // 4", 10)],
)
def test_expressions_are_integer_arithmetic(expression, value):
    assert evaluate_expression(expression, {"a": 10, "b": 3}) == value


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').getcwd()", "a ** 2", "a / 2", "a.real", "c + 1", "a // (b - 3)", "1.5"],
)
def test_expressions_refuse_anything_else(expression):
    with pytest.raises(ProblemFormatError):
        evaluate_expression(expression, {"a": 10, "b": 3})


def test_missing_var_axis_is_a_skip_reason(problems):
    mm = problems["L1/001_small_matmul"]
    broken = dataclasses.replace(workload(mm, "mm-4"), axes={})
    assert "'M'" in skip_reason(mm, broken)
    with pytest.raises(ProblemFormatError, match="'M'"):
        resolve_axes(mm, broken)


# ---------------------------------------------------------------------------- skipping


def test_every_skipped_workload_says_why(problems):
    blob = problems["FlashInfer-Bench/001_gather_rows_from_blob"]
    reason = skip_reason(blob, blob.workloads[0])
    assert "safetensors" in reason and "gather_0001.safetensors" in reason
    add = problems["L2/001_scaled_add_with_scalars"]
    assert "'zeros'" in skip_reason(add, workload(add, "add-zeros"))
    runnable = [
        (p.key, w.uuid) for p in problems.values() for w in p.workloads if not skip_reason(p, w)
    ]
    assert len(runnable) == 8
    with pytest.raises(ValueError, match="safetensors"):
        make_inputs(blob, blob.workloads[0], seed=0)


# ---------------------------------------------------------------------------- inputs


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


@pytest.mark.parametrize(
    ("key", "uuid"),
    [
        ("L1/001_small_matmul", "mm-4"),
        ("L1/002_rmsnorm_custom_inputs", "rms-3"),
        ("L2/001_scaled_add_with_scalars", "add-16"),
        ("Quant/001_fp8_patch_mean_pool", "pool-1024"),
    ],
)
def test_inputs_are_reproducible_and_differ_across_seeds(problems, key, uuid):
    problem = problems[key]
    w = workload(problem, uuid)
    state = torch.random.get_rng_state()
    first, again, other = (make_inputs(problem, w, seed=s) for s in (7, 7, 8))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert list(first) == list(problem.inputs)
    assert all(same(first[n], again[n]) for n in first)
    tensors = [n for n, v in first.items() if isinstance(v, torch.Tensor)]
    assert all(first[n] is not again[n] for n in tensors)  # fresh tensors on every call
    assert any(not same(first[n], other[n]) for n in tensors)
    axes = resolve_axes(problem, w)
    for name, spec in problem.inputs.items():
        if spec.shape is not None:
            assert tuple(first[name].shape) == tensor_shape(spec, axes)
            assert str(first[name].dtype) == f"torch.{spec.dtype}"


@pytest.mark.parametrize(
    ("key", "uuid"),
    [("L1/001_small_matmul", "mm-4096"), ("L1/002_rmsnorm_custom_inputs", "rms-1000")],
)
def test_meta_inputs_have_the_declared_layout_and_no_values(problems, key, uuid):
    """What the speed-of-light estimate traces with: shapes and dtypes, nothing allocated."""
    problem = problems[key]
    w = workload(problem, uuid)
    state = torch.random.get_rng_state()
    inputs = make_inputs(problem, w, seed=0, device="meta")
    assert torch.equal(torch.random.get_rng_state(), state)
    axes = resolve_axes(problem, w)
    for name, spec in problem.inputs.items():
        if spec.shape is None:
            assert not isinstance(inputs[name], torch.Tensor)
        else:
            assert inputs[name].is_meta and tuple(inputs[name].shape) == tensor_shape(spec, axes)
            assert str(inputs[name].dtype) == f"torch.{spec.dtype}"


def test_scalar_inputs_take_the_workload_value(problems):
    add = problems["L2/001_scaled_add_with_scalars"]
    inputs = make_inputs(add, workload(add, "add-16"), seed=0)
    assert inputs["alpha"] == 0.5 and inputs["add_noise"] is False
    assert isinstance(inputs["noise"], float)  # a random scalar is a Python number
    rms = problems["L1/002_rmsnorm_custom_inputs"]
    assert make_inputs(rms, workload(rms, "rms-3"), seed=0)["eps"] == 1e-6


def test_random_values_follow_the_public_distributions():
    g = torch.Generator().manual_seed(0)
    floats = random_tensor((4096,), "float32", g)
    assert abs(float(floats.mean())) < 0.1 and abs(float(floats.std()) - 1) < 0.1
    assert set(random_tensor((512,), "bool", g).tolist()) == {False, True}
    ints = random_tensor((4096,), "int32", g)
    assert int(ints.min()) >= -1024 and int(ints.max()) < 1024 and int(ints.min()) < -900
    small = random_tensor((4096,), "int8", g)
    assert int(small.min()) >= -128 and int(small.max()) <= 127
    fp8 = random_tensor((4096,), "float8_e4m3fn", g).float()
    assert float(fp8.abs().max()) <= 2.0 and fp8.dtype == torch.float32
    fp4 = random_tensor((3, 8), "float4_e2m1fn_x2", g)
    assert fp4.shape == (3, 8) and fp4.dtype == torch.float4_e2m1fn_x2
    codes = fp4.view(torch.uint8)
    assert {int(c) & 0x7 for c in codes.flatten()} <= set(range(8))
    with pytest.raises(ValueError, match="float4_e2m1"):
        random_tensor((4,), "float4_e2m1", g)


def test_fp4_packing_rounds_to_the_nearest_code():
    from benchmarks.solexec.problems import _pack_fp4

    values = torch.tensor([0.1, 0.25, 0.75, 1.6, -1.25, -6.0, 2.5, 5.0])
    packed = _pack_fp4(values).view(torch.uint8)
    codes = [(int(b) & 0xF, int(b) >> 4) for b in packed]
    assert codes == [(0, 0), (2, 3), (10, 15), (4, 6)]


# ---------------------------------------------------------------------------- references


def test_reference_outputs(problems):
    mm = problems["L1/001_small_matmul"]
    inputs = make_inputs(mm, workload(mm, "mm-4"), seed=1)
    (c,) = run_reference(mm, inputs)
    assert torch.allclose(c, inputs["A"] @ inputs["B"].T)

    rms = problems["L1/002_rmsnorm_custom_inputs"]
    inputs = make_inputs(rms, workload(rms, "rms-3"), seed=1)
    (y,) = run_reference(rms, inputs, reference_entry(rms))
    x = inputs["x"].float()
    want = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * inputs["weight"].float()
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), want, atol=0.02)

    add = problems["L2/001_scaled_add_with_scalars"]
    inputs = make_inputs(add, workload(add, "add-16"), seed=1)
    out, count = run_reference(add, inputs)  # a dict return, put in definition order
    assert torch.allclose(out, inputs["x"] + 0.5 * inputs["y"] + inputs["offsets"].float())
    assert count.dtype == torch.int64 and count.ndim == 0
    assert int(count) == int(inputs["mask"].sum())


def test_a_reference_returning_the_wrong_count_is_refused(problems):
    mm = problems["L1/001_small_matmul"]
    inputs = make_inputs(mm, workload(mm, "mm-4"), seed=0)
    with pytest.raises(ValueError, match="2 of 1"):
        run_reference(mm, inputs, entry=lambda a, b: (a, b))
    with pytest.raises(ValueError, match="None"):
        run_reference(mm, inputs, entry=lambda a, b: None)


# ---------------------------------------------------------------------------- judging


def reference_of(problems, key, uuid, seed=3):
    problem = problems[key]
    w = workload(problem, uuid)
    return problem, w, run_reference(problem, make_inputs(problem, w, seed=seed))


def test_the_reference_passes_against_itself(problems):
    for key, uuid in [
        ("L1/001_small_matmul", "mm-4"),
        ("L2/001_scaled_add_with_scalars", "add-16"),
    ]:
        problem, w, want = reference_of(problems, key, uuid)
        again = run_reference(problem, make_inputs(problem, w, seed=3))
        check = check_outputs(again, want, w.tolerance, names=list(problem.outputs))
        assert isinstance(check, Check) and check.passed, check.detail
        assert check.max_abs_error == 0 and check.mismatch_fraction == 0


def test_a_perturbed_output_fails_and_a_small_share_is_forgiven(problems):
    problem, w, (c,) = reference_of(problems, "L1/001_small_matmul", "mm-4096")
    assert w.tolerance.required_matched_ratio == 0.98
    off = c.clone()
    off.view(-1)[: int(0.01 * c.numel())] += 1.0  # 1% of elements, within the allowed 2%
    check = check_outputs([off], [c], w.tolerance)
    assert check.passed and 0.009 < check.mismatch_fraction < 0.011 and check.max_abs_error > 0.9
    off.view(-1)[: int(0.03 * c.numel())] += 1.0
    check = check_outputs([off], [c], w.tolerance, names=["C"])
    assert not check.passed and "output C" in check.detail and "3.0" in check.detail
    strict = Tolerance(max_atol=1e-5, max_rtol=1e-5, required_matched_ratio=1.0)
    tiny = c.clone()
    tiny.view(-1)[0] += 1e-2
    assert not check_outputs(tiny, c, strict).passed
    assert check_outputs(tiny, c, Tolerance(1e-1, 0.0, 1.0)).passed
    assert not check_outputs(tiny, c, Tolerance(1e-1, 0.0, 1.0, max_error_cap=1e-3)).passed


def test_relative_tolerance_scales_with_the_reference():
    want = torch.tensor([1000.0, 1.0])
    got = torch.tensor([1004.0, 1.0])
    assert check_outputs(got, want, Tolerance(1e-3, 5e-3, 1.0)).passed
    assert not check_outputs(got, want, Tolerance(1e-3, 1e-3, 1.0)).passed


def test_shape_dtype_and_count_mismatches_fail_clearly(problems):
    _, w, (c,) = reference_of(problems, "L1/001_small_matmul", "mm-4")
    check = check_outputs([c[:, :4]], [c], w.tolerance, names=["C"])
    assert not check.passed and "shape (4, 4), expected (4, 8)" in check.detail
    check = check_outputs([c.double()], [c], w.tolerance)
    assert not check.passed and "dtype torch.float64" in check.detail
    assert "2 outputs, expected 1" in check_outputs([c, c], [c], w.tolerance).detail


def test_non_finite_values_fail_unless_both_are_minus_inf():
    want = torch.tensor([0.5, -math.inf, 2.0])
    nan = torch.tensor([0.5, -math.inf, math.nan])
    check = check_outputs(nan, want, Tolerance(allow_negative_inf=True))
    assert not check.passed and "1 NaN" in check.detail and math.isnan(check.max_abs_error)
    assert check_outputs(want.clone(), want, Tolerance(allow_negative_inf=True)).passed
    assert not check_outputs(want.clone(), want, Tolerance()).passed
    wrong_inf = torch.tensor([0.5, 0.0, 2.0])
    assert not check_outputs(wrong_inf, want, Tolerance(allow_negative_inf=True)).passed
    zeros = torch.zeros(3)
    check = check_outputs(zeros, torch.tensor([0.0, 0.0, 1e-3]), Tolerance(1.0, 0.0, 0.5))
    assert not check.passed and "all zeros" in check.detail


# ---------------------------------------------------------------------------- categories


def test_categories_are_deterministic_and_single(problems):
    got = {key: category(p) for key, p in problems.items()}
    assert got == {
        "L1/001_small_matmul": "matmul",
        "L1/002_rmsnorm_custom_inputs": "normalization",
        "L2/001_scaled_add_with_scalars": "elementwise",
        "L2/002_causal_attention": "attention",
        "Quant/001_fp8_patch_mean_pool": "quantization",
        "FlashInfer-Bench/001_gather_rows_from_blob": "embedding-indexing",
    }
    assert got == {p.key: category(p) for p in load_problems(FIXTURES)}


# ---------------------------------------------------------------------------- shrinking


def sizes(problem, w):
    axes = resolve_axes(problem, w)
    specs = {**problem.inputs, **problem.outputs}
    return {n: math.prod(tensor_shape(s, axes) or ()) for n, s in specs.items()}


def test_shrink_bounds_var_axes_and_keeps_divisors(problems):
    mm = problems["L1/001_small_matmul"]
    big = workload(mm, "mm-4096")
    small = shrink(mm, big, max_elements=1000)
    assert small.shrunk_from == {"M": 4096} and small.uuid == big.uuid
    assert 1000 // 2 < max(sizes(mm, small).values()) <= 1000
    assert small.tolerance == big.tolerance
    # M stays a multiple of 4, the gcd of the fixture's M values (4 and 4096); B cannot shrink
    assert shrink(mm, big, max_elements=1).axes == {"M": 4}
    assert shrink(mm, workload(mm, "mm-4"), max_elements=1000) == workload(mm, "mm-4")

    pool = problems["Quant/001_fp8_patch_mean_pool"]
    tiny = shrink(pool, pool.workloads[0], max_elements=50)
    assert tiny.axes["seq_len"] % 4 == 0 and tiny.axes["seq_len"] == 4
    assert resolve_axes(pool, tiny)["num_patches"] == 1
    inputs = make_inputs(pool, tiny, seed=0)
    (pooled,) = run_reference(pool, inputs)
    assert pooled.shape == (1, 8)
    with pytest.raises(ValueError):
        shrink(pool, pool.workloads[0], max_elements=0)


def test_shrink_keeps_the_order_the_workloads_show(problems):
    attn = problems["L2/002_causal_attention"]  # kv_len >= q_len in every workload
    small = shrink(attn, workload(attn, "attn-32-100"), max_elements=16)
    # q_len stops at 32, the gcd of its values (32, 64); kv_len halves to 48 (a multiple of
    # 4, the gcd of 100 and 64) but not to 24, which would put it below q_len
    assert small.axes == {"q_len": 32, "kv_len": 48}
    want = run_reference(attn, make_inputs(attn, small, seed=2))
    assert torch.isfinite(want[1]).all()  # every query row sees at least one key
    got = run_reference(attn, make_inputs(attn, small, seed=2))
    assert check_outputs(got, want, small.tolerance).passed


def test_shrunk_custom_workload_runs_and_passes(problems):
    rms = problems["L1/002_rmsnorm_custom_inputs"]
    small = shrink(rms, workload(rms, "rms-1000"), max_elements=256)
    assert small.axes == {"batch_size": 8}
    want = run_reference(rms, make_inputs(rms, small, seed=5))
    got = run_reference(rms, make_inputs(rms, small, seed=5))
    assert want[0].shape == (8, 32) and check_outputs(got, want, small.tolerance).passed


# ---------------------------------------------------------------------------- real data

SUBSET_SIZES = {"L1": 94, "L2": 82, "Quant": 33, "FlashInfer-Bench": 26}
CPU_ELEMENTS = 3_000_000  # in+out elements after shrinking, for a sampled reference run
# Two references put tensors on the GPU themselves; FP4 scaled matmul has no CPU kernel.
GPU_ONLY = ("device='cuda'", "torch.device('cuda')", "_scaled_mm")
SAMPLE_PER_SUBSET = 5  # evenly spaced over the subset's CPU-sized problems


@pytest.mark.skipif(not DATA.is_dir(), reason=f"SOL-ExecBench data not at {DATA}")
def test_real_dataset_loads_resolves_and_sampled_references_run_on_cpu():
    torch.manual_seed(0)
    problems = load_problems(DATA)
    by_subset = {s: [p for p in problems if p.subset == s] for s in SUBSET_SIZES}
    assert {s: len(ps) for s, ps in by_subset.items()} == SUBSET_SIZES
    skipped_problems = set()
    for p in problems:
        assert category(p)
        for w in p.workloads:
            reason = skip_reason(p, w)
            if reason is None:
                assert all(v >= 0 for v in resolve_axes(p, w).values())
            else:
                assert "safetensors" in reason, reason
                skipped_problems.add(p.key)
    assert len(skipped_problems) == 9
    assert all(k.startswith("FlashInfer-Bench/") for k in skipped_problems)

    ran = []
    for subset, ps in by_subset.items():
        candidates = []
        for p in ps:
            if any(marker in p.reference for marker in GPU_ONLY):
                continue
            w = next((w for w in p.workloads if skip_reason(p, w) is None), None)
            if w is not None:
                small = shrink(p, w, max_elements=4096)
                if sum(sizes(p, small).values()) <= CPU_ELEMENTS:
                    candidates.append((p, small))
        assert len(candidates) >= 3, subset
        chosen = candidates[:: max(1, len(candidates) // SAMPLE_PER_SUBSET)][:SAMPLE_PER_SUBSET]
        for p, small in chosen:
            entry = reference_entry(p)
            want = run_reference(p, make_inputs(p, small, seed=0), entry)
            got = run_reference(p, make_inputs(p, small, seed=0), entry)
            check = check_outputs(got, want, small.tolerance, names=list(p.outputs))
            assert check.passed, f"{p.key}: {check.detail}"
            ran.append(p.key)
    assert len(ran) >= 3 * len(SUBSET_SIZES) and len(set(ran)) == len(ran)


def test_comparing_in_chunks_gives_what_comparing_at_once_does(monkeypatch):
    """Large outputs are compared a chunk at a time; the verdict and errors must not
    depend on where the chunks fall."""
    from benchmarks.solexec import problems as module

    g = torch.Generator().manual_seed(0)
    want = torch.randn(1000, generator=g)
    got = want + 1e-3 * torch.randn(1000, generator=g)
    got[::97] += 0.5  # 11 elements off
    nan = want.clone()
    nan[500] = math.nan
    cases = [(got, Tolerance(1e-2, 1e-2, 0.995)), (got, Tolerance(1e-2, 1e-2, 0.98)),
             (nan, Tolerance()), (torch.zeros(1000), Tolerance(1.0, 0.0, 0.5))]
    whole = [check_outputs(x, want, tol) for x, tol in cases]
    monkeypatch.setattr(module, "COMPARE_CHUNK", 7)
    chunked = [check_outputs(x, want, tol) for x, tol in cases]
    for a, b in zip(whole, chunked, strict=True):
        assert (a.passed, a.detail) == (b.passed, b.detail)
        assert a.mismatch_fraction == pytest.approx(b.mismatch_fraction)
        for u, v in ((a.max_abs_error, b.max_abs_error), (a.max_rel_error, b.max_rel_error)):
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v)
    assert [c.passed for c in whole] == [False, True, False, False]
