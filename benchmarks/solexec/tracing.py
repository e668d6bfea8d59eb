"""Run a SOL-ExecBench reference without a GPU and count its work.

The reference runs under a dispatch-level counter on meta tensors: nothing is allocated,
any shape is cheap, and every aten op is classified (roofline.py states the conventions):
contractions (mm, bmm, addmm, baddbmm, convolution, attention, _scaled_mm) are tensor-core
FLOPs, counted with torch.utils.flop_counter's formulas per operand dtype; pointwise ops
cost one CUDA-core FLOP per output element, reductions and softmax/norm kernels one per
input element, data movement none.

Three things make real references run here:

* Placement. Factories without a device and every explicit device ("cuda", .cuda(), .to)
  land on the trace's device, so a reference written for a GPU runs unchanged.
* Stand-in values. A one-element meta tensor computed from known scalars carries its value
  (quantised references read scales back with .item() and test them); a float nobody can
  know reads 1.0, which scales data without sizing anything.
* The CPU fallback. A reference whose control flow reads tensor values (MoE routing,
  variable-length batches) runs on the CPU with small tensors real and big ones meta
  (REAL_LIMIT); contraction outputs are counted from their meta twins and made real as
  noise, so routing logits have values and top-k picks experts.

Long references repeat the same ops on the same shapes (loops over experts, heads, time
steps): meta kernels' output metadata is cached per op and argument layout, and the
per-op bookkeeping is kept to one walk of the arguments.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils.flop_counter import flop_registry

META = torch.device("meta")

_aten = torch.ops.aten
# Operand whose dtype names a contraction's precision (bias comes first in add*mm).
_OPERAND_INDEX = {_aten.addmm: 1, _aten.baddbmm: 1}
_NORM_LIKE = {
    _aten._softmax,
    _aten._safe_softmax,
    _aten._log_softmax,
    _aten.native_layer_norm,
    _aten.native_group_norm,
    _aten.native_batch_norm,
    _aten._native_batch_norm_legit_no_training,
    _aten._fused_rms_norm,
    _aten.logsumexp,
}
_MOVEMENT = {_aten.clone, _aten.copy_, _aten._to_copy, _aten.lift_fresh}
_DEVICE_FREE_METHODS = {torch.Tensor.cuda, torch.Tensor.cpu}
_SETITEM = torch.Tensor.__setitem__
_LOCAL_SCALAR = _aten._local_scalar_dense.default


_PLAIN = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout})


def _scan(value: Any, found: list[torch.Tensor]) -> Any:
    """Append the tensors in an op's (nested list/tuple/dict) arguments to ``found``, and
    return a hashable description of the arguments' metadata and values, or None where
    there is none (a real tensor, an unhashable value). One walk serves both the counter
    and the meta cache: on long traces this bookkeeping is most of the per-op cost."""
    if isinstance(value, torch.Tensor):
        found.append(value)
        return (value.shape, value.stride(), value.dtype) if value.is_meta else None
    cls = type(value)
    if cls is tuple or cls is list:
        if all(type(v) is int for v in value):  # a size or a list of dims: hashable as is
            return (cls, tuple(value))
        parts = [_scan(v, found) for v in value]
        return None if None in parts else (cls, *parts)
    if cls in _PLAIN:
        return (cls, value)
    if cls is dict:
        parts = [(k, _scan(v, found)) for k, v in sorted(value.items())]
        return None if any(part is None for _, part in parts) else tuple(parts)
    try:
        hash(value)
    except TypeError:
        return None
    return (cls, value)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an op's (nested list/tuple/dict) arguments or outputs."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


@dataclass(frozen=True)
class _OpInfo:
    kind: str  # "tensor_core", "reduction", "pointwise" or "none"
    fresh: bool  # every output is a new tensor: no view, no in-place write


_OP_INFO: dict[Any, _OpInfo] = {}


def _op_info(func: Any) -> _OpInfo:
    info = _OP_INFO.get(func)
    if info is None:
        packet, schema = func.overloadpacket, func._schema
        if packet in flop_registry:
            kind = "tensor_core"
        elif packet in _MOVEMENT:
            kind = "none"
        elif torch.Tag.reduction in func.tags or packet in _NORM_LIKE:
            kind = "reduction"
        elif torch.Tag.pointwise in func.tags:
            kind = "pointwise"
        else:
            kind = "none"
        fresh = all(
            str(r.type) == "Tensor" and r.alias_info is None for r in schema.returns
        ) and not any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        info = _OP_INFO[func] = _OpInfo(kind, fresh)
    return info


# Output metadata of functional meta ops, keyed by op and argument metadata. Meta kernels
# run as Python reference implementations (hundreds of microseconds each); references that
# loop over a sequence repeat the same op and shapes thousands of times.
_META_CACHE: dict[Any, tuple[tuple[tuple[int, ...], tuple[int, ...], torch.dtype], ...]] = {}
_META_CACHE_LIMIT = 100_000


def _run_cached(func: Any, key: Any, args: tuple, kwargs: dict) -> Any:
    """func(*args, **kwargs), its output metadata looked up under ``key`` (the op and its
    arguments' _scan; None for ops that are not functional or arguments that are real)."""
    if key is not None:
        cached = _META_CACHE.get(key)
        if cached is not None:
            outs = [torch.empty_strided(s, st, dtype=d, device=META) for s, st, d in cached]
            return outs[0] if len(outs) == 1 else tuple(outs)
    out = func(*args, **kwargs)
    if key is not None and len(_META_CACHE) < _META_CACHE_LIMIT:
        outs = out if isinstance(out, tuple) else (out,)
        # One-element outputs stay uncached: they may carry a stand-in value.
        if all(isinstance(o, torch.Tensor) and o.is_meta for o in outs) and any(
            o.numel() != 1 for o in outs
        ):
            _META_CACHE[key] = tuple((tuple(o.shape), o.stride(), o.dtype) for o in outs)
    return out


def _cache_key(func: Any, fresh: bool, scanned: Any) -> Any:
    return (func, scanned) if fresh and scanned is not None else None


# The CPU fallback keeps a tensor real (with values) only up to these sizes, in elements:
# integer and boolean tensors (indices, masks, counts) are what control flow reads; float
# tensors that are inputs or created by the reference are mostly activations and weights;
# contraction outputs are where routing logits come from. The integer limit admits a
# one-hot expert mask of 8,192 tokens x top-10 x 512 experts (42M elements).
REAL_LIMIT = {"int": 1 << 26, "float": 1 << 16, "contraction": 1 << 22}


def stays_real(tensor: torch.Tensor, kind: str | None = None) -> bool:
    """Whether the CPU fallback keeps a tensor of this size and dtype real."""
    kind = kind or ("float" if tensor.dtype.is_floating_point else "int")
    return tensor.numel() <= REAL_LIMIT[kind]


class _Mode(TorchDispatchMode):
    """A dispatch mode without torch's per-call Dynamo guard: these modes never run under
    torch.compile, and the guard costs more than the rest of a meta op's dispatch."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class _CountingMode(_Mode):
    """Counts tensor-core FLOPs per operand dtype and CUDA-core FLOPs per op kind.

    On real tensors (the CPU fallback) contractions are counted from their meta twins and
    not computed: their outputs are standard-normal noise of the right shape, all that the
    values steering data-dependent code downstream (routing logits, top-k) need to be.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.tensor_flops: dict[str, int] = defaultdict(int)
        self.other_flops = 0
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _LOCAL_SCALAR and args[0].is_meta:
            value = _read_shadow(args[0])
            if value is not None:
                return value
        info = _op_info(func)
        if info.kind == "tensor_core" and self.device.type != "meta":
            args, kwargs = _on_meta((args, kwargs))
            out = func(*args, **kwargs)
            self._count(info, func, args, kwargs, _tensors((args, kwargs)), out)
            return _materialise(out, self.device)
        if self.device.type == "meta" and "device" in kwargs:  # a factory without a device
            kwargs = {**kwargs, "device": self.device}
        inputs: list[torch.Tensor] = []
        key = _cache_key(func, info.fresh, _scan((args, kwargs), inputs))
        out = _run_cached(func, key, args, kwargs)
        self._count(info, func, args, kwargs, inputs, out)
        _record_shadow(func, args, kwargs, out)
        return out

    def _count(
        self, info: _OpInfo, func: Any, args: tuple, kwargs: dict, inputs: list, out: Any
    ) -> None:
        outputs = [out] if isinstance(out, torch.Tensor) else _tensors(out)
        for t in inputs:
            self.dtypes.add(t.dtype)
        for t in outputs:
            self.dtypes.add(t.dtype)
        if info.kind == "tensor_core":
            packet = func.overloadpacket
            operand = args[_OPERAND_INDEX.get(packet, 0)] if args else None
            dtype = operand.dtype if isinstance(operand, torch.Tensor) else torch.float32
            flops = flop_registry[packet](*args, **kwargs, out_val=out)
            if dtype == torch.float4_e2m1fn_x2:  # two E2M1 values a stored element, along K
                flops *= 2
            self.tensor_flops[str(dtype).removeprefix("torch.")] += int(flops)
        elif info.kind == "reduction" and inputs:
            self.other_flops += inputs[0].numel()
        elif info.kind == "pointwise":
            self.other_flops += sum(t.numel() for t in outputs)


def _on_meta(value: Any) -> Any:
    """The same structure with every real tensor replaced by a meta tensor of its layout."""
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":
            return value
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device="meta")
    if isinstance(value, (list, tuple)):
        return type(value)(_on_meta(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_meta(v) for k, v in value.items()}
    return value


@functools.cache
def _noise() -> torch.Tensor:
    """Standard-normal values enough for the largest real contraction output, drawn once
    from a fixed seed: drawing afresh for every expert's product costs more than the rest
    of a routed reference's trace."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(REAL_LIMIT["contraction"], generator=generator)


def _materialise(value: Any, device: torch.device) -> Any:
    """Meta outputs made real on ``device`` where small enough: floats standard-normal
    noise (a prefix of _noise), everything else zeros. Larger outputs stay meta."""
    if isinstance(value, torch.Tensor):
        if not stays_real(value, "contraction"):
            return value
        with _disable_current_modes():  # the placement mode would put big ones back on meta
            real = torch.empty_strided(
                value.shape, value.stride(), dtype=value.dtype, device=device
            )
            if not value.dtype.is_floating_point:
                return real.zero_()
            return real.copy_(_noise()[: value.numel()].view(value.shape))
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(v, device) for v in value)
    return value


_INDEXING = {_aten.index, _aten.index_put, _aten.index_put_, _aten._unsafe_index_put}


def _masks_as_positions(indices: Any) -> Any:
    """An index list with each real boolean mask replaced by the integer positions it
    selects, one tensor a masked dimension: x[mask] is x[mask.nonzero().unbind(1)]."""
    out = []
    for index in indices:
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool and not index.is_meta:
            out.extend(index.nonzero().unbind(1))
        else:
            out.append(index)
    return out


class _HybridMode(_Mode):
    """The CPU fallback's placement: small tensors are real CPU tensors, so that indices,
    masks and routing decisions have values; big ones (weights, activations) are meta.

    An op with any meta operand runs on meta, a real boolean mask indexing it first turned
    into the positions it selects (meta has no nonzero); a factory whose result would
    exceed REAL_LIMIT makes a meta tensor.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = _tensors((args, kwargs))
        if any(t.device.type == "meta" for t in tensors):
            if func.overloadpacket in _INDEXING and len(args) > 1:
                args = (args[0], _masks_as_positions(args[1]), *args[2:])
            args, kwargs = _on_meta((args, kwargs))
            if "device" in kwargs:
                kwargs = {**kwargs, "device": torch.device("meta")}
            key = _cache_key(func, _op_info(func).fresh, _scan((args, kwargs), []))
            return _run_cached(func, key, args, kwargs)
        if not tensors and "device" in kwargs:
            planned = func(*args, **{**kwargs, "device": torch.device("meta")})
            if not all(stays_real(t) for t in _tensors(planned)):
                return planned
            kwargs = {**kwargs, "device": torch.device("cpu")}
        return func(*args, **kwargs)


_SHADOW = "_solexec_value"  # attribute holding a one-element meta tensor's stand-in value


class _Unknown(Exception):  # noqa: N818 - control flow inside the shadow mode
    pass


def _shadow_args(value: Any) -> Any:
    """Op arguments with one-element meta tensors replaced by CPU tensors of their stand-in
    values (floats default to 1.0); _Unknown where a stand-in is missing."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            return value
        known = getattr(value, _SHADOW, None)
        if known is None:
            if not value.dtype.is_floating_point:
                raise _Unknown
            known = 1.0
        return torch.full(value.shape, known, dtype=value.dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_shadow_args(v) for v in value)
    if isinstance(value, torch.device):
        return torch.device("cpu")
    return value


def _read_shadow(tensor: torch.Tensor) -> Any:
    """A one-element meta tensor's stand-in value: known, else 1.0 for floats, else None.

    A floating-point value nobody can know (a global scale reduced from a whole tensor)
    stands in as 1.0: quantised references read such scales back with .item() and test them
    (``if scale == 0``), and their value scales data without sizing anything, so any value
    gives the same FLOPs and bytes. Integer and boolean values reduced from whole tensors
    (counts, lengths, ``mask.any()``) get no stand-in: they decide shapes and control flow.
    """
    value = getattr(tensor, _SHADOW, None)
    if value is None and tensor.dtype.is_floating_point:
        return 1.0
    return value


def _record_shadow(func: Any, args: tuple, kwargs: dict, out: Any) -> None:
    """Give a one-element meta result computed only from one-element tensors a stand-in
    value, recomputing the op on the CPU from its operands' stand-ins. Writes into views
    (x[i] = v) are left alone: they fill tensors, they do not make scalars."""
    if not (isinstance(out, torch.Tensor) and out.device.type == "meta" and out.numel() == 1):
        return
    if _op_info(func).fresh and all(t.numel() == 1 for t in _tensors((args, kwargs))):
        try:
            real = func(*_shadow_args(args), **_shadow_args(kwargs))
            setattr(out, _SHADOW, real.item())
        except Exception:  # no stand-in: the value stays unknown
            pass


class _ScalarShadowMode(_Mode):
    """Stand-in values for one-element meta tensors (see _read_shadow), so scalar arithmetic
    and guards in input generators run on meta tensors. The counter does the same itself."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _LOCAL_SCALAR and args[0].device.type == "meta":
            value = _read_shadow(args[0])
            if value is not None:
                return value
        out = func(*args, **kwargs)
        _record_shadow(func, args, kwargs, out)
        return out


class _DeviceMode(TorchFunctionMode):
    """Puts every tensor a reference creates on one device: factories without a device and
    every explicit device (device="cuda", .to("cuda"), .cuda()), so a reference written for
    a GPU runs unchanged on meta (or CPU) tensors.

    Item assignment into a meta tensor is skipped: it would only change values, which meta
    tensors do not have, and copies cost no FLOPs. Input functions that fill index tensors
    one element at a time otherwise spend most of their trace dispatching those writes.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DEVICE_FREE_METHODS:
            return args[0]
        if func is _SETITEM and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return None
        if kwargs.get("device") is not None or func in _device_constructors():
            kwargs = {**kwargs, "device": self.device}
        if func is torch.Tensor.to:
            args = tuple(self.device if isinstance(a, (str, torch.device)) else a for a in args)
        out = func(*args, **kwargs)
        if func is torch.tensor and out.device.type == "meta" and out.numel() == 1:
            setattr(out, _SHADOW, torch.tensor(args[0]).item())  # a literal's value is known
        return out


@contextmanager
def _placed(device: torch.device, shadows: bool) -> Iterator[None]:
    with ExitStack() as stack:
        stack.enter_context(_DeviceMode(device))
        if shadows:
            stack.enter_context(_ScalarShadowMode())
        if device.type != "meta":
            stack.enter_context(_HybridMode())
        yield


def on_device(device: str | torch.device = "meta") -> Any:
    """A context in which every tensor created lands on ``device`` ("meta", or "cpu" with
    the CPU fallback's placement), with stand-in values for one-element meta tensors."""
    return _placed(torch.device(device), shadows=True)


def on_meta() -> Any:
    """on_device("meta"): no memory is allocated, any shape is cheap."""
    return on_device("meta")


class SolUnavailable(Exception):  # noqa: N818 - a verdict, not an error of this module
    """The reference could not be traced; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Traced:
    """One run of a reference: tensor-core FLOPs by operand dtype, CUDA-core FLOPs, every
    dtype seen, and the reference's output."""

    tensor_flops: dict[str, int]
    cuda_core_flops: int
    dtypes: frozenset[torch.dtype]
    output: Any


_DATA_DEPENDENT_MARKS = (
    "data-dependent",
    "data dependent",
    "item()",
    "cannot be called on meta",
    "returns a fake value",
    "tolist",
)


def _reason(exc: BaseException, device: torch.device) -> str:
    """One line that says why a trace failed, its first words a category for reporting."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if device.type == "meta" and any(mark in lowered for mark in _DATA_DEPENDENT_MARKS):
        kind = "data-dependent op on meta tensors"
    elif device.type == "meta" and "meta" in lowered and "kernel" in lowered:
        kind = "op has no meta kernel"
    elif "cuda" in lowered and ("not compiled" in lowered or "driver" in lowered):
        kind = "reference needs a CUDA device"
    else:
        kind = f"reference failed on {device.type} tensors ({type(exc).__name__})"
    return f"{kind}: {text[:240]}"


def trace(
    fn: Callable[..., Any], inputs: Mapping[str, Any], device: str | torch.device | None = None
) -> Traced:
    """Run fn(**inputs) under the counter; raise SolUnavailable on failure.

    Tensors the reference creates land on ``device``: by default the inputs' device, meta
    unless the caller passed real (CPU) tensors. "cpu" is the fallback for references whose
    control flow reads tensor values; it applies even when every input is too large to be
    real, since contraction outputs (routing logits) are made real there.
    """
    if device is None:
        real = {v.device for v in inputs.values() if isinstance(v, torch.Tensor)} - {META}
        device = real.pop() if real else META
    device = torch.device(device)
    counter = _CountingMode(device)
    try:
        with torch.no_grad(), _placed(device, shadows=False), counter:
            out = fn(**inputs)
    except SolUnavailable:
        raise
    except Exception as exc:  # any reference failure becomes a recorded reason
        raise SolUnavailable(_reason(exc, device)) from exc
    return Traced(dict(counter.tensor_flops), counter.other_flops, frozenset(counter.dtypes), out)
