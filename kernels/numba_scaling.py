"""Diagonal scalings and diagonal placement of batched matrices, in numba-CUDA.

Each kernel writes a ``(B, m, n)`` output once, with one thread per output entry and the
flat index ``t = (b * m + i) * n + j``: the column ``j`` varies fastest across threads, so
the writes and the reads of the matrix factor are coalesced. The matrix factor is batched
``(B, m, n)`` or shared ``(m, n)`` (the same for every sample); ``matrix_entry`` picks the
indexing at compile time. numba specializes each kernel on its arguments' dtypes and
layouts (strided views are read in place), so the cache is keyed per device and layout.
"""

from __future__ import annotations

from typing import Any

from batchjac.kernels.numba_launch import per_device, unflatten_3d
from numba import cuda


@cuda.jit(device=True, inline=True)
def _batched_entry(a, b, i, j):
    return a[b, i, j]


@cuda.jit(device=True, inline=True)
def _shared_entry(a, b, i, j):
    return a[i, j]


def matrix_entry(shared: bool) -> Any:
    """The device function ``entry(a, b, i, j)``: ``a[i, j]`` if shared, else ``a[b, i, j]``."""
    return _shared_entry if shared else _batched_entry


@per_device
def scale_rows_kernel(shared: bool) -> Any:
    """``out[b, i, j] = d[b, i] * a[(b,) i, j]``: ``kernel[grid](d, a, out)``."""
    entry = matrix_entry(shared)

    def scale_rows(d, a, out):
        batch, m, n = out.shape
        for t in range(cuda.grid(1), batch * m * n, cuda.gridsize(1)):
            b, i, j = unflatten_3d(t, m, n)
            out[b, i, j] = d[b, i] * entry(a, b, i, j)

    return cuda.jit(scale_rows)


@per_device
def scale_cols_kernel(shared: bool) -> Any:
    """``out[b, i, j] = a[(b,) i, j] * d[b, j]``: ``kernel[grid](a, d, out)``."""
    entry = matrix_entry(shared)

    def scale_cols(a, d, out):
        batch, m, n = out.shape
        for t in range(cuda.grid(1), batch * m * n, cuda.gridsize(1)):
            b, i, j = unflatten_3d(t, m, n)
            out[b, i, j] = entry(a, b, i, j) * d[b, j]

    return cuda.jit(scale_cols)


@per_device
def diag_to_dense_kernel() -> Any:
    """``out[b, i, j] = d[b, i] if i == j else 0``, every entry written once: ``kernel[grid](d, out)``."""

    def diag_to_dense(d, out):
        batch, n, _ = out.shape
        for t in range(cuda.grid(1), batch * n * n, cuda.gridsize(1)):
            b, i, j = unflatten_3d(t, n, n)
            out[b, i, j] = d[b, i] if i == j else 0

    return cuda.jit(diag_to_dense)


@per_device
def add_diagonal_kernel(shared: bool) -> Any:
    """``out[b, i, j] = a[(b,) i, j] + (d[b, i] if i == j)``: ``kernel[grid](a, d, out)``."""
    entry = matrix_entry(shared)

    def add_diagonal(a, d, out):
        batch, n, _ = out.shape
        for t in range(cuda.grid(1), batch * n * n, cuda.gridsize(1)):
            b, i, j = unflatten_3d(t, n, n)
            value = entry(a, b, i, j)
            out[b, i, j] = value + d[b, i] if i == j else value

    return cuda.jit(add_diagonal)
