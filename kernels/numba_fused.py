"""The numba-CUDA side of the fused kernels (``batchjac.exact.fuse``): what the names in
generated code mean on the GPU, the decorators that compile it, and the launch.

The fused compiler writes one Python module per program; its per-sample body is the same
source on the CPU and the GPU, and only the names it uses are bound differently. On a GPU
they are the ``math`` functions (CUDA's libdevice) and libdevice's ``floor``, ``ceil``,
``rint``, ``fmax`` and ``fmin`` (C's meaning: a float result; the operand that is not NaN);
the casts ``f32``, ``f64``, ... are numba's types. Under the CUDA simulator every thread is
Python running on NumPy scalars: there the names are NumPy's functions, because
``math.log(0.0)`` raises where C (and CUDA) give ``-inf``, and the casts are NumPy's.

One thread computes one sample (or one element, for element-wise programs), in a
grid-stride loop sized by :func:`batchjac.kernels.numba_launch.grid_1d`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np
from batchjac.kernels.numba_launch import grid_1d, simulated
from numba import cuda

_MATH_NAMES = (
    "exp", "log", "log1p", "expm1", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sqrt", "erf", "pow", "fabs", "atan2", "hypot",
    "isinf", "isfinite",
)  # fmt: skip
_NUMPY_NAMES = {
    "pow": "power", "fabs": "abs", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
    "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "atan2": "arctan2",
}  # fmt: skip


def scalar_namespace() -> dict:
    """The names of generated device code, bound for the GPU (or for the simulator)."""
    if simulated():
        names = {name: getattr(np, _NUMPY_NAMES.get(name, name), None) for name in _MATH_NAMES}
        names.update(erf=math.erf, floor=np.floor, ceil=np.ceil, rint=np.rint, fmax=np.fmax, fmin=np.fmin)
        casts = dict(f32=np.float32, f64=np.float64, i32=np.int32, i64=np.int64, b1=np.bool_)
    else:
        from numba.cuda import libdevice

        names = {name: getattr(math, name) for name in _MATH_NAMES}
        names.update(
            floor=libdevice.floor,
            ceil=libdevice.ceil,
            rint=libdevice.rint,
            fmax=libdevice.fmax,
            fmin=libdevice.fmin,
        )
        casts = dict(f32=numba.float32, f64=numba.float64, i32=numba.int32, i64=numba.int64, b1=numba.boolean)
    # the float32 names of the CPU's vectorisable functions: CUDA's own are fast already
    return {**names, **casts, "exp_f32": names["exp"], "tanh_f32": names["tanh"]}


def body_jit(function: Callable[..., Any]) -> Any:
    """Compile a generated per-sample (or per-element) body as a device function."""
    return cuda.jit(device=True)(function)


def kernel_jit(function: Callable[..., Any]) -> Any:
    """Compile a generated kernel (cached on disk beside its module, off the simulator)."""
    return cuda.jit(function) if simulated() else cuda.jit(cache=True)(function)


def launch(kernel: Any, count: int, args: Sequence[Any], stream: int | None = None) -> None:
    """Run ``kernel`` over ``count`` samples (or elements): a grid-stride loop over them.

    ``args`` are device arrays (numba's, CuPy's, anything with ``__cuda_array_interface__``)
    or, under the simulator, NumPy arrays; ``stream`` is the CUDA stream pointer the inputs
    live on (CuPy's current stream), None for the default stream.
    """
    if count == 0:
        return
    blocks, threads = grid_1d(count)
    if stream is not None and not simulated():
        kernel[blocks, threads, cuda.external_stream(stream)](*args)
        return
    kernel[blocks, threads](*args)
