"""Sparse matrices with a CSR pattern shared by the batch, in numba-CUDA.

- ``csr_matvec_kernel``: ``out[b, c, i] = sum(values[(b,) p] * x[b, c, indices[p]] for p in
  row i)``, one thread per output entry walking its row of the pattern (a gather: no atomic
  adds, so results are the same from run to run). The JVP of a ``Sparse`` (``c`` has one
  value), its products with dense matrices (``c`` the other matrix's columns) and, on the
  pattern transposed once by a sort, its VJP. The output row ``i`` varies fastest, so the
  threads of a warp read neighbouring rows of the pattern and ``x`` of one ``(b, c)``.

Values are per sample ``(B, nnz)`` or shared ``(nnz,)``; ``value_entry`` picks the indexing
at compile time.
"""

from __future__ import annotations

from typing import Any

import numba
from batchjac.kernels.numba_launch import per_device, unflatten_3d
from numba import cuda
from numpy.typing import DTypeLike


@cuda.jit(device=True, inline=True)
def _per_sample_value(values, b, p):
    return values[b, p]


@cuda.jit(device=True, inline=True)
def _shared_value(values, b, p):
    return values[p]


def value_entry(shared: bool) -> Any:
    """The device function ``value(values, b, p)``: ``values[p]`` if shared, else ``values[b, p]``."""
    return _shared_value if shared else _per_sample_value


@per_device
def csr_matvec_kernel(dtype: DTypeLike, shared: bool) -> Any:
    """``kernel[grid](indptr, indices, values, x, out)``: x ``(B, k, n)``, out ``(B, k, m)`` of
    ``dtype``, accumulated in ``dtype``."""
    T = numba.from_dtype(dtype)
    value = value_entry(shared)

    def csr_matvec(indptr, indices, values, x, out):
        batch, k, m = out.shape
        for t in range(cuda.grid(1), batch * k * m, cuda.gridsize(1)):
            b, c, i = unflatten_3d(t, k, m)
            acc = T(0)
            for p in range(indptr[i], indptr[i + 1]):
                acc += T(value(values, b, p)) * T(x[b, c, indices[p]])
            out[b, c, i] = acc

    return cuda.jit(csr_matvec)
