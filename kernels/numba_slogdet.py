"""Batched ``(sign, log|det|)`` of small square matrices by LU with partial pivoting, in numba-CUDA.

One block per sample (grid-stride over samples): the block copies its ``(n, n)`` matrix
into shared memory, thread 0 picks each pivot (a serial scan of at most ``MAX_N``
entries), the block swaps the pivot row in and eliminates the trailing submatrix in
parallel, one thread per entry. ``log|det|`` is the sum of ``log|pivot|``, which neither
overflows nor underflows where the product of pivots would; the sign counts the row
swaps and negative pivots. A zero pivot (an exactly singular matrix) gives
``(0, -inf)``, as ``numpy.linalg.slogdet`` does.

Size limit: ``n <= MAX_N`` (32): the matrix lives in a fixed ``MAX_N x (MAX_N + 1)``
shared array (8.4 KB in float64; the extra column puts a column's entries in distinct
banks). Larger matrices are the caller's to route elsewhere (cuSOLVER through CuPy).
"""

from __future__ import annotations

import math
from typing import Any

import numba
from batchjac.kernels.numba_launch import per_device
from numba import cuda
from numpy.typing import DTypeLike

MAX_N = 32
_ROW = MAX_N + 1  # a padded row: shared-array shapes must be constants, not expressions


@per_device
def lu_slogdet_kernel(dtype: DTypeLike) -> Any:
    """``kernel[blocks_per_sample](a, sign, logabsdet)``: a ``(B, n, n)`` with ``n <= MAX_N``;
    sign and logabsdet ``(B,)`` of ``dtype``."""
    T = numba.from_dtype(dtype)

    def lu_slogdet(a, sign, logabsdet):
        batch, n, _ = a.shape
        lu = cuda.shared.array((MAX_N, _ROW), T)
        acc = cuda.shared.array(2, T)  # running sign, running log|det|
        pivot_row = cuda.shared.array(1, numba.int32)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        for s in range(cuda.blockIdx.x, batch, cuda.gridDim.x):
            for t in range(tid, n * n, threads):
                lu[t // n, t % n] = a[s, t // n, t % n]
            if tid == 0:
                acc[0] = 1
                acc[1] = 0
            cuda.syncthreads()
            for k in range(n):
                if tid == 0:
                    p = k
                    best = abs(lu[k, k])
                    for r in range(k + 1, n):
                        if abs(lu[r, k]) > best:
                            best = abs(lu[r, k])
                            p = r
                    pivot_row[0] = p
                    if best == 0:
                        acc[0] = 0
                        acc[1] = -math.inf
                    else:
                        pivot = lu[p, k]
                        if (p != k) != (pivot < 0):
                            acc[0] = -acc[0]
                        acc[1] += math.log(abs(pivot))
                cuda.syncthreads()
                if acc[0] == 0:  # read by every thread after the barrier: a uniform exit
                    break
                p = pivot_row[0]
                if p != k:
                    for c in range(tid, n, threads):
                        lu[k, c], lu[p, c] = lu[p, c], lu[k, c]
                    cuda.syncthreads()
                width = n - k - 1
                for t in range(tid, width * width, threads):
                    i = k + 1 + t // width
                    j = k + 1 + t % width
                    lu[i, j] -= lu[i, k] / lu[k, k] * lu[k, j]
                cuda.syncthreads()
            if tid == 0:
                sign[s] = acc[0]
                logabsdet[s] = acc[1]
            cuda.syncthreads()  # the next sample overwrites lu and acc

    return cuda.jit(lu_slogdet)
