"""Products of ``Sparse``, ``Gather`` and ``Kronecker`` with dense matrices in linear memory.

Each case is sized so that the dense form of the structured operand, per sample, would be
``B m n`` = 64 x 64 x 4096 float64 = 134 MB, while the operands and the result are a few MB:
the peak measured by ``tracemalloc`` (NumPy reports its allocations to it) must stay under
a small multiple of the arrays that go in and come out. The densifying methods are also
replaced by failures, so that a quadratic array built any other way would show in the peak.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj

B, SEGMENTS, WIDTH = 64, 64, 4096  # partial sums: 64 outputs, each the sum of 64 of 4096 inputs


def peak_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture
def no_densifying(monkeypatch):
    def forbidden(self, *args):
        raise AssertionError(f"{type(self).__name__} was densified")

    for cls in (bj.Sparse, bj.Gather, bj.Kronecker):
        monkeypatch.setattr(cls, "to_dense", forbidden)
        monkeypatch.setattr(cls, "_matrix", forbidden)
    monkeypatch.setattr(bj.Gather, "matrix", forbidden)


def partial_sums():
    """``y[b, i] = sum_j x[b, j * 64 + i]``: the Jacobian of ``x.reshape(B, 64, 64).sum(axis=1)``
    as an index map (a 0/1 CSR pattern with shared values)."""
    indices = np.arange(WIDTH).reshape(SEGMENTS, WIDTH // SEGMENTS, order="F").ravel()
    indptr = np.arange(SEGMENTS + 1) * (WIDTH // SEGMENTS)
    return bj.Sparse(indptr, indices, np.ones(WIDTH), in_size=WIDTH, batch=B)


def test_partial_sums_times_dense_in_linear_memory(rng, no_densifying):
    S = partial_sums()
    assert S.T.shape == (B, WIDTH, SEGMENTS)  # the transposed pattern (a stable sort) is kept
    M = rng.standard_normal((B, WIDTH, 1))
    P = rng.standard_normal((B, 1, SEGMENTS))
    u = rng.standard_normal((B, SEGMENTS))
    expected_SM = M.reshape(B, WIDTH // SEGMENTS, SEGMENTS).sum(axis=1)[:, :, None]
    expected_PS = np.tile(P, (1, 1, WIDTH // SEGMENTS))  # input j belongs to sum j % 64
    for call, expected, moved in [
        (lambda: (S @ bj.Dense(M)).to_dense(), expected_SM, M.nbytes),
        (lambda: (bj.Dense(P) @ S).to_dense(), expected_PS, expected_PS.nbytes),
        (lambda: S.vjp(u), np.tile(u, WIDTH // SEGMENTS), B * WIDTH * 8),
    ]:
        result, peak = peak_bytes(call)
        assert_close(result, expected)
        assert peak < 4 * moved, f"peak {peak / 1e6:.1f} MB for {moved / 1e6:.1f} MB in and out"
        assert peak < B * SEGMENTS * WIDTH * 8 / 10  # far below the per-sample dense form


def test_row_scaled_broadcast_and_repeated_gather_vjp_in_linear_memory(rng, no_densifying):
    """``x[:, None, :] * w``: 4096 outputs, each one of 64 inputs scaled per sample (a Sparse
    with one entry per row), and the plain broadcast (a Gather repeating each input)."""
    index = np.tile(np.arange(SEGMENTS), WIDTH // SEGMENTS)
    scales = rng.standard_normal((B, WIDTH))
    S = bj.Sparse(np.arange(WIDTH + 1), index, scales, in_size=SEGMENTS)
    G = bj.Gather(index, SEGMENTS, B)
    u = rng.standard_normal((B, WIDTH))
    expected = np.zeros((B, SEGMENTS))
    np.add.at(expected, (slice(None), index), u * scales)
    expected_plain = u.reshape(B, -1, SEGMENTS).sum(axis=1)
    assert S.T.shape == G.T.shape == (B, SEGMENTS, WIDTH)  # sorted once, kept
    for call, reference in [(lambda: S.vjp(u), expected), (lambda: G.vjp(u), expected_plain)]:
        result, peak = peak_bytes(call)
        assert_close(result, reference)
        assert peak < 4 * u.nbytes, f"peak {peak / 1e6:.1f} MB"


def test_kronecker_times_dense_never_builds_the_kronecker_matrix(rng, no_densifying):
    """``I_512 (x) W`` (``linear`` over 512 positions of width 8) and ``I_64 (x) x^T`` (the
    Jacobian of ``W x`` with respect to a 64 x 64 ``W``, per sample)."""
    positions, width = 512, 8
    W = rng.standard_normal((width, width))
    K = bj.Kronecker(positions, W, batch=B)
    M = rng.standard_normal((B, positions * width, 2))
    expected = (W @ M.reshape(B, positions, width, 2)).reshape(B, -1, 2)
    result, peak = peak_bytes(lambda: (K @ bj.Dense(M)).to_dense())
    assert_close(result, expected)
    assert peak < 4 * M.nbytes, f"peak {peak / 1e6:.1f} MB"
    P = rng.standard_normal((B, 2, positions * width))
    result, peak = peak_bytes(lambda: (bj.Dense(P) @ K).to_dense())
    assert_close(result, (P.reshape(B, 2, positions, width) @ W).reshape(B, 2, -1))
    assert peak < 4 * P.nbytes, f"peak {peak / 1e6:.1f} MB"
    x = rng.standard_normal((B, 1, SEGMENTS))
    Kx = bj.Kronecker(SEGMENTS, x)  # (B, 64, 4096)
    u = rng.standard_normal((B, SEGMENTS))
    result, peak = peak_bytes(lambda: Kx.vjp(u))
    assert_close(result, (u[:, :, None] * x).reshape(B, -1))  # dL/dW = u x^T
    assert peak < 4 * result.nbytes, f"peak {peak / 1e6:.1f} MB"
