"""The numba-CUDA ``csr_matvec`` kernel (``kernels/numba_sparse.py``) against NumPy.

Runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1 pytest -k numba``) and on a GPU:
the kernel is called through the numba backend on the very same values as the NumPy
backend's ``csr_matvec`` and the float64 dense reference (a loop over the CSR entries), for
per-sample and shared values, vectors and matrices, float32 and float64, a pattern with an
empty row, a repeated position and a row longer than the simulator's block. Then a
``Sparse`` Jacobian's JVP and VJP through the numba backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

from batchjac.backends import xp_ops
from batchjac.backends.dispatch import backend_problem

pytestmark = [
    pytest.mark.numba,
    pytest.mark.skipif(
        backend_problem("numba") is not None, reason=f"numba backend unavailable: {backend_problem('numba')}"
    ),
]

if backend_problem("numba") is None:
    from numba import cuda

    from batchjac.backends import numba_ops

B = 3
# (5, 7) pattern: row 1 empty, row 2 repeats column 0, row 4 has 9 entries (more than a block)
INDPTR = np.array([0, 2, 2, 5, 6, 15])
INDICES = np.array([1, 4, 0, 3, 0, 5, 0, 1, 2, 3, 4, 5, 6, 6, 2])


def on_gpu(a):
    cp = numba_ops.cupy_or_none()
    return cp.asarray(a) if cp is not None else cuda.to_device(np.ascontiguousarray(a))


def to_host(a):
    return a.get() if hasattr(a, "get") else a.copy_to_host()


def dense_of(values):
    values = np.broadcast_to(values.astype(np.float64), (B, len(INDICES)))
    out = np.zeros((B, 5, 7))
    rows = np.repeat(np.arange(5), np.diff(INDPTR))
    for p in range(len(INDICES)):
        out[:, rows[p], INDICES[p]] += values[:, p]
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shared", [False, True], ids=["per_sample", "shared"])
@pytest.mark.parametrize("columns", [None, 3], ids=["vector", "matrix"])
def test_csr_matvec_kernel_matches_numpy(dtype, shared, columns):
    rng = np.random.default_rng(7)
    values = rng.standard_normal(len(INDICES) if shared else (B, len(INDICES))).astype(dtype)
    x = rng.standard_normal((B, 7) if columns is None else (B, columns, 7)).astype(dtype)
    got = to_host(numba_ops.csr_matvec(on_gpu(INDPTR), on_gpu(INDICES), on_gpu(values), on_gpu(x)))
    assert got.dtype == dtype
    expected = np.einsum("bij,b...j->b...i", dense_of(values), x.astype(np.float64))
    assert_close(got, expected)
    assert_close(got, xp_ops.csr_matvec(INDPTR, INDICES, values, x).astype(np.float64))


def test_csr_matvec_kernel_on_an_empty_pattern_and_batch():
    empty = numba_ops.csr_matvec(on_gpu(np.zeros(4, np.int64)), on_gpu(np.zeros(0, np.int64)),
                                 on_gpu(np.zeros((2, 0))), on_gpu(np.ones((2, 5))))  # fmt: skip
    assert to_host(empty).tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    none = numba_ops.csr_matvec(on_gpu(INDPTR), on_gpu(INDICES), on_gpu(np.ones(len(INDICES))),
                                on_gpu(np.ones((0, 7))))  # fmt: skip
    assert to_host(none).shape == (0, 5)


@pytest.mark.gpu
def test_sparse_jacobian_jvp_and_vjp_on_the_numba_backend(cp):
    import batchjac as bj

    rng = np.random.default_rng(8)
    values = rng.standard_normal((B, len(INDICES)))
    S = bj.Sparse(cp.asarray(INDPTR), cp.asarray(INDICES), cp.asarray(values), in_size=7)
    v, u = rng.standard_normal((B, 7)), rng.standard_normal((B, 5))
    with bj.use_backend("numba"):
        assert_close(S.jvp(cp.asarray(v)), np.einsum("bij,bj->bi", dense_of(values), v))
        assert_close(S.vjp(cp.asarray(u)), np.einsum("bi,bij->bj", u, dense_of(values)))
