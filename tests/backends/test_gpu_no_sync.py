"""The exact and chain paths never wait for the GPU nor copy between devices (marked ``gpu``).

Each path runs once to warm up (kernel compilation, the dispatch measurement of
:mod:`batchjac.backends.autotune`, which times with CUDA events), then again under
``cupyx.allow_synchronize(False)``, where any host synchronisation raises; the results
are checked afterwards against the NumPy backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj

pytestmark = pytest.mark.gpu


def no_sync(fn):
    import cupyx

    fn()  # warm-up: compile kernels, decide the dispatch
    with cupyx.allow_synchronize(False):
        return fn()


def mlp(W1, b1, W2):
    def f(x):
        h = bj.tanh(bj.linear(x, W1, b1))
        return bj.softmax(bj.linear(bj.relu(h) + h * 0.5, W2)) + bj.sum(x**2, axis=-1)[:, None]

    return f


@pytest.fixture
def problem(cp):
    rng = np.random.default_rng(3)
    W1, b1, W2 = rng.standard_normal((16, 8)), rng.standard_normal(16), rng.standard_normal((4, 16))
    x = rng.standard_normal((32, 8))
    return (W1, b1, W2, x), tuple(cp.asarray(a) for a in (W1, b1, W2, x))


def test_the_exact_path_does_not_synchronise(cp, problem):
    (W1, b1, W2, x), (gW1, gb1, gW2, gx) = problem
    J = no_sync(lambda: bj.jacobian(mlp(gW1, gb1, gW2), gx, method="exact"))
    assert isinstance(J, cp.ndarray)
    np.testing.assert_allclose(
        J.get(), bj.jacobian(mlp(W1, b1, W2), x, method="exact"), rtol=1e-10, atol=1e-12
    )


def test_structured_results_and_slogdet_do_not_synchronise(cp, problem):
    _, (gW1, gb1, gW2, gx) = problem

    def square(x):
        return bj.tanh(bj.linear(x, gW1[:8], gb1[:8])) + x

    def run():
        J = bj.jacobian(square, gx, method="exact", structured=True)
        return J.slogdet()

    sign, logabsdet = no_sync(run)
    assert isinstance(logabsdet, cp.ndarray) and logabsdet.shape == (32,)


def test_the_chain_path_does_not_synchronise(cp, problem):
    (W1, _, W2, x), (gW1, _, gW2, gx) = problem
    batch = x.shape[0]

    def factors(xp, W1, W2, x):
        return [
            bj.Shared(W2, batch),
            bj.Diagonal(xp.tanh(x @ W1.T)),
            bj.Identity(16, batch, scale=2.0) + bj.Diagonal(xp.cos(x @ W1.T)),
            bj.Shared(W1, batch),
        ]

    def run():
        Js = factors(cp, gW1, gW2, gx)
        u = cp.ones((batch, 4))
        return bj.chain(*Js).to_dense(), bj.chain_jvp(Js, gx), bj.chain_vjp(Js, u)

    got = no_sync(run)
    Js = factors(np, W1, W2, x)
    expected = (bj.chain(*Js).to_dense(), bj.chain_jvp(Js, x), bj.chain_vjp(Js, np.ones((batch, 4))))
    for g, e in zip(got, expected):
        assert isinstance(g, cp.ndarray)
        np.testing.assert_allclose(g.get(), e, rtol=1e-10, atol=1e-12)
