"""The scalar functions of the fused CPU kernels: what the names of a rule's scalar form mean
in the generated code (``exp``, ``fmax``, ``rint``, ...), for numba's ``njit``.

Generated CPU modules import everything from here. Most names are the ``math`` functions
(numba compiles them to the C library's); the rest keep C's meaning where Python's differs:
``floor``, ``ceil`` and ``rint`` return floats (``math.floor`` returns an int), ``fmax`` and
``fmin`` return the operand that is not NaN.

``exp_f32`` and ``tanh_f32`` are float32 ``exp`` and ``tanh`` written without calls or
branches, so that LLVM vectorises a loop that uses them (a C library call per element
stops it, and glibc's ``tanhf`` alone costs ~20 ns). ``exp_f32`` is Cephes' ``expf``
(Cody-Waite range reduction, its minimax polynomial), within 1 ulp of the correctly rounded
result. ``tanh_f32`` is a rational function of degrees 4 and 4 in ``x^2`` fitted here
(relative error 2e-8 in exact arithmetic): float32 evaluation leaves it within 6 ulp, a
relative error below 4e-7 (NumPy's float32 ``tanh``: 1.4 ulp), where the classical form
``1 - 2 / (exp(2x) + 1)`` with a polynomial near 0 (1.4 ulp) made the W1 kernel 1.7 times
slower: compute-bound instead of at the memory bandwidth. Both keep IEEE edges (inf, NaN,
-0, overflow, gradual underflow); tested in ``tests/exact/fuse/test_cpu_math.py``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic

__all__ = [
    "exp", "log", "log1p", "expm1", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sqrt", "erf", "pow", "fabs", "atan2", "hypot",
    "isinf", "isfinite", "floor", "ceil", "rint", "fmax", "fmin", "exp_f32", "tanh_f32",
    "f32", "f64", "i32", "i64", "b1",
]  # fmt: skip

from math import (  # noqa: E402 - the names the generated code uses
    acos,
    acosh,
    asin,
    asinh,
    atan,
    atan2,
    atanh,
    cos,
    cosh,
    erf,
    exp,
    expm1,
    fabs,
    hypot,
    isfinite,
    isinf,
    log,
    log1p,
    log2,
    log10,
    pow,
    sin,
    sinh,
    sqrt,
    tan,
    tanh,
)

f32, f64, i32, i64, b1 = numba.float32, numba.float64, numba.int32, numba.int64, numba.boolean
floor, ceil, rint, fmax, fmin = np.floor, np.ceil, np.rint, np.fmax, np.fmin


@intrinsic
def _float32_from_bits(typingctx: Any, bits: Any) -> Any:
    """The float32 whose IEEE bits are the int32 ``bits`` (an LLVM bitcast)."""
    signature = types.float32(types.int32)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return signature, codegen


_LOG2E = f32(1.44269504088896341)
_LN2_HI = f32(0.693359375)
_LN2_LO = f32(-2.12194440e-4)
_ROUND = f32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds to an integer
_EXP_MAX = f32(88.72283172607421875)  # the largest float32 whose exp is finite
_EXP_MIN = f32(-103.97208404541015625)  # below: exp rounds to 0 in float32


@njit(error_model="numpy")
def exp_f32(x: float) -> float:
    """``exp(x)`` in float32 without branches: ``2^n exp(r)``, ``|r| <= ln(2)/2``."""
    xc = min(max(x, _EXP_MIN), _EXP_MAX)
    n = (xc * _LOG2E + _ROUND) - _ROUND
    r = (xc - n * _LN2_HI) - n * _LN2_LO
    p = f32(1.9875691500e-4)
    p = p * r + f32(1.3981999507e-3)
    p = p * r + f32(8.3334519073e-3)
    p = p * r + f32(4.1665795894e-2)
    p = p * r + f32(1.6666665459e-1)
    p = p * r + f32(5.0000001201e-1)
    p = p * r * r + r + f32(1.0)
    k = i32(n)
    half = k >> i32(1)  # 2^n as two factors, so that 2^-150 (subnormal results) is reachable
    y = (
        p
        * _float32_from_bits((half + i32(127)) << i32(23))
        * _float32_from_bits((k - half + i32(127)) << i32(23))
    )
    y = y if x <= _EXP_MAX else f32(np.inf)
    y = y if x >= _EXP_MIN else f32(0.0)
    return y if x == x else x


@njit(error_model="numpy")
def tanh_f32(x: float) -> float:
    """``tanh(x)`` in float32 without branches or calls: ``x P(x^2) / Q(x^2)`` on
    ``|x| < 8.7``, degrees 4 and 4, fitted to relative error 2e-8 on [0, 9] (iterated weighted
    least squares); beyond, ``tanh(x)`` rounds to +-1 in float32."""
    a = abs(x)
    xc = min(max(x, f32(-9.0)), f32(9.0))
    z = xc * xc
    p = (((f32(1.3350128932548753e-08) * z + f32(2.0605597308211718e-05)) * z + f32(3.495368891696448e-03)) * z
         + f32(0.13380839968229605)) * z + f32(0.9999999812340988)  # fmt: skip
    q = (((f32(7.774637696001466e-07) * z + f32(3.285281006461039e-04)) * z + f32(2.587614340490756e-02)) * z
         + f32(0.46714155990720596)) * z + f32(1.0)  # fmt: skip
    y = xc * p / q
    y = y if a < f32(8.7) else (f32(1.0) if x > f32(0.0) else f32(-1.0))
    return y if x == x else x  # NaN stays NaN
