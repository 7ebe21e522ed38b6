"""``solve(J, r)``: the batched systems ``J_b x_b = r_b`` through ``J``'s structure.

Each structure is checked against ``numpy.linalg.solve`` of its float64 dense reference
(built in :mod:`structured_cases`), for one and for several right-hand sides, float32 and
float64, batch 0, 1 and 5; then the errors: a non-square ``J``, a wrong ``r``, and a
singular sample, which must be named.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import assert_close
from structured_cases import block_dense, csr_dense, kron_dense

import batchjac as bj
from batchjac.structured.solve import solve

DTYPES = (np.float32, np.float64)
BATCHES = (0, 1, 5)
N = 6


def well_conditioned(rng, *shape):
    """Random square matrices ``(..., p, p)`` with a dominant diagonal."""
    p = shape[-1]
    return rng.standard_normal(shape) + 3 * p**0.5 * np.eye(p)


def nonsingular(kind, batch, rng, dtype):
    """A square ``(batch, 6, 6)`` Jacobian that is invertible, and its float64 dense form."""
    cast = lambda a: np.asarray(a).astype(dtype)  # noqa: E731
    if kind == "dense":
        a = cast(well_conditioned(rng, batch, N, N))
        return bj.Dense(a), a.astype(np.float64)
    if kind == "shared_plus_diagonal":
        A, d = cast(well_conditioned(rng, N, N)), cast(rng.uniform(0.5, 1.5, (batch, N)))
        return bj.Shared(A, batch) + bj.Diagonal(d), A.astype(np.float64) + d.astype(np.float64)[
            :, :, None
        ] * np.eye(N)
    if kind == "diagonal":
        d = cast(rng.uniform(0.5, 2.0, (batch, N)) * rng.choice([-1, 1], (batch, N)))
        return bj.Diagonal(d), d.astype(np.float64)[:, :, None] * np.eye(N)
    if kind == "identity":
        return bj.Identity(N, batch, -2.0, dtype=dtype), np.broadcast_to(-2.0 * np.eye(N), (batch, N, N))
    if kind == "identity_per_sample":
        s = cast(rng.uniform(0.5, 2.0, batch))
        return bj.Identity(N, batch, s), s.astype(np.float64)[:, None, None] * np.eye(N)
    if kind == "shared":
        A = cast(well_conditioned(rng, N, N))
        return bj.Shared(A, batch), np.broadcast_to(A.astype(np.float64), (batch, N, N))
    if kind in ("sparse", "sparse_shared"):
        indptr = np.array([0, 2, 4, 6, 8, 10, 12])  # a diagonal and one neighbour per row
        indices = np.array([0, 3, 1, 0, 2, 5, 3, 1, 4, 2, 5, 4])
        shape = (batch, 12) if kind == "sparse" else (12,)
        values = rng.standard_normal(shape)
        values[..., np.arange(0, 12, 2)] += 4.0  # the diagonal entries dominate
        values = cast(values)
        return bj.Sparse(indptr, indices, values, batch=batch), csr_dense(indptr, indices, values, batch, N)
    if kind == "permutation":
        index = rng.permutation(N)
        J = bj.Gather(index, N, batch, -0.5, injective=True, dtype=dtype)
        return J, csr_dense(np.arange(N + 1), index, np.full(N, -0.5), batch, N)
    if kind in ("blocks", "blocks_shared"):
        blocks = cast(
            well_conditioned(rng, batch, 2, 3, 3) if kind == "blocks" else well_conditioned(rng, 3, 2, 2)
        )
        J = bj.BlockDiagonal(blocks, batch=batch)
        return J, block_dense(blocks, batch)
    if kind == "kronecker_identity_left":
        W = cast(well_conditioned(rng, 3, 3))
        return bj.Kronecker(2, W, batch=batch), kron_dense(2, W, batch)
    if kind == "kronecker_identity_right":
        L = cast(well_conditioned(rng, batch, 2, 2))
        return bj.Kronecker(L, 3, batch=batch), kron_dense(L, 3, batch)
    if kind == "kronecker_matrices":
        L, R = cast(well_conditioned(rng, batch, 2, 2)), cast(well_conditioned(rng, 3, 3))
        return bj.Kronecker(L, R, batch=batch), kron_dense(L, R, batch)
    raise AssertionError(kind)


KINDS = ("dense", "shared_plus_diagonal", "diagonal", "identity", "identity_per_sample", "shared", "sparse",
         "sparse_shared", "permutation", "blocks", "blocks_shared", "kronecker_identity_left",
         "kronecker_identity_right", "kronecker_matrices")  # fmt: skip


@pytest.mark.parametrize("columns", [None, 3], ids=["vector", "matrix"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_solve_equals_numpy_on_the_dense_form(kind, dtype, batch, columns, rng):
    J, dense = nonsingular(kind, batch, rng, dtype)
    shape = (batch, N) if columns is None else (batch, N, columns)
    r = rng.standard_normal(shape).astype(dtype)
    r_before = r.copy()
    x = solve(J, r)
    assert x.shape == shape and x.dtype == dtype
    expected = np.linalg.solve(
        dense, r.astype(np.float64)[..., None] if columns is None else r.astype(np.float64)
    )
    assert_close(
        x, expected[..., 0] if columns is None else expected, rtol=2e-5 if dtype == np.float32 else 1e-10
    )
    np.testing.assert_array_equal(r, r_before)


def test_shared_solve_factors_its_matrix_once(rng, monkeypatch):
    A = well_conditioned(rng, N, N)
    r = rng.standard_normal((7, N))
    expected = np.linalg.solve(A, r.T).T
    calls = []
    original = np.linalg.solve
    monkeypatch.setattr(np.linalg, "solve", lambda a, b: calls.append(a.shape) or original(a, b))
    assert_close(solve(bj.Shared(A, 7), r), expected)
    assert calls == [(N, N)]  # one matrix, every sample's right-hand side a column


def test_a_float32_jacobian_and_float64_r_solve_in_float64(rng):
    J, dense = nonsingular("dense", 3, rng, np.float32)
    r = rng.standard_normal((3, N))
    x = solve(J, r)
    assert x.dtype == np.float64
    assert_close(x, np.linalg.solve(dense, r[..., None])[..., 0])


def test_bj_solve_of_a_jacobian_solves_through_its_structure(rng):
    J, dense = nonsingular("blocks", 3, rng, np.float64)
    r = rng.standard_normal((3, N))
    assert_close(bj.solve(J, r), np.linalg.solve(dense, r[..., None])[..., 0])


def test_newton_step_on_a_sparse_residual(rng):
    """One Newton step on a linear residual ``f(x) = A x - b`` lands on the solution."""
    J, dense = nonsingular("sparse", 4, rng, np.float64)
    b = rng.standard_normal((4, N))
    x0 = rng.standard_normal((4, N))
    residual = J.jvp(x0) - b
    x1 = x0 - solve(J, residual)
    assert_close(J.jvp(x1), b)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_non_square_jacobian_is_refused():
    with pytest.raises(ValueError, match=r"solve: the Jacobian must be square, got shape \(2, 3, 4\)"):
        solve(bj.Dense(np.ones((2, 3, 4))), np.ones((2, 3)))


@pytest.mark.parametrize("shape", [(2, 4), (3, 3), (3,), (2, 3, 1, 1)])
def test_wrong_right_hand_side_shape_is_refused(shape):
    message = re.escape(f"solve: r must have shape (B, n) = (2, 3) or (B, n, k), got {shape}")
    with pytest.raises(ValueError, match=message):
        solve(bj.Dense(np.ones((2, 3, 3))), np.ones(shape))


def test_an_array_as_j_is_a_type_error_saying_to_wrap_it():
    with pytest.raises(
        TypeError,
        match=r"solve: J must be a bj.Jacobian \(wrap an array a \(B, n, n\) in bj.Dense\(a\)\), got ndarray",
    ):
        solve(np.eye(2)[None], np.ones((1, 2)))


def _singular_cases():
    a = np.stack([np.eye(3), np.eye(3), np.ones((3, 3)), np.eye(3)])
    d = np.ones((4, 3))
    d[1, 2] = 0.0
    blocks = np.stack([np.stack([np.eye(2)] * 2)] * 3)
    blocks[2, 1] = 0.0
    values = np.ones((3, 4))
    values[1, 3] = 0.0
    return {
        "dense": (bj.Dense(a), "sample 2"),
        "diagonal": (bj.Diagonal(d), "sample 1"),
        "identity": (bj.Identity(3, 4, 0.0), r"sample 0 \(and 3 more\)"),
        "shared": (bj.Shared(np.ones((3, 3)), 2), r"sample 0 \(and 1 more\)"),
        "blocks": (bj.BlockDiagonal(blocks), "sample 2"),
        "sparse": (bj.Sparse([0, 2, 3, 4], [0, 1, 1, 2], values), "sample 1"),
        "kronecker": (bj.Kronecker(np.stack([np.eye(2), np.ones((2, 2))]), 2), "sample 1"),
        "kronecker_rectangular": (
            bj.Kronecker(np.ones((2, 3)), np.ones((3, 2)), batch=2),
            r"sample 0 \(and 1 more\)",
        ),
    }


@pytest.mark.parametrize("case", list(_singular_cases()))
def test_a_singular_sample_is_named(case):
    J, which = _singular_cases()[case]
    with pytest.raises(
        np.linalg.LinAlgError, match=rf"solve: {which} of J is singular \(its determinant is 0\)"
    ):
        solve(J, np.ones((J.batch, J.out_size)))


def test_singular_error_is_a_value_error():
    assert issubclass(np.linalg.LinAlgError, ValueError)
