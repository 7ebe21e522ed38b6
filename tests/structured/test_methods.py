"""Every method of every structured type against NumPy on the dense reference.

``to_dense``, ``T``, ``jvp``, ``vjp``, ``diagonal``, ``slogdet``, scaling by a number and
per sample, ``astype``, and the array-like behaviour (``np.asarray(J)``, ``J[b]``,
``J[i:j]``), for every kind of :mod:`structured_cases`, in float32 and float64, at batch
0, 1 and 5. References: ``np.swapaxes``, ``np.einsum``, ``np.diagonal``,
``np.linalg.slogdet`` of the float64 dense form.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, to_numpy
from structured_cases import KINDS, block_dense, csr_dense, kron_dense, make

import batchjac as bj

DTYPES = (np.float32, np.float64)
BATCHES = (0, 1, 5)
TRANSPOSE_TYPE = {"Gather": "Sparse"}  # the transpose of a gather sums: it is a Sparse
PER_SAMPLE_TYPE = {"Shared": "Dense", "Gather": "Sparse"}  # scaled per sample


@pytest.fixture
def put(backend, on_device):
    with bj.use_backend(backend):
        yield on_device


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_to_dense_transpose_jvp_vjp_diagonal(kind, dtype, batch, rng, put):
    X = make(kind, batch, rng, dtype, put)
    J = X.J
    dense = J.to_dense()
    assert dense.dtype == dtype and dense.shape == (batch, 6, 6)
    assert_close(dense, X.dense)
    name = type(J).__name__
    assert type(J.T).__name__ == TRANSPOSE_TYPE.get(name, name)
    assert_close(J.T.to_dense(), np.swapaxes(X.dense, 1, 2))
    v = rng.standard_normal((batch, 6)).astype(dtype)
    u = rng.standard_normal((batch, 6)).astype(dtype)
    for got, expected in [
        (J.jvp(put(v)), np.einsum("bij,bj->bi", X.dense, v.astype(np.float64))),
        (J.vjp(put(u)), np.einsum("bi,bij->bj", u.astype(np.float64), X.dense)),
        (J.diagonal(), np.diagonal(X.dense, axis1=1, axis2=2)),
    ]:
        assert got.dtype == dtype
        assert_close(got, expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_slogdet_equals_numpy(kind, dtype, batch, rng, put):
    X = make(kind, batch, rng, dtype, put)
    sign, logabsdet = (to_numpy(a) for a in X.J.slogdet())
    ref_sign, ref_logabsdet = np.linalg.slogdet(X.dense)
    assert sign.shape == logabsdet.shape == (batch,)
    np.testing.assert_array_equal(sign, ref_sign)
    singular = ref_sign == 0
    assert np.all(np.isneginf(logabsdet[singular]))
    assert_close(logabsdet[~singular], ref_logabsdet[~singular], rtol=1e-4 if dtype == np.float32 else 1e-10)


SINGULAR_CASES = {
    # (Jacobian, dense reference): batches with singular and negative-determinant samples
    "sparse": lambda: _sparse_with_signs(),
    "kronecker": lambda: (
        bj.Kronecker(
            np.array([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]), np.diag([1.0, -2.0, 3.0])
        ),
        kron_dense(
            np.array([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]), np.diag([1.0, -2.0, 3.0]), 2
        ),
    ),
    "kronecker_rectangular": lambda: (
        bj.Kronecker(np.ones((2, 3)), np.ones((3, 2)), batch=2),
        kron_dense(np.ones((2, 3)), np.ones((3, 2)), 2),
    ),
    "blocks": lambda: (
        bj.BlockDiagonal(np.array([[np.eye(2), [[0.0, 1.0], [1.0, 0.0]]], [np.eye(2), np.zeros((2, 2))]])),
        block_dense(np.array([[np.eye(2), [[0.0, 1.0], [1.0, 0.0]]], [np.eye(2), np.zeros((2, 2))]]), 2),
    ),
}


def _sparse_with_signs():
    indptr, indices = np.array([0, 2, 3, 4]), np.array([0, 1, 1, 2])
    values = np.array([[2.0, 1.0, -3.0, 1.0], [2.0, 1.0, 0.0, 1.0]])  # det -6, then singular
    return bj.Sparse(indptr, indices, values), csr_dense(indptr, indices, values, 2, 3)


# case -> the signs its batch must contain (0: a singular sample), so that the data shows them
SIGNS = {"sparse": {0, -1}, "kronecker": {0, -1}, "kronecker_rectangular": {0}, "blocks": {0, -1}}


@pytest.mark.parametrize("case", list(SINGULAR_CASES))
def test_slogdet_of_singular_and_negative_samples(case):
    J, dense = SINGULAR_CASES[case]()
    sign, logabsdet = J.slogdet()
    ref_sign, ref_logabsdet = np.linalg.slogdet(dense)
    assert set(ref_sign.tolist()) == SIGNS[case]
    np.testing.assert_array_equal(sign, ref_sign)
    singular = ref_sign == 0
    assert np.all(np.isneginf(logabsdet[singular]))
    np.testing.assert_allclose(logabsdet[~singular], ref_logabsdet[~singular], rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_scaling_by_a_number_and_per_sample(kind, dtype, rng, put):
    X = make(kind, 5, rng, dtype, put)
    name = type(X.J).__name__
    c = rng.standard_normal(5).astype(dtype)
    for scaled, factor, expected_type in [
        (2.5 * X.J, 2.5, name),
        (-X.J, -1.0, name),
        (X.J.scaled(put(c)), c.astype(np.float64)[:, None, None], PER_SAMPLE_TYPE.get(name, name)),
    ]:
        assert type(scaled).__name__ == expected_type
        assert scaled.dtype == dtype
        assert_close(scaled.to_dense(), factor * X.dense)


@pytest.mark.parametrize("kind", KINDS)
def test_astype_converts_the_stored_values(kind, rng):
    X = make(kind, 3, rng, np.float64)
    J32 = X.J.astype(np.float32)
    assert type(J32) is type(X.J) and J32.dtype == np.float32
    assert_close(J32.to_dense(), X.dense, rtol=2e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_asarray_and_indexing_give_the_samples(kind, rng):
    X = make(kind, 4, rng)
    np.testing.assert_allclose(np.asarray(X.J), X.dense, rtol=1e-14)
    assert np.asarray(X.J, dtype=np.float32).dtype == np.float32
    for b in (0, 3, -1):
        sample = X.J[b]
        assert isinstance(sample, np.ndarray) and sample.shape == (6, 6)
        np.testing.assert_allclose(sample, X.dense[b], rtol=1e-14)
    head = X.J[1:3]
    assert isinstance(head, bj.Jacobian) and head.shape == (2, 6, 6)
    np.testing.assert_allclose(head.to_dense(), X.dense[1:3], rtol=1e-14)


@pytest.mark.parametrize("index,error,message", [
    (4, IndexError, r"J\[4\]: sample 4 is out of range for a batch of 4"),
    (-5, IndexError, r"J\[-5\]: sample -5 is out of range"),
    (1.0, TypeError, r"J\[index\]: expected a sample number \(int\) or a slice of samples, got float"),
    ((0, 1), TypeError, r"got tuple"),
])  # fmt: skip
def test_bad_sample_index_is_refused(index, error, message):
    with pytest.raises(error, match=message):
        bj.Dense(np.zeros((4, 2, 2)))[index]


def test_numpy_integer_sample_index_is_accepted():
    a = np.arange(8.0).reshape(2, 2, 2)
    np.testing.assert_array_equal(bj.Dense(a)[np.int64(1)], a[1])


# --------------------------------------------------------------------------------------
# Constructors: shapes, examples from the docstrings' use cases, bad input
# --------------------------------------------------------------------------------------


def test_kronecker_serves_linear_over_positions_and_the_weight_gradient(rng):
    """``Y = X W^T`` for X ``(S, n)``: ``dY/dX = I_S (x) W``; ``y = W x`` w.r.t. W:
    ``I_m (x) x^T``; ``Y = L R``: ``dY/dR = L (x) I_r``, ``dY/dL = I_p (x) R^T``."""
    B, S, m, n = 3, 4, 2, 5
    W = rng.standard_normal((m, n))
    dX = rng.standard_normal((B, S, n))
    J = bj.Kronecker(S, W, batch=B)
    assert_close(J.jvp(dX.reshape(B, -1)), (dX @ W.T).reshape(B, -1))  # linearity: d(X W^T) = dX W^T
    x = rng.standard_normal((B, n))
    dW = rng.standard_normal((B, m, n))
    Jw = bj.Kronecker(m, x[:, None, :])
    assert_close(Jw.jvp(dW.reshape(B, -1)), np.einsum("bij,bj->bi", dW, x))
    L, R = rng.standard_normal((B, 2, 3)), rng.standard_normal((B, 3, 4))
    dL, dR = rng.standard_normal(L.shape), rng.standard_normal(R.shape)
    assert_close(bj.Kronecker(L, 4).jvp(dR.reshape(B, -1)), (L @ dR).reshape(B, -1))
    assert_close(bj.Kronecker(2, R.swapaxes(1, 2)).jvp(dL.reshape(B, -1)), (dL @ R).reshape(B, -1))


@pytest.mark.parametrize("call,error,message", [
    (lambda: bj.Kronecker(2, np.ones(3), batch=1), ValueError, r"Kronecker: right must be an int .*got shape \(3,\)"),
    (lambda: bj.Kronecker(2, np.ones((3, 3))), ValueError, r"Kronecker: batch is required when no factor is per-sample"),
    (lambda: bj.Kronecker(np.ones((2, 1, 1)), np.ones((3, 1, 1))), ValueError, r"per-sample factors' batches differ: \[2, 3\]"),
    (lambda: bj.Kronecker(np.ones((2, 1, 1)), 1, batch=3), ValueError, r"batch 3 differs from the per-sample factors' 2"),
    (lambda: bj.Kronecker(-1, 2, batch=1), ValueError, r"left: expected a non-negative integer, got -1"),
    (lambda: bj.Kronecker(np.ones((2, 2), dtype=bool), 1, batch=1), TypeError, r"left: expected real floating-point"),
    (lambda: bj.BlockDiagonal(np.ones((2, 2))), ValueError, r"BlockDiagonal: blocks must be \(B, S, p, q\) or \(S, p, q\), got shape \(2, 2\)"),
    (lambda: bj.BlockDiagonal(np.ones((2, 2, 2))), ValueError, r"blocks of shape \(S, p, q\) are shared by the batch, so batch is required"),
    (lambda: bj.BlockDiagonal(np.ones((2, 1, 2, 2)), batch=3), ValueError, r"batch 3 differs from the blocks' batch 2"),
])  # fmt: skip
def test_bad_kronecker_and_block_diagonal_input_is_refused(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_shared_and_per_sample_block_diagonal_and_kronecker_shapes():
    assert bj.BlockDiagonal(np.ones((3, 2, 4)), batch=5).shape == (5, 6, 12)
    assert bj.Kronecker(np.ones((5, 2, 3)), 4).shape == (5, 8, 12)
    assert bj.Kronecker(2, 3, batch=1).to_dense().tolist() == [np.eye(6).tolist()]


def rectangular_cases(rng, batch):
    """Non-square Kronecker products and blocks (and an identity of identities), with references."""
    L, R, W = rng.standard_normal((batch, 2, 3)), rng.standard_normal((4, 2)), rng.standard_normal((3, 5))
    blocks = rng.standard_normal((batch, 3, 2, 4))
    return {
        "kronecker": (bj.Kronecker(L, R), kron_dense(L, R, batch)),
        "kronecker_identity_left": (bj.Kronecker(2, W, batch=batch), kron_dense(2, W, batch)),
        "kronecker_identity_right": (bj.Kronecker(L, 3), kron_dense(L, 3, batch)),
        "kronecker_of_identities": (bj.Kronecker(2, 3, batch=batch), kron_dense(2, 3, batch)),
        "blocks": (bj.BlockDiagonal(blocks), block_dense(blocks, batch)),
    }


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", ["kronecker", "kronecker_identity_left", "kronecker_identity_right",
                                  "kronecker_of_identities", "blocks"])  # fmt: skip
def test_rectangular_kronecker_and_blocks_against_dense(case, batch, rng):
    J, dense = rectangular_cases(rng, batch)[case]
    _, m, n = dense.shape
    assert J.shape == dense.shape
    assert_close(J.to_dense(), dense)
    assert_close(J.T.to_dense(), np.swapaxes(dense, 1, 2))
    v, u = rng.standard_normal((batch, n)), rng.standard_normal((batch, m))
    assert_close(J.jvp(v), np.einsum("bij,bj->bi", dense, v))
    assert_close(J.vjp(u), np.einsum("bi,bij->bj", u, dense))
    assert_close(J.diagonal(), np.diagonal(dense, axis1=1, axis2=2))
    c = rng.standard_normal(batch)
    assert_close(J.scaled(c).to_dense(), c[:, None, None] * dense)
    assert_close((3.0 * J).to_dense(), 3.0 * dense)
    a, b = rng.standard_normal((batch, 2, m)), rng.standard_normal((batch, n, 3))
    d_left, d_right = rng.standard_normal((batch, m)), rng.standard_normal((batch, n))
    assert_close((bj.Dense(a) @ J).to_dense(), a @ dense)
    assert_close((J @ bj.Dense(b)).to_dense(), dense @ b)
    assert_close((bj.Diagonal(d_left) @ J).to_dense(), d_left[:, :, None] * dense)
    assert_close((J @ bj.Diagonal(d_right)).to_dense(), dense * d_right[:, None, :])
    other = rng.standard_normal((batch, m, n))
    assert_close((J + bj.Dense(other)).to_dense(), dense + other)
    assert_close((J - J).to_dense(), np.zeros_like(dense))
