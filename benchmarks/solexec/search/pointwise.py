"""Triton expressions for aten's pointwise ops, one function per op over its arguments'
expressions (variable names, literals or scalar-argument names), in aten's argument order.
Every value is float32 (or a boolean mask) in the kernel; see codegen.py."""

from __future__ import annotations

from collections.abc import Callable


class Unsupported(Exception):  # noqa: N818 - a verdict on a problem, not an error
    """The graph holds something the generated kernels cannot express; says what."""



def _alpha(expr: str, alpha: object) -> str:
    return expr if alpha in (None, 1, "1", 1.0, "1.0") else f"{expr} * {alpha}"


def pow_expr(x: str, e: object) -> str:
    table = {0: "1.0", 1: f"{x}", 2: f"{x} * {x}", 3: f"{x} * {x} * {x}",
             4: f"{x} * {x} * {x} * {x}", -1: f"1.0 / {x}", -2: f"1.0 / ({x} * {x})",
             0.5: f"tl.sqrt({x})", -0.5: f"tl.rsqrt({x})"}  # fmt: skip
    try:
        key = float(e)
    except (TypeError, ValueError):
        return f"tl.exp2({e} * tl.log2({x}))"  # a float input as the exponent
    if key in table:
        return table[key]
    if key == int(key):
        sign = f"tl.where({x} < 0, {1 - 2 * (int(key) % 2)}.0, 1.0)"
        return f"{sign} * tl.exp2({e} * tl.log2(tl.abs({x})))"
    return f"tl.exp2({e} * tl.log2({x}))"


def _div(a: str, b: str, rounding_mode: object = None) -> str:
    if rounding_mode is not None:
        raise Unsupported(f"div with rounding_mode={rounding_mode}")
    return f"{a} / {b}"


def _gelu(x: str, approximate: object = "none") -> str:
    if approximate in ("tanh", "'tanh'"):
        return f"0.5 * {x} * (1.0 + _tanh(0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x})))"
    return f"0.5 * {x} * (1.0 + tl.erf({x} * 0.7071067811865476))"


def _clamp(x: str, min: object = None, max: object = None) -> str:  # noqa: A002 - aten names
    if min not in (None, "None"):
        x = f"tl.maximum({x}, {min})"
    if max not in (None, "None"):
        x = f"tl.minimum({x}, {max})"
    return x


def _softplus(x: str, beta: object = 1, threshold: object = 20) -> str:
    return (f"tl.where({x} * {beta} > {threshold}, {x}, "
            f"tl.log(1.0 + tl.exp({x} * {beta})) / {beta})")


POINTWISE: dict[str, Callable[..., str]] = {
    "add": lambda a, b, alpha=1: f"{a} + {_alpha(b, alpha)}",
    "sub": lambda a, b, alpha=1: f"{a} - {_alpha(b, alpha)}",
    "rsub": lambda a, b, alpha=1: f"{b} - {_alpha(a, alpha)}",
    "mul": lambda a, b: f"{a} * {b}",
    "div": _div,
    "neg": lambda x: f"-{x}",
    "abs": lambda x: f"tl.abs({x})",
    "exp": lambda x: f"tl.exp({x})",
    "exp2": lambda x: f"tl.exp2({x})",
    "expm1": lambda x: f"tl.exp({x}) - 1.0",
    "log": lambda x: f"tl.log({x})",
    "log2": lambda x: f"tl.log2({x})",
    "log1p": lambda x: f"tl.log(1.0 + {x})",
    "sqrt": lambda x: f"tl.sqrt({x})",
    "rsqrt": lambda x: f"tl.rsqrt({x})",
    "reciprocal": lambda x: f"1.0 / {x}",
    "sigmoid": lambda x: f"tl.sigmoid({x})",
    "tanh": lambda x: f"_tanh({x})",
    "sin": lambda x: f"tl.sin({x})",
    "cos": lambda x: f"tl.cos({x})",
    "erf": lambda x: f"tl.erf({x})",
    "floor": lambda x: f"tl.floor({x})",
    "ceil": lambda x: f"tl.ceil({x})",
    "relu": lambda x: f"tl.maximum({x}, 0.0)",
    "silu": lambda x: f"{x} * tl.sigmoid({x})",
    "gelu": _gelu,
    "softplus": _softplus,
    "mish": lambda x: f"{x} * _tanh({_softplus(x)})",
    "leaky_relu": lambda x, negative_slope=0.01: f"tl.where({x} > 0, {x}, {x} * {negative_slope})",
    "elu": lambda x, alpha=1, scale=1, input_scale=1:
        f"{scale} * tl.where({x} > 0, {x}, {alpha} * (tl.exp({x} * {input_scale}) - 1.0))",
    "hardsigmoid": lambda x: f"tl.minimum(tl.maximum({x} / 6.0 + 0.5, 0.0), 1.0)",
    "hardswish": lambda x: f"{x} * tl.minimum(tl.maximum({x} + 3.0, 0.0), 6.0) / 6.0",
    "hardtanh": lambda x, min_val=-1.0, max_val=1.0: _clamp(x, min_val, max_val),
    "clamp": _clamp,
    "clamp_min": lambda x, m: _clamp(x, m, None),
    "clamp_max": lambda x, m: _clamp(x, None, m),
    "maximum": lambda a, b: f"tl.maximum({a}, {b})",
    "minimum": lambda a, b: f"tl.minimum({a}, {b})",
    "square": lambda x: f"{x} * {x}",
    "where": lambda c, a, b: f"tl.where({c}, {a}, {b})",
    "masked_fill": lambda x, m, value: f"tl.where({m}, {value}, {x})",
    "addcmul": lambda x, a, b, value=1: f"{x} + {value} * {a} * {b}",
    "addcdiv": lambda x, a, b, value=1: f"{x} + {value} * {a} / {b}",
    "eq": lambda a, b: f"{a} == {b}",
    "ne": lambda a, b: f"{a} != {b}",
    "lt": lambda a, b: f"{a} < {b}",
    "le": lambda a, b: f"{a} <= {b}",
    "gt": lambda a, b: f"{a} > {b}",
    "ge": lambda a, b: f"{a} >= {b}",
    "logical_and": lambda a, b: f"{a} & {b}",
    "logical_or": lambda a, b: f"{a} | {b}",
    "bitwise_and": lambda a, b: f"{a} & {b}",
    "bitwise_or": lambda a, b: f"{a} | {b}",
    "logical_not": lambda x: f"{x} == 0",
    "bitwise_not": lambda x: f"{x} == 0",
}
