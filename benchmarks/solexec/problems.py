"""SOL-ExecBench problems: read them, make their inputs, run their references, judge outputs.

A problem folder holds `definition.json` (axes, named inputs and outputs, the PyTorch
reference as source text) and `workload.jsonl` (one concrete workload a line). The rules
follow the public evaluator so that a kernel judged here is judged as it would be there:
NVIDIA's SOL-ExecBench repository (`data/definition.py`, `data/shapes.py`, `bench/utils.py`,
`bench/correctness.py`, `bench/evaluators/default.py`, `docs/definition.md`,
`docs/workload.md`), its later revision with the `tolerance` key this dataset uses, as kept
in the SOL-ExecBench-ROCm port (`core/data/workload.py`, `core/bench/correctness.py`,
`core/bench/custom_inputs.py`), and the FlashInfer-Bench code both grew from
(`flashinfer_bench/bench/utils.py`). Where this module departs from them, the function's
docstring says so.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

SUBSETS = ("L1", "L2", "Quant", "FlashInfer-Bench")
ENTRY_POINT = "run"  # the public schema: the reference defines a top-level `run`
DTYPES = (
    "float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
    "float4_e2m1", "float4_e2m1fn_x2", "int64", "int32", "int16", "int8", "bool",
)  # fmt: skip
_FLOATS = ("float64", "float32", "float16", "bfloat16")
_FP8 = ("float8_e4m3fn", "float8_e5m2")
_FP4 = "float4_e2m1fn_x2"  # two E2M1 codes a byte; the shape counts bytes
_INTS = {
    "int8": (-128, 128),
    "int16": (-1024, 1024),
    "int32": (-1024, 1024),
    "int64": (-1024, 1024),
}
_TOLERANCE_KEYS = {
    "max_atol": "max_atol",
    "max_rtol": "max_rtol",
    "required_matched_ratio": "required_matched_ratio",
    "required_match_ratio": "required_matched_ratio",  # the L2 subset's spelling
    "max_error_cap": "max_error_cap",
    "allow_negative_inf": "allow_negative_inf",
}
_RANDOM_DTYPES = (*_FLOATS, *_FP8, _FP4, *_INTS, "bool")


class ProblemFormatError(ValueError):
    """A definition or workload that does not follow the public layout; says file and key."""


@dataclass(frozen=True)
class Tolerance:
    """When an output counts as correct. The defaults, used where a workload carries no
    `tolerance` (every FlashInfer-Bench workload), are the public ToleranceSpec's; its
    predecessor CorrectnessSpec asked for a matched ratio of 1.0 instead of 0.99."""

    max_atol: float = 1e-2
    max_rtol: float = 1e-2
    required_matched_ratio: float = 0.99
    max_error_cap: float | None = None
    allow_negative_inf: bool = False


@dataclass(frozen=True)
class Axis:
    kind: str  # "var" (the workload gives it), "const" or "expr"
    value: int | None = None
    expression: str | None = None


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[str | int, ...] | None  # axis names or fixed sizes; None is a Python scalar
    dtype: str


@dataclass(frozen=True)
class InputSpec:
    """Where one input of one workload comes from: random, scalar, custom or safetensors."""

    kind: str
    value: int | float | bool | None = None
    path: str | None = None
    tensor_key: str | None = None


@dataclass(frozen=True)
class Workload:
    uuid: str
    axes: dict[str, int]
    inputs: dict[str, InputSpec]
    tolerance: Tolerance
    line: int  # 1-based line in workload.jsonl
    shrunk_from: dict[str, int] | None = None  # the original var axes, after `shrink`


@dataclass(frozen=True)
class Problem:
    subset: str
    name: str
    folder: Path
    description: str
    axes: dict[str, Axis]
    inputs: dict[str, TensorSpec]  # in the order `run` takes them
    outputs: dict[str, TensorSpec]  # in the order `run` returns them
    reference: str
    custom_entry: str | None
    workloads: tuple[Workload, ...]
    hf_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.subset}/{self.name}"


@dataclass(frozen=True)
class Check:
    passed: bool
    max_abs_error: float
    max_rel_error: float
    mismatch_fraction: float  # the worst output's share of elements outside tolerance
    detail: str


# ---------------------------------------------------------------------------- loading


def load_problems(root: Path, subsets: list[str] | None = None) -> list[Problem]:
    """All problems under root (the dataset folder or its `benchmark/`), subsets in the
    dataset's order (L1, L2, Quant, FlashInfer-Bench), problems by folder name."""
    root = Path(root)
    base = root / "benchmark" if (root / "benchmark").is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"no SOL-ExecBench problems under {root}")
    present = sorted(p.name for p in base.iterdir() if p.is_dir())
    wanted = (
        list(subsets)
        if subsets is not None
        else ([s for s in SUBSETS if s in present] + [s for s in present if s not in SUBSETS])
    )
    problems = []
    for subset in wanted:
        if subset not in present:
            raise FileNotFoundError(f"subset {subset!r} not under {base}; found {present}")
        for folder in sorted(p for p in (base / subset).iterdir() if p.is_dir()):
            problems.append(_load_problem(subset, folder))
    return problems


def _read_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemFormatError(f"{where}: invalid JSON ({e.msg}, column {e.colno})") from e


def _need(obj: Any, key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ProblemFormatError(f"{where}: key {key!r} missing")
    value = obj[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ProblemFormatError(f"{where}: key {key!r} has type {type(value).__name__}")
    return value


def _load_problem(subset: str, folder: Path) -> Problem:
    path = folder / "definition.json"
    if not path.is_file():
        raise ProblemFormatError(f"{folder}: no definition.json")
    d = _read_json(path.read_text(), str(path))
    axes: dict[str, Axis] = {}
    names = set(_need(d, "axes", dict, str(path)))
    for name, a in d["axes"].items():
        where = f"{path}: axes.{name}"
        kind = _need(a, "type", str, where)
        if kind == "const":
            axes[name] = Axis("const", value=_need(a, "value", int, where))
        elif kind == "var":
            axes[name] = Axis("var")
        elif kind == "expr":
            expression = _need(a, "expression", str, where)
            _check_expression(expression, names, where)
            axes[name] = Axis("expr", expression=expression)
        else:
            raise ProblemFormatError(f"{where}: unknown axis type {kind!r}")
    inputs = _tensor_specs(_need(d, "inputs", dict, str(path)), axes, f"{path}: inputs")
    outputs = _tensor_specs(_need(d, "outputs", dict, str(path)), axes, f"{path}: outputs")
    reference = _need(d, "reference", str, str(path))
    entry = d.get("custom_inputs_entrypoint")
    if entry is not None and not (isinstance(entry, str) and entry.isidentifier()):
        raise ProblemFormatError(f"{path}: key 'custom_inputs_entrypoint' is not a name")
    _check_reference(reference, list(inputs), entry, str(path))
    wpath = folder / "workload.jsonl"
    if not wpath.is_file():
        raise ProblemFormatError(f"{folder}: no workload.jsonl")
    workloads = tuple(
        _workload(_read_json(line, f"{wpath}:{i}"), f"{wpath}:{i}", i)
        for i, line in enumerate(wpath.read_text().splitlines(), start=1)
        if line.strip()
    )
    return Problem(
        subset=subset, name=_need(d, "name", str, str(path)), folder=folder,
        description=d.get("description") or "", axes=axes, inputs=inputs, outputs=outputs,
        reference=reference, custom_entry=entry, workloads=workloads, hf_id=d.get("hf_id"),
    )  # fmt: skip


def _tensor_specs(specs: dict, axes: dict[str, Axis], where: str) -> dict[str, TensorSpec]:
    out = {}
    for name, s in specs.items():
        dtype = _need(s, "dtype", str, f"{where}.{name}")
        if dtype not in DTYPES:
            raise ProblemFormatError(f"{where}.{name}: unknown dtype {dtype!r}")
        shape = _need(s, "shape", (list, type(None)), f"{where}.{name}")
        if shape is not None:
            shape = tuple(int(a) if isinstance(a, str) and a.isdigit() else a for a in shape)
            for a in shape:
                if not isinstance(a, int) and a not in axes:
                    raise ProblemFormatError(f"{where}.{name}: shape names unknown axis {a!r}")
        out[name] = TensorSpec(shape=shape, dtype=dtype)
    return out


def _check_reference(source: str, inputs: list[str], entry: str | None, where: str) -> None:
    """As the public Definition does: `run` exists and takes the inputs, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ProblemFormatError(f"{where}: key 'reference' is not Python ({e.msg})") from e
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if ENTRY_POINT not in functions:
        raise ProblemFormatError(f"{where}: key 'reference' defines no top-level {ENTRY_POINT}")
    args = functions[ENTRY_POINT].args
    params = [a.arg for a in args.posonlyargs + args.args]
    if params != inputs:
        raise ProblemFormatError(f"{where}: run{tuple(params)} does not take inputs {inputs}")
    if entry is not None and entry not in functions:
        raise ProblemFormatError(f"{where}: custom_inputs_entrypoint {entry!r} not defined")


def _workload(w: Any, where: str, line: int) -> Workload:
    axes = _need(w, "axes", dict, where)
    for name, value in axes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProblemFormatError(f"{where}: key axes.{name} is not a non-negative int")
    inputs = {}
    for name, s in _need(w, "inputs", dict, where).items():
        kind = _need(s, "type", str, f"{where}: inputs.{name}")
        if kind == "scalar":
            value = _need(s, "value", (int, float, bool), f"{where}: inputs.{name}")
            inputs[name] = InputSpec(kind, value=value)
        elif kind == "safetensors":
            path = _need(s, "path", str, f"{where}: inputs.{name}")
            key = _need(s, "tensor_key", str, f"{where}: inputs.{name}")
            inputs[name] = InputSpec(kind, path=path, tensor_key=key)
        else:
            inputs[name] = InputSpec(kind)  # an unknown kind becomes a skip reason
    tolerance = {}
    given = _need(w, "tolerance", dict, where) if "tolerance" in w else {}
    for key in given:
        field = _TOLERANCE_KEYS.get(key)
        if field is None:
            raise ProblemFormatError(f"{where}: unknown key tolerance.{key}")
        kinds = {"allow_negative_inf": bool, "max_error_cap": (int, float, type(None))}
        tolerance[field] = _need(given, key, kinds.get(field, (int, float)), f"{where}: tolerance")
    return Workload(
        uuid=_need(w, "uuid", str, where), axes=dict(axes), inputs=inputs,
        tolerance=Tolerance(**tolerance), line=line,
    )  # fmt: skip


# ---------------------------------------------------------------------------- axes

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}  # fmt: skip


def _check_expression(expression: str, names: set[str], where: str) -> None:
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise ProblemFormatError(f"{where}: expression {expression!r} is not valid") from e
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.Name))
        ok |= isinstance(node, ast.Constant) and type(node.value) is int
        ok |= type(node) in _BINARY or isinstance(node, (ast.UAdd, ast.USub))
        if not ok:
            kind = type(node).__name__
            raise ProblemFormatError(f"{where}: {kind} not allowed in {expression!r}")
        if isinstance(node, ast.Name) and node.id not in names:
            raise ProblemFormatError(f"{where}: expression names unknown axis {node.id!r}")


def evaluate_expression(expression: str, values: Mapping[str, int]) -> int:
    """Integer arithmetic (+ - * // %, parentheses, ints, known axis names), walked over the
    syntax tree, never `eval`. The public schema also allows `/` and `**`; no problem uses
    them, and refusing them keeps every axis an exact, modest integer."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in values:
                raise ProblemFormatError(f"{expression!r}: axis {node.id!r} has no value")
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return -walk(node.operand) if isinstance(node.op, ast.USub) else walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if right == 0 and isinstance(node.op, (ast.FloorDiv, ast.Mod)):
                raise ProblemFormatError(f"{expression!r}: division by zero")
            return _BINARY[type(node.op)](left, right)
        raise ProblemFormatError(f"{expression!r}: {type(node).__name__} is not allowed")

    return walk(_parsed(expression))


@functools.lru_cache(maxsize=4096)
def _parsed(expression: str) -> ast.expr:
    """An expression's tree, parsed once (only read afterwards)."""
    return ast.parse(expression, mode="eval").body


def resolve_axes(problem: Problem, workload: Workload) -> dict[str, int]:
    """Every axis's value: var from the workload, const, then expr in dependency order.
    Axes a workload sets beyond the definition's are kept, as the public code passes them
    to the input function (one L2 problem reads a flag that way)."""
    values = dict(workload.axes)
    for name, axis in problem.axes.items():
        if axis.kind == "const":
            values[name] = axis.value
        elif axis.kind == "var" and name not in workload.axes:
            raise ProblemFormatError(f"{problem.key} line {workload.line}: no value for {name!r}")
    pending = {n: a.expression for n, a in problem.axes.items() if a.kind == "expr"}
    while pending:
        ready = [n for n, e in pending.items() if _names(e) <= values.keys()]
        if not ready:
            raise ProblemFormatError(f"{problem.key}: axes {sorted(pending)} depend on a cycle")
        for name in ready:
            values[name] = evaluate_expression(pending.pop(name), values)
    return values


@functools.lru_cache(maxsize=4096)
def _names(expression: str) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(_parsed(expression)) if isinstance(n, ast.Name))


def tensor_shape(spec: TensorSpec, axes: Mapping[str, int]) -> tuple[int, ...] | None:
    if spec.shape is None:
        return None
    return tuple(a if isinstance(a, int) else axes[a] for a in spec.shape)


def skip_reason(problem: Problem, workload: Workload) -> str | None:
    """Why this workload cannot run here, or None. Every workload left out gets one."""
    for name, spec in problem.inputs.items():
        source = workload.inputs.get(name)
        if source is None:
            if problem.custom_entry is None:
                return f"the workload gives no source for input {name!r}"
        elif source.kind == "safetensors":
            return (
                f"input {name!r} is read from a safetensors blob ({source.path}) that is "
                "not available offline"
            )
        elif source.kind not in ("random", "scalar", "custom"):
            return f"input {name!r} has the unsupported kind {source.kind!r}"
        elif source.kind == "custom" and problem.custom_entry is None:
            return f"input {name!r} is custom but the definition names no input function"
        elif source.kind == "random" and problem.custom_entry is None:
            if spec.dtype not in _RANDOM_DTYPES or (spec.dtype == _FP4 and not spec.shape):
                return f"input {name!r}: random values of dtype {spec.dtype} are not supported"
    try:
        resolve_axes(problem, workload)
    except ProblemFormatError as e:
        return f"axes do not resolve: {e}"
    return None


# ---------------------------------------------------------------------------- running


def load_reference(problem: Problem) -> types.ModuleType:
    """The reference source executed in a fresh module. The dataset's reference code is
    trusted (it is the benchmark's own specification), unlike candidate kernels."""
    module = types.ModuleType("solexec_reference_" + re.sub(r"\W", "_", problem.name))
    filename = f"<{problem.key}/definition.json:reference>"
    exec(compile(problem.reference, filename, "exec"), module.__dict__)
    return module


def reference_entry(problem: Problem) -> Callable[..., Any]:
    return getattr(load_reference(problem), ENTRY_POINT)


def torch_dtype(dtype: str) -> torch.dtype:
    if dtype == "float4_e2m1" or not hasattr(torch, dtype):
        raise ValueError(f"dtype {dtype} has no torch counterpart here")
    return getattr(torch, dtype)


def make_inputs(
    problem: Problem, workload: Workload, *, seed: int, device: str = "cpu"
) -> dict[str, object]:
    """Fresh inputs keyed by name in definition order, reproducible from `seed`.

    As the public `gen_inputs`: when the definition names an input function, it makes the
    inputs, called as `fn(axes_and_scalars, device)` with the resolved axes and the
    workload's scalars (so six L2 problems whose workloads say `random` get the function's
    own initialisation); torch's global generator is seeded with `seed` for the call and
    restored after, as the ROCm port's custom-input code does. An input the function does
    not return falls back to the workload's own kind.

    Otherwise `scalar` inputs take the workload's value and `random` ones are drawn, in
    definition order, from one torch.Generator seeded with `seed` (the public code draws
    from the global one): see `random_tensor` for the distributions. On device "meta" the
    inputs have their shapes and dtypes and no values, for tracing a reference's cost.
    """
    reason = skip_reason(problem, workload)
    if reason is not None:
        raise ValueError(f"{problem.key} line {workload.line} is skipped: {reason}")
    axes = resolve_axes(problem, workload)
    scalars = {n: s.value for n, s in workload.inputs.items() if s.kind == "scalar"}
    made: dict[str, object] = {}
    if problem.custom_entry is not None:
        fn = getattr(load_reference(problem), problem.custom_entry)
        dev = torch.device(device)
        host = dev.type in ("cpu", "meta")  # fork_rng keeps nothing for "meta": keep the CPU's
        with torch.random.fork_rng(
            devices=[] if host else [dev], device_type="cpu" if host else dev.type
        ):
            torch.manual_seed(seed)
            made = fn({**axes, **scalars}, dev)
        if not isinstance(made, Mapping):
            raise ValueError(f"{problem.key}: {problem.custom_entry} returned {type(made)}")
    # meta tensors are drawn from a CPU generator: meta has none, and draws no values
    generator = torch.Generator(device="cpu" if device == "meta" else device).manual_seed(seed)
    inputs: dict[str, object] = {}
    for name, spec in problem.inputs.items():
        shape = tensor_shape(spec, axes)
        source = workload.inputs.get(name)
        if name in made:
            inputs[name] = made[name]
        elif source is not None and source.kind == "scalar":
            inputs[name] = source.value
        elif source is not None and source.kind == "random":
            value = random_tensor(shape or (), spec.dtype, generator, device)
            inputs[name] = value.item() if shape is None else value
        else:
            raise ValueError(f"{problem.key}: {problem.custom_entry} did not make {name!r}")
        _check_input(problem, name, inputs[name], shape, spec.dtype)
    return inputs


def _check_input(problem: Problem, name: str, value: object, shape: Any, dtype: str) -> None:
    if shape is None:
        if isinstance(value, torch.Tensor):
            raise ValueError(f"{problem.key}: input {name!r} should be a Python scalar")
        return
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{problem.key}: input {name!r} is {got}, expected shape {shape}")
    if value.dtype != torch_dtype(dtype):
        raise ValueError(f"{problem.key}: input {name!r} is {value.dtype}, expected {dtype}")


def random_tensor(
    shape: Sequence[int], dtype: str, generator: torch.Generator, device: str = "cpu"
) -> torch.Tensor:
    """The public `_rand_tensor` distributions: standard normal for float32/16/bf16 (and
    float64); normal clamped to [-2, 2] for float8; normal rounded to the nearest E2M1 code
    for packed float4, here drawn at twice the last dimension so the packed tensor has the
    declared shape; uniform bool; integers uniform in [-1024, 1024) ([-128, 128) for int8).
    """
    shape = tuple(shape)
    kw = {"generator": generator, "device": device}
    if dtype in _FLOATS:
        return torch.randn(shape, dtype=torch_dtype(dtype), **kw)
    if dtype in _FP8:
        return torch.randn(shape, **kw).clamp_(-2.0, 2.0).to(torch_dtype(dtype))
    if dtype == _FP4 and shape:
        return _pack_fp4(torch.randn((*shape[:-1], 2 * shape[-1]), **kw))
    if dtype == "bool":
        return torch.randint(0, 2, shape, dtype=torch.bool, **kw)
    if dtype in _INTS:
        low, high = _INTS[dtype]
        return torch.randint(low, high, shape, dtype=torch_dtype(dtype), **kw)
    raise ValueError(f"random values of dtype {dtype} are not supported")


def _pack_fp4(x: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 code (ties to the even code, as the public table does), sign in bit 3,
    two codes a byte with the even column in the low nibble."""
    edges = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], device=x.device)
    low = torch.bucketize(x.abs(), edges, right=False)
    high = torch.bucketize(x.abs(), edges, right=True)
    code = torch.where((low == high) | (low % 2 == 0), low, high) + 8 * (x < 0)
    packed = (code[..., ::2] + 16 * code[..., 1::2]).to(torch.uint8)
    return packed.view(torch.float4_e2m1fn_x2)


def run_reference(
    problem: Problem, inputs: Mapping[str, object], entry: Callable[..., Any] | None = None
) -> list[torch.Tensor]:
    """Outputs in the definition's order. `run` takes the inputs positionally in definition
    order, under no_grad, as the public evaluator calls it; a single tensor, a tuple/list
    or a dict keyed by output name are accepted, Python scalars become 0-d tensors."""
    fn = entry or reference_entry(problem)
    with torch.no_grad():
        result = fn(*(inputs[name] for name in problem.inputs))
    names = list(problem.outputs)
    if isinstance(result, Mapping):
        if missing := [n for n in names if n not in result]:
            raise ValueError(f"{problem.key}: reference returned no {missing}")
        values = [result[n] for n in names]
    elif isinstance(result, (tuple, list)):
        values = list(result)
    else:
        values = [result]
    if len(values) != len(names):
        raise ValueError(f"{problem.key}: reference returned {len(values)} of {len(names)}")
    out = []
    for name, value in zip(names, values, strict=True):
        if value is None:
            raise ValueError(f"{problem.key}: reference returned None for {name!r}")
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(value, dtype=torch_dtype(problem.outputs[name].dtype))
        out.append(value)
    return out


# ---------------------------------------------------------------------------- judging


def check_outputs(
    got: Sequence[torch.Tensor] | torch.Tensor,
    want: Sequence[torch.Tensor] | torch.Tensor,
    tolerance: Tolerance,
    names: Sequence[str] | None = None,
) -> Check:
    """The public correctness rule, output by output. Shape and dtype must match exactly.
    Any NaN or inf in either tensor fails, except a -inf in both at one position when the
    tolerance allows it (the ROCm port's sanity check; the older evaluator looked at the
    output only); so does an all-zero output against a non-zero reference. Values are
    compared in float32: an element matches when |got - want| <= max_atol + max_rtol *
    |want| (torch.allclose's form); the output passes when the matched share is at least
    required_matched_ratio and, when a cap is set, no error exceeds max_error_cap. The
    relative error reported divides by |want| floored at max_atol. The Check carries the
    worst figures over all outputs and, in `detail`, every failing output's reason."""
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    names = list(names) if names is not None else [str(i) for i in range(len(want))]
    if len(got) != len(want):
        return Check(False, math.inf, math.inf, 1.0, f"{len(got)} outputs, expected {len(want)}")
    worst_abs = worst_rel = worst_share = 0.0
    failures = []
    for name, g, w in zip(names, got, want, strict=True):
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(w.shape):
            shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            return Check(False, math.inf, math.inf, 1.0,
                         f"output {name}: shape {shape}, expected {tuple(w.shape)}")  # fmt: skip
        if g.dtype != w.dtype:
            return Check(False, math.inf, math.inf, 1.0,
                         f"output {name}: dtype {g.dtype}, expected {w.dtype}")  # fmt: skip
        abs_err, rel_err, share, problem = _compare(g, w, tolerance)
        worst_abs, worst_rel = _worse(worst_abs, abs_err), _worse(worst_rel, rel_err)
        worst_share = max(worst_share, share)
        if problem:
            failures.append(f"output {name}: {problem}")
    summary = f"max abs {worst_abs:.3g}, max rel {worst_rel:.3g}, mismatched {worst_share:.3%}"
    detail = "; ".join(failures) if failures else f"all {len(want)} outputs match ({summary})"
    return Check(not failures, worst_abs, worst_rel, worst_share, detail)


def _worse(a: float, b: float) -> float:
    return b if math.isnan(b) or b > a else a  # NaN, once seen, stays the worst


COMPARE_CHUNK = 1 << 25  # elements compared at a time: float32 temporaries stay small


def _compare(
    got: torch.Tensor, want: torch.Tensor, tol: Tolerance
) -> tuple[float, float, float, str | None]:
    """(max abs error, max rel error, share mismatched, why it fails or None). Compared in
    chunks of COMPARE_CHUNK elements, so a multi-GB output needs little extra memory."""
    gx, gy = got.detach().reshape(-1), want.detach().reshape(-1)
    nan_x = inf_x = nan_y = inf_y = bad = kept = exceeds = 0
    any_x = any_y = False
    abs_err = rel_err = 0.0
    for i in range(0, gx.numel(), COMPARE_CHUNK):
        x = gx[i : i + COMPARE_CHUNK].to(torch.float32)
        y = gy[i : i + COMPARE_CHUNK].to(torch.float32)
        if tol.allow_negative_inf:
            keep = ~((x == -math.inf) & (y == -math.inf))
            x, y = x[keep], y[keep]
        kept += x.numel()
        bad_x, bad_y = ~torch.isfinite(x), ~torch.isfinite(y)
        if bool(bad_x.any()) or bool(bad_y.any()):
            bad += int((bad_x | bad_y).sum())
            nan_x, inf_x = nan_x + int(x.isnan().sum()), inf_x + int(x.isinf().sum())
            nan_y, inf_y = nan_y + int(y.isnan().sum()), inf_y + int(y.isinf().sum())
            continue
        if bad or x.numel() == 0:
            continue
        any_x, any_y = any_x or bool(x.any()), any_y or bool(y.any())
        err = (x - y).abs()
        exceeds += int((err > tol.max_atol + tol.max_rtol * y.abs()).sum())
        abs_err = max(abs_err, float(err.max()))
        rel_err = max(rel_err, float((err / y.abs().clamp(min=max(tol.max_atol, 1e-30))).max()))
    if bad:
        detail = f"non-finite values ({nan_x} NaN, {inf_x} inf in the output; "
        return math.nan, math.nan, bad / kept, detail + (
            f"{nan_y} NaN, {inf_y} inf in the reference)")
    if kept == 0:
        return 0.0, 0.0, 0.0, None
    if any_y and not any_x:
        return float(gy.abs().max()), 1.0, 1.0, "all zeros where the reference is not"
    share = exceeds / kept
    problem = None
    if 1.0 - share < tol.required_matched_ratio:
        problem = (
            f"{share:.3%} of elements outside atol {tol.max_atol:g} + rtol {tol.max_rtol:g}"
            f"*|ref| (at most {1.0 - tol.required_matched_ratio:.3%} allowed), "
            f"max abs {abs_err:.3g}"
        )
    elif tol.max_error_cap is not None and abs_err > tol.max_error_cap:
        problem = f"max abs error {abs_err:.3g} above the cap {tol.max_error_cap:g}"
    return abs_err, rel_err, share, problem


# ---------------------------------------------------------------------------- categories

CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("quantization", ("fp8", "fp4", "nvfp4", "quant", "int8", "int4")),
    ("fused-block", ("decoder_layer", "encoder_layer", "transformer_block", "complete_layer",
                     "full_block", "layer_stack", "unet_block", "resnet_block", "mid_block",
                     "convnextv2", "complete_forward", "flow_block", "two_way_transformer",
                     "multimodal_fusion")),
    ("moe-routing", ("moe", "expert", "routing", "dispatch")),
    ("attention", ("attention", "attn", "gqa", "mla", "sdpa", "qk_matmul", "kv_cache")),
    ("convolution", ("conv", "patch_embed", "pyramid")),
    ("normalization", ("rmsnorm", "rms_norm", "layernorm", "layer_norm", "group_norm",
                       "groupnorm", "norm")),
    ("softmax", ("softmax",)),
    ("positional", ("rope", "rotary", "position", "cos_sin", "frequency")),
    ("matmul", ("gemm", "matmul", "projection", "proj", "linear", "mlp", "feedforward",
                "ffn", "lm_head", "gate_up", "hypernetwork")),
    ("embedding-indexing", ("embedding", "gather", "scatter", "index", "shuffle", "sort",
                            "split", "mask", "repeat", "reshape")),
    ("reduction", ("sum", "mean", "reduce", "topk", "loss", "statistics", "aggregation",
                   "scan", "segsum", "cumsum")),
    ("elementwise", ("gelu", "silu", "swiglu", "geglu", "relu", "activation", "residual",
                     "softplus", "tanh", "decay", "dropout", "gating", "_add")),
)  # fmt: skip
"""First match wins, tried on the problem's name, then on its description; else "other".
Ordered from the most telling trait to the most generic: a quantized projection is
quantization, a whole decoder layer a fused block, an attention with a norm attention."""


def category(problem: Problem) -> str:
    """One category per problem from CATEGORY_KEYWORDS (deterministic)."""
    name = "_" + re.sub(r"^\d+_", "", problem.name.lower()).replace("-", "_")
    for text in (name, problem.description.lower().replace(" ", "_")):
        for label, keywords in CATEGORY_KEYWORDS:
            if any(k in text for k in keywords):
                return label
    return "other"


# ---------------------------------------------------------------------------- shrinking


def shrink(problem: Problem, workload: Workload, max_elements: int) -> Workload:
    """A copy of the workload for CPU runs, its var axes halved together until every input
    and output has at most about max_elements elements. Tensors whose size does not depend
    on a var axis (weights of const shape) are left as they are. Relations the definition
    does not state are kept where the data shows them: a var axis stays a multiple of its
    granule (see `_granule`), two var axes ordered alike in every workload of the problem
    (kv length >= query length) stay so ordered, no expr axis drops below 1, and a scalar
    input named `<axis>_scalar` that restates a var axis takes its new value. A relation
    beyond these (one var a fixed multiple of another) may not survive the halving."""
    if max_elements < 1:
        raise ValueError("max_elements must be at least 1")
    resolve_axes(problem, workload)  # a workload lacking an axis fails here, by name
    values = {n: workload.axes[n] for n, a in problem.axes.items() if a.kind == "var"}
    floor = {n: _granule(problem, n, v) for n, v in values.items()}
    order = [
        (a, b)
        for a in values
        for b in values
        if a != b and all(w.axes.get(a, 0) >= w.axes.get(b, 0) for w in problem.workloads)
    ]

    def valid(trial: dict[str, int]) -> bool:
        return _sizes(problem, workload, trial) is not None and all(
            trial[a] >= trial[b] for a, b in order
        )

    specs = {**problem.inputs, **problem.outputs}
    deps = {t: _var_deps(problem, spec) for t, spec in specs.items()}
    frozen: set[str] = set()
    while True:
        sizes = _sizes(problem, workload, values) or {}
        over = {v for t, size in sizes.items() if size > max_elements for v in deps[t]}
        culprits = [v for v in values if v in over and v not in frozen and values[v] > floor[v]]
        if not culprits:
            break
        halved = {v: max(floor[v], (values[v] + 1) // 2 // floor[v] * floor[v]) for v in culprits}
        if valid({**values, **halved}):
            values = {**values, **halved}
            continue
        for v in culprits:  # together they break a relation: try one at a time
            if valid({**values, v: halved[v]}):
                values[v] = halved[v]
            else:
                frozen.add(v)
    if values == {n: workload.axes[n] for n in values}:
        return workload
    inputs = dict(workload.inputs)
    for axis, value in values.items():
        twin = inputs.get(f"{axis}_scalar")
        if twin is not None and twin.kind == "scalar" and twin.value == workload.axes[axis]:
            inputs[f"{axis}_scalar"] = replace(twin, value=value)
    return replace(
        workload, axes={**workload.axes, **values}, inputs=inputs, shrunk_from=dict(workload.axes)
    )


def _sizes(problem: Problem, workload: Workload, values: dict[str, int]) -> dict | None:
    try:
        axes = resolve_axes(problem, replace(workload, axes={**workload.axes, **values}))
    except ProblemFormatError:
        return None
    if any(axes[n] < 1 for n, a in problem.axes.items() if a.kind == "expr"):
        return None
    specs = {**problem.inputs, **problem.outputs}
    return {t: math.prod(tensor_shape(s, axes) or ()) for t, s in specs.items()}


def _var_deps(problem: Problem, spec: TensorSpec) -> set[str]:
    """The var axes a tensor's size depends on, directly or through expr axes."""
    seen: set[str] = set()
    todo = [a for a in spec.shape or () if isinstance(a, str)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            if problem.axes[name].kind == "expr":
                todo.extend(_names(problem.axes[name].expression))
    return {a for a in seen if problem.axes[a].kind == "var"}


def _granule(problem: Problem, var: str, value: int) -> int:
    """The step `var` keeps: the gcd of its distinct values over the problem's workloads
    (the finest unit the dataset uses: nvfp4 problems need token counts in multiples of 128),
    and the constant divisors it meets under // or % in an expr axis when the workload's
    value is a multiple of them."""
    consts = {n: a.value for n, a in problem.axes.items() if a.kind == "const"}
    seen = {w.axes[var] for w in problem.workloads if var in w.axes}
    granule = math.gcd(*seen) if len(seen) > 1 else 1
    for axis in problem.axes.values():
        if axis.kind != "expr":
            continue
        for node in ast.walk(ast.parse(axis.expression, mode="eval")):
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.FloorDiv, ast.Mod))):
                continue
            if var not in {n.id for n in ast.walk(node.left) if isinstance(n, ast.Name)}:
                continue
            try:
                divisor = evaluate_expression(ast.unparse(node.right), consts)
            except ProblemFormatError:
                continue
            if divisor > 1 and value % divisor == 0:
                granule = math.lcm(granule, divisor)
    return granule if value > 0 and value % granule == 0 else 1
