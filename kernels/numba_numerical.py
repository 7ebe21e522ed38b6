"""Numerical Jacobian columns, in numba-CUDA.

Two families:

- **Columns of a one-sample device function** ``f(x, out)`` (x: 1-D of n, out: 1-D of m),
  one thread per (sample, column), no loop over the batch on the host:
  ``complex_step_columns_kernel`` and ``central_columns_kernel`` (and
  ``evaluate_complex_kernel``, ``f`` on real points, which checks complex safety). Each thread keeps its
  perturbed copy of the sample and the outputs in thread-local arrays of ``n`` and ``m``
  entries (sizes fixed at compile time, so the kernel is cached per ``(n, m)``; large
  ``n + m`` lives in local memory, which is the nature of per-thread scratch). The column
  index varies fastest across threads: the warp writes ``jac[b, i, j]`` for consecutive
  ``j``, which is contiguous in the ``(B, m, n)`` output, and reads the same sample row.
- **Stacked perturbations of a batched black box** for ``difference_columns``:
  ``perturb_*_kernel`` writes every perturbed copy of the batch in one pass, the caller
  evaluates the black box once on the stack, and ``*_quotient_kernel`` turns its outputs
  into columns ``(B, m, k)``.

Steps are relative: ``h = step * max(1, |x_j|)``. Central differences divide by the step
actually taken, ``(x + h) - (x - h)``, which removes the representation error of ``x + h``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from batchjac.kernels.numba_launch import per_device, unflatten_3d
from numba import cuda
from numpy.typing import DTypeLike


def complex_type(dtype: DTypeLike) -> Any:
    """The narrowest complex numba type holding ``dtype``."""
    return numba.complex64 if np.dtype(dtype).itemsize <= 4 else numba.complex128


@per_device
def complex_step_columns_kernel(dtype: DTypeLike, f: Callable[..., Any], n: int, m: int) -> Any:
    """``kernel[grid](x, step, jac)``: x ``(B, n)``, step a scalar, jac ``(B, m, n)``.

    ``jac[b, i, j] = Im f(x_b + i h e_j)_i / h``; ``f`` must be complex-safe.
    """
    C = complex_type(dtype)
    T = numba.from_dtype(dtype)

    def complex_step_columns(x, step, jac):
        batch = x.shape[0]
        xs = cuda.local.array(n, C)
        ys = cuda.local.array(m, C)
        unit = C(1j)
        for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
            b = t // n
            j = t % n
            for q in range(n):
                xs[q] = x[b, q]
            h = step * max(T(1), abs(x[b, j]))
            xs[j] = x[b, j] + unit * h
            for i in range(m):  # outputs f does not write are 0, not leftover memory
                ys[i] = 0
            f(xs, ys)
            for i in range(m):
                jac[b, i, j] = ys[i].imag / h

    return cuda.jit(complex_step_columns)


@per_device
def central_columns_kernel(dtype: DTypeLike, f: Callable[..., Any], n: int, m: int) -> Any:
    """``kernel[grid](x, step, jac)``: x ``(B, n)``, step a scalar, jac ``(B, m, n)``.

    ``jac[b, i, j] = (f(x_b + h e_j)_i - f(x_b - h e_j)_i) / (2 h)``, with the steps taken.
    """
    T = numba.from_dtype(dtype)

    def central_columns(x, step, jac):
        batch = x.shape[0]
        xs = cuda.local.array(n, T)
        y_plus = cuda.local.array(m, T)
        y_minus = cuda.local.array(m, T)
        for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
            b = t // n
            j = t % n
            for q in range(n):
                xs[q] = x[b, q]
            xj = x[b, j]
            h = step * max(T(1), abs(xj))
            xs[j] = xj + h
            width = xs[j]
            for i in range(m):  # outputs f does not write are 0, not leftover memory
                y_plus[i] = 0
                y_minus[i] = 0
            f(xs, y_plus)
            xs[j] = xj - h
            width -= xs[j]
            f(xs, y_minus)
            for i in range(m):
                jac[b, i, j] = (y_plus[i] - y_minus[i]) / width

    return cuda.jit(central_columns)


@per_device
def evaluate_complex_kernel(dtype: DTypeLike, f: Callable[..., Any], n: int, m: int) -> Any:
    """``kernel[grid](points, out)``: points ``(N, n)`` real, out ``(N, m)`` real, with
    ``out[r] = Re f(points[r] + 0i)``: ``f`` as compiled for complex-step, evaluated on real
    points (the central differences that check a complex-step Jacobian). Unwritten outputs
    are 0."""
    C = complex_type(dtype)

    def evaluate_complex(points, out):
        rows = points.shape[0]
        xs = cuda.local.array(n, C)
        ys = cuda.local.array(m, C)
        for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
            for q in range(n):
                xs[q] = points[r, q]
            for i in range(m):
                ys[i] = 0
            f(xs, ys)
            for i in range(m):
                out[r, i] = ys[i].real

    return cuda.jit(evaluate_complex)


@per_device
def perturb_complex_kernel(dtype: DTypeLike) -> Any:
    """``kernel[grid](x, columns, steps, stacked)``: stacked ``(k, B, n)`` complex, with
    ``stacked[c, b] = x[b] + i steps[b, c] e_columns[c]``; x ``(B, n)``, steps ``(B, k)``."""
    C = complex_type(dtype)

    def perturb_complex(x, columns, steps, stacked):
        k, batch, n = stacked.shape
        unit = C(1j)
        for t in range(cuda.grid(1), k * batch * n, cuda.gridsize(1)):
            c, b, j = unflatten_3d(t, batch, n)
            stacked[c, b, j] = x[b, j] + unit * steps[b, c] if j == columns[c] else x[b, j]

    return cuda.jit(perturb_complex)


@per_device
def perturb_central_kernel() -> Any:
    """``kernel[grid](x, columns, steps, stacked)``: stacked ``(2, k, B, n)`` with
    ``stacked[0, c, b] = x[b] + steps[b, c] e_columns[c]`` and ``stacked[1, c, b]`` its minus."""

    def perturb_central(x, columns, steps, stacked):
        _, k, batch, n = stacked.shape
        for t in range(cuda.grid(1), 2 * k * batch * n, cuda.gridsize(1)):
            r, b, j = unflatten_3d(t, batch, n)
            side = r // k
            c = r % k
            h = steps[b, c] if j == columns[c] else 0
            stacked[side, c, b, j] = x[b, j] - h if side else x[b, j] + h

    return cuda.jit(perturb_central)


@per_device
def perturb_forward_kernel() -> Any:
    """``kernel[grid](x, columns, steps, stacked)``: stacked ``(k + 1, B, n)`` with
    ``stacked[0] = x`` and ``stacked[1 + c, b] = x[b] + steps[b, c] e_columns[c]``."""

    def perturb_forward(x, columns, steps, stacked):
        slices, batch, n = stacked.shape
        for t in range(cuda.grid(1), slices * batch * n, cuda.gridsize(1)):
            s, b, j = unflatten_3d(t, batch, n)
            perturbed = s > 0 and j == columns[s - 1]
            stacked[s, b, j] = x[b, j] + steps[b, s - 1] if perturbed else x[b, j]

    return cuda.jit(perturb_forward)


@cuda.jit(device=True, inline=True)
def _column_index(t, m, k):
    c = t % k
    r = t // k
    return r // m, r % m, c


@per_device
def complex_step_quotient_kernel() -> Any:
    """``out[b, i, c] = Im y[c, b, i] / steps[b, c]``: ``kernel[grid](y, steps, out)``, out ``(B, m, k)``."""

    def complex_step_quotient(y, steps, out):
        batch, m, k = out.shape
        for t in range(cuda.grid(1), batch * m * k, cuda.gridsize(1)):
            b, i, c = _column_index(t, m, k)
            out[b, i, c] = y[c, b, i].imag / steps[b, c]

    return cuda.jit(complex_step_quotient)


@per_device
def central_quotient_kernel() -> Any:
    """``out[b, i, c] = (y[0, c, b, i] - y[1, c, b, i]) / (2 steps[b, c])``:
    ``kernel[grid](y, steps, out)``."""

    def central_quotient(y, steps, out):
        batch, m, k = out.shape
        for t in range(cuda.grid(1), batch * m * k, cuda.gridsize(1)):
            b, i, c = _column_index(t, m, k)
            out[b, i, c] = (y[0, c, b, i] - y[1, c, b, i]) / (2 * steps[b, c])

    return cuda.jit(central_quotient)


@per_device
def forward_quotient_kernel() -> Any:
    """``out[b, i, c] = (y[1 + c, b, i] - y[0, b, i]) / steps[b, c]``: ``kernel[grid](y, steps, out)``."""

    def forward_quotient(y, steps, out):
        batch, m, k = out.shape
        for t in range(cuda.grid(1), batch * m * k, cuda.gridsize(1)):
            b, i, c = _column_index(t, m, k)
            out[b, i, c] = (y[1 + c, b, i] - y[0, b, i]) / steps[b, c]

    return cuda.jit(forward_quotient)
