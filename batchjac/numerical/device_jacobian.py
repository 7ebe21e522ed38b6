"""Batched Jacobians of one-sample numba-CUDA device functions, assembled on the GPU.

:func:`device_jacobian` is for functions written per sample as numba device functions;
:func:`batchjac.jacobian` serves batched NumPy/CuPy code.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import DTypeLike

from batchjac.backends.dispatch import check_available
from batchjac.core.errors import NotComplexSafeError
from batchjac.core.validation import NUMERICAL_METHODS, check_integer, check_method, check_real

# The methods a one-sample device function supports (forward differences are not offered).
DEVICE_METHODS = tuple(m for m in NUMERICAL_METHODS if m != "forward")


def default_step(method: str, dtype: DTypeLike) -> float:
    """The relative step: tiny for complex-step (no cancellation), ``eps^(1/3)`` for central."""
    if method == "complex-step":
        return 1e-20
    return float(np.finfo(dtype).eps) ** (1 / 3)


def device_jacobian(
    f: Callable[..., Any],
    x: Any,
    out_size: int,
    method: str = "complex-step",
    step: float | None = None,
    verify: bool = True,
) -> Any:
    """Batched Jacobian ``(B, out_size, n)`` of a per-sample numba device function ``f``.

    ``f(x, out)`` is a numba CUDA device function (``@numba.cuda.jit(device=True)``) that
    reads one sample ``x`` (1-D, ``n`` entries) and writes its ``out_size`` outputs into
    ``out`` (1-D); outputs it does not write are 0 (their Jacobian rows are 0). ``x`` is
    the batch ``(B, n)``, float32 or float64, on the GPU: a CuPy array or anything with
    ``__cuda_array_interface__`` (taken without copying; under the CUDA simulator, a numba
    device array or a NumPy array).

    One GPU thread computes one column ``J[b, :, j]`` with its own copy of the sample, so
    the whole batch is one kernel launch. ``method="complex-step"`` (default) evaluates
    ``f`` on complex input, ``J[b, :, j] = Im f(x_b + i h e_j) / h``, exact to rounding;
    ``f`` must then be complex-safe: arithmetic, ``cmath`` functions, no ``abs``,
    comparisons or ``math`` functions on the path (``math.sin`` does not take a complex
    number). ``method="central"`` uses ``(f(x + h e_j) - f(x - h e_j)) / 2h`` on real
    input, for any ``f``. ``step`` (a positive number) is relative,
    ``h = step * max(1, |x_bj|)``; default ``1e-20`` (complex-step) or ``eps^(1/3)`` of the
    dtype (central).

    ``verify=True`` (complex-step only) checks the result against central differences of
    the same compiled ``f`` on real points, every sample along random directions, as
    :func:`batchjac.numerical.differences.check_complex_safe` describes (its cost: about 12
    evaluations of ``f`` per sample, beside the ``n`` of the Jacobian), and raises
    :class:`batchjac.NotComplexSafeError` where they disagree; an ``f`` that numba cannot
    compile for complex input raises it too. The check's arithmetic runs on CuPy arrays;
    without CuPy it runs on the host, on copies of ``x``, ``f(x)`` and the Jacobian.

    Returns a CuPy array where CuPy is usable, else a numba device array; same dtype as
    ``x``. ``n`` and ``out_size`` are compile-time sizes: each ``(f, dtype, n, out_size)``
    compiles once per device.

    >>> import cmath, numpy as np
    >>> from numba import cuda
    >>> from batchjac.numerical.device_jacobian import device_jacobian
    >>> @cuda.jit(device=True)
    ... def f(x, out):                  # R^2 -> R^2: [x0 x1, sin(x0)]
    ...     out[0] = x[0] * x[1]
    ...     out[1] = cmath.sin(x[0])    # cmath: complex-safe, unlike math.sin
    >>> x = cuda.to_device(np.array([[1.0, 2.0], [0.0, 3.0]]))   # doctest: +SKIP
    >>> device_jacobian(f, x, 2).copy_to_host()                  # doctest: +SKIP
    array([[[2.        , 1.        ],
            [0.54030231, 0.        ]],
    <BLANKLINE>
           [[3.        , 0.        ],
            [1.        , 0.        ]]])
    """
    method = check_method(method, DEVICE_METHODS)
    out_size = check_integer(out_size, "out_size")
    step = None if step is None else check_real(step, "step", minimum=0.0, strict=True)
    if not isinstance(verify, (bool, np.bool_)):
        raise TypeError(f"verify: expected True or False, got {verify!r}")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(
            f"x: expected a GPU array (B, n) (CuPy, or anything with __cuda_array_interface__), "
            f"got {type(x).__name__}"
        )
    check_available("numba")
    # numba-CUDA loads here, on first use, not when batchjac is imported.
    from batchjac.backends.numba_ops import device_view, empty
    from batchjac.kernels.numba_launch import grid_1d
    from batchjac.kernels.numba_numerical import central_columns_kernel, complex_step_columns_kernel

    if len(x.shape) != 2:
        raise ValueError(f"x: expected a batch of vectors (B, n), got shape {tuple(x.shape)}")
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
    try:
        kernel[blocks, threads](device_view(x, "x"), h, device_view(jac))
    except Exception as err:
        if method == "complex-step" and _is_typing_error(err):
            raise NotComplexSafeError(
                f"f does not compile for complex input ({type(err).__name__}); complex-step needs "
                "complex-safe operations (arithmetic, cmath instead of math); use method='central'"
            ) from err
        raise
    if method == "complex-step" and verify:
        _verify(f, x, jac, out_size)
    return jac


def _is_typing_error(err: Exception) -> bool:
    from numba.core.errors import TypingError

    return isinstance(err, TypingError)


def _verify(f: Callable[..., Any], x: Any, jac: Any, out_size: int) -> None:
    """Raise :class:`NotComplexSafeError` unless the complex-step ``jac`` of ``f`` agrees
    with central differences of the same compiled ``f`` on real points."""
    from numba import cuda

    from batchjac.backends.numba_ops import cupy_or_none, device_view, empty
    from batchjac.kernels.numba_launch import grid_1d
    from batchjac.kernels.numba_numerical import evaluate_complex_kernel
    from batchjac.numerical.differences import check_complex_safe

    cp = cupy_or_none()
    dtype = np.dtype(x.dtype)
    n = x.shape[1]
    kernel = evaluate_complex_kernel(dtype, f, n, out_size)

    def g(points: Any) -> Any:
        """``Re f(points + 0i)``: ``(N, n) -> (N, out_size)``, on the check's arrays."""
        rows = points.shape[0]
        out = empty((rows, out_size), dtype)
        if rows:
            on_device = points if cp is not None else cuda.to_device(np.ascontiguousarray(points))
            blocks, threads = grid_1d(rows)
            kernel[blocks, threads](device_view(on_device, "points"), device_view(out))
        return out if cp is not None else out.copy_to_host()

    if cp is not None:
        x_checked, jac_checked = cp.asarray(x), cp.asarray(jac)
    else:  # no array library on the device: the check runs on host copies
        x_checked = x if isinstance(x, np.ndarray) else x.copy_to_host()
        jac_checked = jac.copy_to_host()
    check_complex_safe(g, x_checked, g(x_checked), jac_checked)
