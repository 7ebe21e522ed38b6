"""The scalar functions of the fused CPU kernels: what the names of a rule's scalar form mean
in the generated code (``exp``, ``fmax``, ``rint``, ...), for numba's ``njit``.

Generated CPU modules import everything from here. Most names are the ``math`` functions
(numba compiles them to the C library's); the rest keep C's meaning where Python's differs:
``floor``, ``ceil`` and ``rint`` return floats (``math.floor`` returns an int), ``fmax`` and
``fmin`` return the operand that is not NaN.

``exp_f32`` and ``tanh_f32`` are float32 ``exp`` and ``tanh`` written without calls or
branches, so that LLVM vectorises a loop that uses them (a C library call per element
stops it, and glibc's ``tanhf`` alone costs ~20 ns): the element-wise kernels of W1 run at
the memory bandwidth with them. They are Cephes' ``expf`` and ``tanhf`` (Cody-Waite range
reduction, the same minimax polynomials), within 1 ulp and 1.4 ulp of the correctly
rounded result (NumPy's own float32 SIMD functions: 1.4 ulp), with IEEE edges (inf, NaN,
overflow, gradual underflow); tested in ``tests/exact/fuse/test_cpu_math.py``.
"""

from __future__ import annotations

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
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (an LLVM bitcast)."""
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return signature, codegen


_LOG2E = f32(1.44269504088896341)
_LN2_HI = f32(0.693359375)
_LN2_LO = f32(-2.12194440e-4)
_ROUND = f32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds to an integer
_EXP_MAX = f32(88.72283172607421875)  # the largest float32 whose exp is finite
_EXP_MIN = f32(-103.97208404541015625)  # below: exp rounds to 0 in float32


@njit(error_model="numpy")
def exp_f32(x):
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
def tanh_f32(x):
    """``tanh(x)`` in float32 without branches: an odd polynomial below 0.625, else
    ``1 - 2 / (exp(2|x|) + 1)`` with the sign of ``x``."""
    a = abs(x)
    z = x * x
    small = (
        (
            ((f32(-5.70498872745e-3) * z + f32(2.06390887954e-2)) * z - f32(5.37397155531e-2)) * z
            + f32(1.33314422036e-1)
        )
        * z
        - f32(3.33332819422e-1)
    ) * z * x + x
    e = exp_f32(f32(2.0) * min(a, f32(20.0)))
    large = f32(1.0) - f32(2.0) / (e + f32(1.0))
    large = large if x >= f32(0.0) else -large
    y = small if a < f32(0.625) else large
    return y if (x == x and x != f32(0.0)) else x  # NaN stays NaN; tanh(-0) = -0
