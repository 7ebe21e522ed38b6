"""Linear memory: exact Jacobians in chunks, structured results that never build 0/1 or
Kronecker matrices, per-sample parameter gradients at the cost of their output."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj


def _peak(fn):
    fn()
    tracemalloc.start()
    try:
        result = fn()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def _mlp(rng, dtype=np.float64):
    W1, W2 = rng.standard_normal((7, 5)).astype(dtype), rng.standard_normal((3, 7)).astype(dtype)
    return lambda x: np.tanh(x @ W1.T) @ W2.T


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_chunked_exact_jacobians_equal_the_whole_batch(rng, chunk):
    f = _mlp(rng)
    x = rng.standard_normal((7, 5))
    whole = bj.jacobian(f, x, method="exact")
    assert_close(bj.jacobian(f, x, method="exact", chunk_size=chunk), whole, rtol=1e-14)
    assert_close(bj.jacobian(f, x, method="exact", chunk_size=chunk, layout="denominator"), whole.transpose(0, 2, 1), rtol=1e-14)
    y, J = bj.value_and_jacobian(f, x, method="exact", chunk_size=chunk)
    assert_close(y, f(x), rtol=1e-14)


def test_chunked_exact_path_shows_progress(rng, capsys):
    pytest.importorskip("tqdm")
    f = _mlp(rng)
    bj.jacobian(f, rng.standard_normal((6, 5)), method="exact", chunk_size=2, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_chunk_and_progress_are_validated_on_the_exact_path(rng):
    f = _mlp(rng)
    x = rng.standard_normal((4, 5))
    with pytest.raises((TypeError, ValueError), match="chunk_size"):
        bj.jacobian(f, x, method="exact", chunk_size=0)
    with pytest.raises((TypeError, ValueError), match="progress"):
        bj.jacobian(f, x, method="exact", progress="yes")
    with pytest.raises(ValueError, match="chunk_size: a structured Jacobian"):
        bj.jacobian(f, x, method="exact", chunk_size=2, structured=True)


def test_a_request_that_cannot_fit_fails_before_allocating(rng):
    x = np.broadcast_to(rng.standard_normal(400), (10**6, 400))  # a read-only view of 400 numbers
    W = rng.standard_normal((400, 400))  # the Jacobian (B, 400, 400) would take 1.3 TB
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="bytes"):
            bj.jacobian(lambda x: np.tanh(x @ W), x, method="exact", chunk_size=10**6)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_parameter_gradients_cost_their_output(rng, dtype):
    B = 200
    W1, b1 = rng.standard_normal((32, 16)).astype(dtype) / 4, np.zeros(32, dtype)
    W2, b2 = rng.standard_normal((4, 32)).astype(dtype) / 6, np.zeros(4, dtype)
    x, y = rng.standard_normal((B, 16)).astype(dtype), rng.standard_normal((B, 4)).astype(dtype)

    def loss(x, W1, b1, W2, b2, y):
        return np.sum((W2 @ np.tanh(W1 @ x + b1) + b2 - y) ** 2)

    keywords = dict(argnums=(1, 2, 3, 4), per_sample=True, in_axes=(0, None, None, None, None, 0))
    peak, grads = _peak(lambda: bj.jacobian(loss, x, W1, b1, W2, b2, y, **keywords))
    assert [g.shape for g in grads] == [(B, 32, 16), (B, 32), (B, 4, 32), (B, 4)]
    assert peak <= 3 * sum(g.nbytes for g in grads)
    # reference: per-sample closed form in float64
    x64, W1_, W2_ = x.astype(float), W1.astype(float), W2.astype(float)
    h = np.tanh(x64 @ W1_.T)
    r = 2 * (h @ W2_.T - y)
    dh = (r @ W2_) * (1 - h**2)
    assert_close(grads[2], r[:, :, None] * h[:, None, :])
    assert_close(grads[0], dh[:, :, None] * x64[:, None, :])
    assert_close(grads[1], dh)


def test_layer_jacobian_wrt_a_shared_weight_is_a_kronecker_product(rng):
    B, m, n = 50, 6, 5
    W = rng.standard_normal((m, n))
    x = rng.standard_normal((B, n))
    J = bj.jacobian(lambda x, W: W @ x, x, W, argnums=1, per_sample=True, in_axes=(0, None), structured=True)
    assert type(J).__name__ == "Kronecker"
    expected = np.einsum("ik,bj->bikj", np.eye(m), x).reshape(B, m, m * n)  # dy_i/dW_kj = delta_ik x_j
    assert_close(J.to_dense(), expected)


def _growth(make, sizes):
    peaks = [_peak(make(n))[0] for n in sizes]
    return [b / a for a, b in zip(peaks, peaks[1:])]


def test_structured_partial_sums_grow_linearly(rng):
    B = 16

    def make(n):
        x = rng.standard_normal((B, n * n))
        return lambda: bj.jacobian(lambda x: bj.sum(bj.reshape(x, (B, n, n)), axis=1), x, structured=True)

    assert max(_growth(make, (32, 64, 128))) < 5.0  # the per-sample size quadruples each step


def test_structured_linear_over_positions_and_broadcasts_grow_linearly(rng):
    W = rng.standard_normal((16, 16))

    def positions(S):
        x = rng.standard_normal((16, S, 16))
        return lambda: bj.jacobian(lambda x: bj.linear(x, W), x, structured=True)

    def broadcast(n):
        x, y = rng.standard_normal((16, n)), rng.standard_normal((16, 8, n))
        return lambda: bj.jacobian(lambda x: x[:, None, :] + y, x, structured=True)

    assert max(_growth(positions, (128, 256, 512))) < 2.6
    assert max(_growth(broadcast, (256, 512, 1024))) < 2.6


def test_reverse_products_through_a_repeated_index_grow_linearly(rng):
    def make(n):
        index = np.concatenate([np.arange(n), np.arange(n)[::-1]])
        W = rng.standard_normal((4, 2 * n))
        x = rng.standard_normal((16, n))
        return lambda: bj.jacobian(lambda x: np.tanh(x[:, index]) @ W.T, x, structured=True)

    assert max(_growth(make, (256, 512, 1024))) < 2.6
    x = rng.standard_normal((3, 5))
    index = np.array([0, 1, 1, 4, 0, 3])
    W = rng.standard_normal((2, 6))
    f = lambda x: np.tanh(x[:, index]) @ W.T  # noqa: E731
    assert_close(bj.jacobian(f, x), bj.jacobian(f, x, method="complex-step"), rtol=1e-12)


def _long_chain(q):
    """A long program of small values (a 4 x 4 product of rotations per joint): its values
    and local Jacobians take many times the bytes of its (B, 12, 4) Jacobian."""
    T = None
    for i in range(4):
        c, s = np.cos(q[:, i]), np.sin(q[:, i])
        zero, one = 0.0 * c, 0.0 * c + 1.0
        A = np.stack([
            np.stack([c, -s, zero, 0.3 * c], axis=-1),
            np.stack([s, c, zero, 0.3 * s], axis=-1),
            np.stack([zero, zero, one, zero + 0.1], axis=-1),
            np.stack([zero, zero, zero, one], axis=-1),
        ], axis=1)  # fmt: skip
        T = A if T is None else T @ A
    return np.concatenate([T[:, :3, 3], T[:, :3, :3].reshape(len(q), 9)], axis=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_long_program_runs_in_passes_whose_working_set_is_bounded(rng, monkeypatch, dtype):
    from batchjac import engine

    q = rng.uniform(-np.pi, np.pi, (1500, 4)).astype(dtype)
    whole = bj.jacobian(_long_chain, q, method="exact", fuse=False)
    monkeypatch.setattr(engine, "WORKING_SET", 64 << 10)  # scaled down with the batch
    monkeypatch.setattr(engine, "MIN_PASS", 16)
    peak, J = _peak(lambda: bj.jacobian(_long_chain, q, method="exact", fuse=False))
    assert peak <= 4 * J.nbytes
    np.testing.assert_array_equal(J, whole)  # a sample's arithmetic does not depend on its pass
    small = q[:5].astype(np.float64)
    reference = bj.jacobian(_long_chain, small, method="complex-step")
    assert_close(J[:5], reference, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_chunks_slice_the_per_sample_data_that_is_not_differentiated(rng, chunk):
    """A per-sample argument outside ``argnums`` (labels, targets) goes with its samples."""
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    f = lambda x, y: np.tanh(x * y) + y  # noqa: E731
    J = bj.jacobian(f, x, y, method="exact", chunk_size=chunk)
    assert_close(J, np.einsum("bi,ij->bij", y / np.cosh(x * y) ** 2, np.eye(5)), rtol=1e-14)
    H = bj.jacobian(bj.grad(lambda x, y: np.sum(np.tanh(x * y), axis=-1)), x, y, method="exact", chunk_size=chunk)
    t = np.tanh(x * y)
    assert_close(H, np.einsum("bi,ij->bij", -2 * t * (1 - t**2) * y**2, np.eye(5)), rtol=1e-12)


def _forced_passes(monkeypatch):
    """Every exact call with a non-scalar output goes through the batch in passes of 2."""
    from batchjac import engine

    monkeypatch.setattr(engine, "WORKING_SET", 1)
    monkeypatch.setattr(engine, "MIN_PASS", 2)


_PASS_CASES = {
    "per-sample data outside argnums": (lambda x, y: np.tanh(x * y) + np.sin(y), {}, True),
    "shared weight, denominator layout": (lambda x, W: np.tanh(x @ W), {"layout": "denominator"}, False),
    "two argnums": (lambda x, y: x * np.exp(y), {"argnums": (0, 1)}, True),
    "per-sample f with a shared parameter": (
        lambda x, W: np.tanh(W @ x), {"argnums": (0, 1), "per_sample": True, "in_axes": (0, None)}, False,
    ),
    "dict argument": (lambda p, y: np.sin(p["a"]) * p["b"] + y, {}, "tree"),
    "has_aux": (lambda x, y: (np.cos(x) * y, np.sum(y, axis=-1)), {"has_aux": True}, True),
}


@pytest.mark.parametrize("name", sorted(_PASS_CASES))
def test_results_in_passes_equal_the_whole_batch(rng, monkeypatch, name):
    f, keywords, second = _PASS_CASES[name]
    B = 5
    x = rng.standard_normal((B, 4))
    if second == "tree":
        args = ({"a": x, "b": rng.standard_normal((B, 4))}, rng.standard_normal((B, 4)))
    elif second:
        args = (x, rng.standard_normal((B, 4)))
    else:
        args = (x, rng.standard_normal((4, 4)))
    whole = bj.value_and_jacobian(f, *args, method="exact", fuse=False, **keywords)
    _forced_passes(monkeypatch)
    from batchjac import engine

    passes = []
    in_chunks = engine._exact_in_chunks
    monkeypatch.setattr(engine, "_exact_in_chunks", lambda *a, **k: passes.append(a[4]) or in_chunks(*a, **k))
    parts = bj.value_and_jacobian(f, *args, method="exact", fuse=False, **keywords)
    assert passes == [2]  # samples per pass
    for a, b in zip(_leaves(whole), _leaves(parts), strict=True):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [np.asarray(tree)]


def test_passes_have_equal_sizes_and_the_dtype_of_the_whole_batch(rng, monkeypatch):
    """A float32 output of a float64 input: the chain's Jacobian dtype whatever the passes;
    the passes split the batch evenly (no last pass of a few samples)."""
    from batchjac import engine

    W = rng.standard_normal((6, 4))
    f = lambda x: np.tanh(x @ W.T).astype(np.float32)  # noqa: E731
    x = rng.standard_normal((11, 4))
    whole = bj.jacobian(f, x, method="exact", fuse=False)
    monkeypatch.setattr(engine, "WORKING_SET", 1)
    monkeypatch.setattr(engine, "MIN_PASS", 4)
    sizes = []
    chain = engine.value_and_jacobians
    monkeypatch.setattr(engine, "value_and_jacobians", lambda *a: sizes.append(a[4]) or chain(*a))
    parts = bj.jacobian(f, x, method="exact", fuse=False)
    assert sizes == [4, 4, 3]
    assert parts.dtype == whole.dtype
    assert_close(parts, whole, rtol=1e-6)
