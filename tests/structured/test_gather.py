"""``bj.Gather``: rows that pick inputs (transpose, indexing, broadcasting) without the 0/1 matrix.

Every product and sum with the other types against the dense NumPy result; JVP/VJP; the
chain planner with gathers; and the memory of a traced transpose, which once built an
``n x n`` matrix per sample."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import assert_close, to_numpy

import batchjac as bj

DTYPES = [np.float32, np.float64]


def gather_dense(index, n, batch, scale):
    """Independent reference: the 0/1 matrix of a gather, repeated for the batch."""
    M = np.zeros((len(index), n))
    M[np.arange(len(index)), index] = scale
    return np.broadcast_to(M, (batch, len(index), n))


def operands(rng, batch, n, dtype, on_device):
    """Square ``(B, n, n)`` operands of every kind, with their dense float64 references."""
    a, d, A, s = (
        rng.standard_normal((batch, n, n)),
        rng.standard_normal((batch, n)),
        rng.standard_normal((n, n)),
        rng.standard_normal(batch),
    )
    perm = rng.permutation(n)
    repeats = rng.integers(0, n, n)
    put = lambda x: on_device(x.astype(dtype))  # noqa: E731
    return {
        "gather-permutation": (bj.Gather(on_device(perm), n, batch, injective=True, dtype=dtype), gather_dense(perm, n, batch, 1.0)),
        "gather-repeats": (bj.Gather(on_device(repeats), n, batch, 2.0, dtype=dtype), gather_dense(repeats, n, batch, 2.0)),
        "dense": (bj.Dense(put(a)), a),
        "diagonal": (bj.Diagonal(put(d)), np.einsum("bi,ij->bij", d, np.eye(n))),
        "shared": (bj.Shared(put(A), batch), np.broadcast_to(A, (batch, n, n))),
        "identity": (bj.Identity(n, batch, 3.0), np.broadcast_to(3 * np.eye(n), (batch, n, n))),
        "identity-per-sample": (bj.Identity(n, batch, put(s)), s[:, None, None] * np.eye(n)),
    }  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, 5])
def test_products_and_sums_with_every_kind(backend, on_device, rng, dtype, batch):
    kinds = operands(rng, batch, 4, dtype, on_device)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for left, (J, dense_J) in kinds.items():
        for right, (K, dense_K) in kinds.items():
            if "gather" not in left + right:
                continue
            assert_close((J @ K).to_dense(), dense_J @ dense_K, rtol=tol)
            assert_close((J + K).to_dense(), dense_J + dense_K, rtol=tol)


def test_structure_of_products(rng):
    G = bj.Gather(np.array([1, 0, 2]), 3, 2, injective=True)
    H = bj.Gather(np.array([0, 0, 1]), 3, 2)
    assert isinstance(G @ H, bj.Gather) and not (G @ H).injective
    assert isinstance(G @ G, bj.Gather) and (G @ G).injective
    assert isinstance(G @ bj.Shared(np.ones((3, 3)), 2), bj.Shared)
    assert isinstance(bj.Shared(np.ones((3, 3)), 2) @ G, bj.Shared)
    assert isinstance(G @ bj.Identity(3, 2, 2.0), bj.Gather)
    assert isinstance(bj.Dense(np.ones((2, 3, 3))) @ G, bj.Dense)


def test_injective_scatter_never_builds_the_matrix(rng, monkeypatch):
    G = bj.Gather(np.array([2, 0]), 3, 4, injective=True)
    monkeypatch.setattr(bj.Gather, "matrix", lambda self: pytest.fail("the 0/1 matrix was built"))
    a = rng.standard_normal((4, 5, 2))
    expected = np.einsum("bij,bjk->bik", a, gather_dense([2, 0], 3, 4, 1.0))
    assert_close((bj.Dense(a) @ G).to_dense(), expected)
    u = rng.standard_normal((4, 2))
    assert_close(G.vjp(u), np.einsum("bi,bij->bj", u, gather_dense([2, 0], 3, 4, 1.0)))
    v = rng.standard_normal((4, 3))
    assert_close(G.jvp(v), v[:, [2, 0]])


@pytest.mark.parametrize("injective", [True, False])
def test_jvp_vjp_transpose_diagonal_slogdet(injective, rng):
    index = np.array([3, 1, 0, 2]) if injective else np.array([3, 3, 0, 2])
    G = bj.Gather(index, 4, 3, -1.5, injective=injective)
    dense = gather_dense(index, 4, 3, -1.5)
    v, u = rng.standard_normal((2, 3, 4))
    assert_close(G.jvp(v), np.einsum("bij,bj->bi", dense, v))
    assert_close(G.vjp(u), np.einsum("bi,bij->bj", u, dense))
    assert_close(G.T.to_dense(), dense.transpose(0, 2, 1))
    assert_close(G.diagonal(), np.diagonal(dense, axis1=1, axis2=2))
    sign, logdet = G.slogdet()
    ref_sign, ref_logdet = np.linalg.slogdet(dense)
    np.testing.assert_array_equal(to_numpy(sign), ref_sign)
    np.testing.assert_allclose(to_numpy(logdet), ref_logdet, rtol=1e-12)


def test_bad_index_is_refused():
    with pytest.raises(ValueError, match="Gather: index must be a 1-D integer array"):
        bj.Gather(np.array([0.0, 1.0]), 2, 1)
    with pytest.raises(ValueError, match="in_size: expected a non-negative integer"):
        bj.Gather(np.array([0]), -1, 1)


def test_chains_with_gathers_plan_and_multiply_correctly(rng):
    B = 3
    factors = [
        bj.Shared(rng.standard_normal((2, 5)), B),
        bj.Gather(np.array([4, 2, 0, 1, 3]), 5, B, injective=True),
        bj.Diagonal(rng.standard_normal((B, 5))),
        bj.Gather(np.array([0, 0, 1, 2, 3]), 4, B),
        bj.Dense(rng.standard_normal((B, 4, 6))),
    ]
    expected = factors[0].to_dense()
    for J in factors[1:]:
        expected = expected @ J.to_dense()
    plan = bj.chain_plan(*factors)
    assert plan.flops <= min(plan.forward_flops, plan.reverse_flops)
    for order in ("optimal", "forward", "reverse"):
        assert_close(bj.chain(*factors, order=order).to_dense(), expected, rtol=1e-12)


def test_traced_transpose_and_indexing_need_no_quadratic_memory(rng):
    x = rng.standard_normal((2, 3, 64, 64))  # n = 12,288 per sample: an n x n float64 matrix is 1.2 GB
    f = lambda x: bj.sum(bj.tanh(bj.transpose(x, (0, 1, 3, 2))[:, 1:, ::2]) ** 2)  # noqa: E731
    tracemalloc.start()
    g = bj.jacobian(f, x, method="exact")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"
    xt = np.transpose(x, (0, 1, 3, 2))
    expected = np.zeros_like(xt)
    t = np.tanh(xt[:, 1:, ::2])
    expected[:, 1:, ::2] = 2 * t * (1 - t * t)
    assert_close(g, np.transpose(expected, (0, 1, 3, 2)))
