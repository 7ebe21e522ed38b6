"""Batched Jacobians of one-sample numba-CUDA device functions, assembled on the GPU.

:func:`device_jacobian` is for functions written per sample as numba device functions;
:func:`batchjac.jacobian` serves batched NumPy/CuPy code.
"""

from __future__ import annotations

import operator

import numpy as np

from batchjac.backends.dispatch import check_available

METHODS = ("complex-step", "central")


def default_step(method: str, dtype) -> float:
    """The relative step: tiny for complex-step (no cancellation), ``eps^(1/3)`` for central."""
    if method == "complex-step":
        return 1e-20
    return float(np.finfo(dtype).eps) ** (1 / 3)


def device_jacobian(f, x, out_size, method="complex-step", step=None):
    """Batched Jacobian ``(B, out_size, n)`` of a per-sample numba device function ``f``.

    ``f(x, out)`` is a numba CUDA device function (``@numba.cuda.jit(device=True)``) that
    reads one sample ``x`` (1-D, ``n`` entries) and writes its ``out_size`` outputs into
    ``out`` (1-D). ``x`` is the batch ``(B, n)``, float32 or float64, on the GPU: a CuPy
    array or anything with ``__cuda_array_interface__`` (taken without copying; under the
    CUDA simulator, a numba device array or a NumPy array).

    One GPU thread computes one column ``J[b, :, j]`` with its own copy of the sample, so
    the whole batch is one kernel launch. ``method="complex-step"`` (default) evaluates
    ``f`` on complex input, ``J[b, :, j] = Im f(x_b + i h e_j) / h``, exact to rounding;
    ``f`` must then be complex-safe (no ``abs``, comparisons or real casts on the path).
    ``method="central"`` uses ``(f(x + h e_j) - f(x - h e_j)) / 2h`` on real input, for
    any ``f``. ``step`` is relative, ``h = step * max(1, |x_bj|)``; default ``1e-20``
    (complex-step) or ``eps^(1/3)`` of the dtype (central).

    Returns a CuPy array where CuPy is usable, else a numba device array; same dtype as ``x``.
    ``n`` and ``out_size`` are compile-time sizes: each ``(f, dtype, n, out_size)`` compiles
    once per device.

    >>> import math, numpy as np
    >>> from numba import cuda
    >>> from batchjac.numerical.device_jacobian import device_jacobian
    >>> @cuda.jit(device=True)
    ... def f(x, out):                  # R^2 -> R^2: [x0 x1, sin(x0)]
    ...     out[0] = x[0] * x[1]
    ...     out[1] = math.sin(x[0])
    >>> x = cuda.to_device(np.array([[1.0, 2.0], [0.0, 3.0]]))   # doctest: +SKIP
    >>> device_jacobian(f, x, 2).copy_to_host()                  # doctest: +SKIP
    array([[[2.        , 1.        ],
            [0.54030231, 0.        ]],
    <BLANKLINE>
           [[3.        , 0.        ],
            [1.        , 0.        ]]])
    """
    if method not in METHODS:
        raise ValueError(f"method: expected 'complex-step' or 'central', got {method!r}")
    check_available("numba")
    # numba-CUDA loads here, on first use, not when batchjac is imported.
    from batchjac.backends.numba_ops import device_view, empty
    from batchjac.kernels.numba_launch import grid_1d
    from batchjac.kernels.numba_numerical import central_columns_kernel, complex_step_columns_kernel

    out_size = operator.index(out_size)
    if out_size < 0:
        raise ValueError(f"out_size: expected a non-negative integer, got {out_size}")
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"x: expected a batch of vectors (B, n), got shape {getattr(x, 'shape', None)}")
    dtype = np.dtype(x.dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"x: expected float32 or float64 data, got dtype {dtype}")
    batch, n = x.shape
    jac = empty((batch, out_size, n), dtype)
    if jac.size == 0:  # thread-local arrays of zero entries do not compile
        return jac
    h = dtype.type(default_step(method, dtype) if step is None else step)
    make_kernel = complex_step_columns_kernel if method == "complex-step" else central_columns_kernel
    kernel = make_kernel(dtype, f, n, out_size)
    blocks, threads = grid_1d(batch * n)
    kernel[blocks, threads](device_view(x, "x"), h, device_view(jac))
    return jac
