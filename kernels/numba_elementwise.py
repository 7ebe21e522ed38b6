"""Fused value-and-derivative kernels for the element-wise rules, in numba-CUDA.

The scalar device function of a rule is *generated* from its scalar form
(``ElementwiseRule.scalar`` in ``batchjac/rules_elementwise.py``: C expressions, value
first, then one derivative per argument), never rewritten here: the expressions are
compiled as Python source in a namespace where ``exp``, ``log``, ... ``erf``, ``pow``,
``fabs``, ``fmax``, ``fmin`` are the ``math`` functions and ``where(c, a, b)`` is a select.
Float literals are cast to the array's type (``T(1.0)``), so a float32 kernel stays in
float32 (C's ``1.0`` would promote to double and run on the slow FP64 units).

One kernel launch reads each input element once and writes ``y`` and each derivative once.
Arrays are flat (1-D, C-contiguous): a batch ``(B, ...)`` is one index space, so thread ``i``
touches element ``i`` of every array and each warp's accesses are coalesced. Binary kernels
take ``u`` and ``v`` of one shape (the public ``bj.elementwise`` requires it); broadcasting
happens above the kernels.

Under the CUDA simulator the same source runs in Python on NumPy scalars; there the
functions are NumPy's, because ``math.log(0.0)`` raises where C (and CUDA) give ``-inf``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from batchjac.kernels.numba_launch import per_device, simulated
from numba import cuda
from numpy.typing import DTypeLike

_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*(?:[eE][-+]?\d+)?)")


def _select(c, a, b):
    return a if c else b


def _round_half_even(x):
    r = math.floor(x + 0.5)
    if r - x == 0.5 and math.fmod(r, 2.0) != 0.0:
        r -= 1.0  # a tie goes to the even neighbour, as C's rint and NumPy's round
    return r


def _scalar_namespace(dtype: DTypeLike) -> dict:
    """The names a scalar expression may use (``SCALAR_FUNCTIONS``), bound for ``dtype``."""
    where = cuda.jit(device=True, inline=True)(_select)
    if simulated():
        functions = dict(
            exp=np.exp, log=np.log, log1p=np.log1p, expm1=np.expm1, sin=np.sin, cos=np.cos,
            tan=np.tan, tanh=np.tanh, sqrt=np.sqrt, erf=math.erf, pow=np.power, fabs=np.abs,
            fmax=np.fmax, fmin=np.fmin, log2=np.log2, log10=np.log10, asin=np.arcsin,
            acos=np.arccos, atan=np.arctan, sinh=np.sinh, cosh=np.cosh, asinh=np.arcsinh,
            acosh=np.arccosh, atanh=np.arctanh, floor=np.floor, ceil=np.ceil, rint=np.rint,
            atan2=np.arctan2, hypot=np.hypot,
        )  # fmt: skip
    else:
        functions = dict(
            exp=math.exp, log=math.log, log1p=math.log1p, expm1=math.expm1, sin=math.sin,
            cos=math.cos, tan=math.tan, tanh=math.tanh, sqrt=math.sqrt, erf=math.erf,
            pow=math.pow, fabs=math.fabs, fmax=max, fmin=min, log2=math.log2, log10=math.log10,
            asin=math.asin, acos=math.acos, atan=math.atan, sinh=math.sinh, cosh=math.cosh,
            asinh=math.asinh, acosh=math.acosh, atanh=math.atanh, floor=math.floor, ceil=math.ceil,
            rint=cuda.jit(device=True)(_round_half_even), atan2=math.atan2, hypot=math.hypot,
        )  # fmt: skip
    return {**functions, "where": where, "T": numba.from_dtype(dtype)}


def scalar_source(name: str, scalar: tuple, arguments: tuple, params: tuple) -> str:
    """Python source of ``<name>_value_and_derivatives(arguments..., params...) -> (y, dy/darg_1, ...)``.

    ``scalar`` is the rule's scalar form; ``y`` is bound to the value before the
    derivatives, which may use it.
    """
    value, *derivatives = (_FLOAT_LITERAL.sub(r"T(\1)", expr) for expr in scalar)
    signature = ", ".join((*arguments, *params))
    body = f"    y = {value}\n    return y, {', '.join(derivatives)}\n"
    return f"def {name}_value_and_derivatives({signature}):\n{body}"


def _compile_scalar(
    dtype: DTypeLike, name: str, scalar: tuple[str, ...], arguments: tuple[str, ...], params: tuple[str, ...]
) -> Any:
    namespace = _scalar_namespace(dtype)
    exec(scalar_source(name, scalar, arguments, params), namespace)
    # Not inline=True: numba's IR inliner cannot take the kernel's ``*params`` call; NVVM
    # inlines the small function anyway (checked in benchmarks/results/numba_ptx_report.txt).
    return cuda.jit(device=True)(namespace[f"{name}_value_and_derivatives"])


def _unary_kernel(value_and_derivative: Any) -> Any:
    def value_and_derivative_unary(x, y, dy, params):
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            value, derivative = value_and_derivative(x[i], *params)
            y[i] = value
            dy[i] = derivative

    return cuda.jit(value_and_derivative_unary)


def _binary_kernel(value_and_derivatives: Any) -> Any:
    def value_and_derivatives_binary(u, v, y, du, dv):
        for i in range(cuda.grid(1), u.size, cuda.gridsize(1)):
            value, d_u, d_v = value_and_derivatives(u[i], v[i])
            y[i] = value
            du[i] = d_u
            dv[i] = d_v

    return cuda.jit(value_and_derivatives_binary)


@per_device
def rule_kernel(dtype: DTypeLike, name: str, scalar: tuple, arity: int, params: tuple) -> Any:
    """The fused kernel of a built-in rule, for flat arrays of ``dtype``.

    Unary: ``kernel[grid](x, y, dy, params)`` with ``params`` the rule's parameters as a
    tuple of ``dtype`` scalars, in the order of ``params``. Binary:
    ``kernel[grid](u, v, y, du, dv)``. All arrays 1-D of one length.
    """
    arguments = ("x",) if arity == 1 else ("u", "v")
    scalar_fn = _compile_scalar(dtype, name, scalar, arguments, params)
    return _unary_kernel(scalar_fn) if arity == 1 else _binary_kernel(scalar_fn)


@per_device
def user_kernel(dtype: DTypeLike, f: Callable[..., Any], df: Callable[[float], float]) -> Any:
    """The fused unary kernel of a user rule from scalar Python functions ``f`` and ``df``.

    ``kernel[grid](x, y, dy, ())``; ``dtype`` keys the cache (numba types ``f`` and ``df``
    from the array's element type).
    """
    value = cuda.jit(device=True)(f)
    derivative = cuda.jit(device=True)(df)

    @cuda.jit(device=True, inline=True)
    def value_and_derivative(x):
        return value(x), derivative(x)

    return _unary_kernel(value_and_derivative)
