"""Matrix products of batched and shared matrices, in numba-CUDA.

- ``tiled_matmul_kernel``: ``out[b] = a[(b)] @ b_[(b)]``, a square-tile shared-memory GEMM
  (each operand tile is read from global memory once per block and reused ``tile`` times);
  the numba backend uses it only where CuPy (cuBLAS) is absent. Shared operands ``(m, k)``
  or ``(k, n)`` serve every sample, which is the flattened ``(m, k) @ (k, B n)`` product
  of ``shared_matmul`` without materialising the transpose.
- ``matvec_kernel`` (JVP) and ``vecmat_kernel`` (VJP): one thread per output entry,
  accumulating in the array's type. In ``vecmat`` the output column varies fastest, so a
  warp reads a row of ``a`` coalesced; in ``matvec`` each thread walks one row of ``a``
  (strided across the warp), which suits the short rows of Jacobians kept in L1/L2.
"""

from __future__ import annotations

from typing import Any

import numba
from batchjac.kernels.numba_launch import gemm_tile, per_device
from batchjac.kernels.numba_scaling import matrix_entry
from numba import cuda
from numpy.typing import DTypeLike


@per_device
def tiled_matmul_kernel(dtype: DTypeLike, a_shared: bool, b_shared: bool) -> Any:
    """``kernel[grid_tiles, (tile, tile)](a, b, out)``; out ``(B, m, n)`` of ``dtype``.

    a: ``(B, m, k)`` or shared ``(m, k)``; b: ``(B, k, n)`` or shared ``(k, n)``. The grid is
    (column tiles, row tiles, samples), each axis walked grid-stride; every thread of a
    block runs the same loop trips, so the barriers are reached uniformly.
    """
    T = numba.from_dtype(dtype)
    tile = gemm_tile()
    entry_a = matrix_entry(a_shared)
    entry_b = matrix_entry(b_shared)

    def tiled_matmul(a, b, out):
        batch, m, n = out.shape
        depth = a.shape[a.ndim - 1]
        a_tile = cuda.shared.array((tile, tile), T)
        b_tile = cuda.shared.array((tile, tile), T)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        for s in range(cuda.blockIdx.z, batch, cuda.gridDim.z):
            for row0 in range(cuda.blockIdx.y * tile, m, cuda.gridDim.y * tile):
                for col0 in range(cuda.blockIdx.x * tile, n, cuda.gridDim.x * tile):
                    i = row0 + ty
                    j = col0 + tx
                    acc = T(0)
                    for k0 in range(0, depth, tile):
                        a_tile[ty, tx] = entry_a(a, s, i, k0 + tx) if i < m and k0 + tx < depth else T(0)
                        b_tile[ty, tx] = entry_b(b, s, k0 + ty, j) if k0 + ty < depth and j < n else T(0)
                        cuda.syncthreads()
                        for q in range(tile):
                            acc += a_tile[ty, q] * b_tile[q, tx]
                        cuda.syncthreads()
                    if i < m and j < n:
                        out[s, i, j] = acc

    return cuda.jit(tiled_matmul)


@per_device
def matvec_kernel(dtype: DTypeLike, shared: bool) -> Any:
    """``out[b, i] = sum_j a[(b,) i, j] v[b, j]``: ``kernel[grid](a, v, out)``, out ``(B, m)``."""
    T = numba.from_dtype(dtype)
    entry = matrix_entry(shared)

    def matvec(a, v, out):
        batch, m = out.shape
        n = v.shape[1]
        for t in range(cuda.grid(1), batch * m, cuda.gridsize(1)):
            b = t // m
            i = t % m
            acc = T(0)
            for j in range(n):
                acc += entry(a, b, i, j) * v[b, j]
            out[b, i] = acc

    return cuda.jit(matvec)


@per_device
def vecmat_kernel(dtype: DTypeLike, shared: bool) -> Any:
    """``out[b, j] = sum_i u[b, i] a[(b,) i, j]``: ``kernel[grid](u, a, out)``, out ``(B, n)``."""
    T = numba.from_dtype(dtype)
    entry = matrix_entry(shared)

    def vecmat(u, a, out):
        batch, n = out.shape
        m = u.shape[1]
        for t in range(cuda.grid(1), batch * n, cuda.gridsize(1)):
            b = t // n
            j = t % n
            acc = T(0)
            for i in range(m):
                acc += u[b, i] * entry(a, b, i, j)
            out[b, j] = acc

    return cuda.jit(vecmat)
