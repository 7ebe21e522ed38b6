"""Functions written as in NumPy: the kinematics of issue 15 verbatim, for the batch and for
one sample (``per_sample=True``), a Newton residual, a softmax classifier; ``in_axes`` for
parameters shared by the batch.

References: the complex step of the NumPy function in float64 (a loop over samples for
per-sample code), JAX's ``vmap(jacfwd)`` where installed, closed forms.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian
from tracing_references import jax_jacobian, jnp

import batchjac as bj

L = np.array([1.0, 0.8, 0.6, 0.5, 0.3, 0.2])
H = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])


# fmt: off
# The kinematics of issue 15, verbatim.
def kinematics(q):                      # q: (B, 6)
    phi = np.cumsum(q, axis=-1)
    x = np.sum(L * np.cos(phi), axis=-1); y = np.sum(L * np.sin(phi), axis=-1)  # noqa: E702
    z = np.sum(H * np.sin(q) * np.cos(np.roll(q, -1, axis=-1)), axis=-1)
    a, b = phi[:, 5] / 2, (q[:, 1] + q[:, 3]) / 2
    return np.stack([x, y, z, np.cos(a)*np.cos(b), np.sin(a)*np.cos(b),
                     np.cos(a)*np.sin(b), np.sin(a)*np.sin(b)], axis=-1)


# The same for one sample: q of shape (6,), axis=-1 and phi[5].
def kinematics_one(q):                  # q: (6,)
    phi = np.cumsum(q, axis=-1)
    x = np.sum(L * np.cos(phi), axis=-1); y = np.sum(L * np.sin(phi), axis=-1)  # noqa: E702
    z = np.sum(H * np.sin(q) * np.cos(np.roll(q, -1, axis=-1)), axis=-1)
    a, b = phi[5] / 2, (q[1] + q[3]) / 2
    return np.stack([x, y, z, np.cos(a)*np.cos(b), np.sin(a)*np.cos(b),
                     np.cos(a)*np.sin(b), np.sin(a)*np.sin(b)], axis=-1)
# fmt: on


@pytest.mark.parametrize("batch", [0, 1, 7])
def test_the_kinematics_of_issue_15_traces_exactly_and_matches_the_complex_step(batch, rng):
    q = rng.uniform(-np.pi, np.pi, (batch, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it traces
        y, J = bj.value_and_jacobian(kinematics, q, method="auto")
        J_one = bj.jacobian(kinematics_one, q, method="auto", per_sample=True)
    assert J.shape == (batch, 7, 6)
    reference = complex_step_jacobian(kinematics, q) if batch else np.zeros((0, 7, 6))
    np.testing.assert_allclose(J, reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(J_one, J, rtol=0, atol=1e-15)
    np.testing.assert_allclose(y, kinematics(q), rtol=0, atol=1e-15)
    program = bj.trace(kinematics, q if batch else np.zeros((1, 6)))
    assert {"cumsum", "roll", "concatenate"} <= {eq.primitive.name for eq in program.equations}


def test_the_kinematics_in_float32_is_float32_and_close_to_float64(rng):
    q = rng.uniform(-np.pi, np.pi, (5, 6))
    J32 = bj.jacobian(kinematics, q.astype(np.float32), method="exact")
    assert J32.dtype == np.float64  # L and H are float64 constants: NumPy promotes, as f itself does
    J32_one = bj.jacobian(
        lambda s: kinematics_one(s.astype(np.float32)), q.astype(np.float32), per_sample=True, method="exact"
    )
    assert_close(J32, complex_step_jacobian(kinematics, q), rtol=1e-6)
    assert_close(J32_one, J32, rtol=1e-6)


def test_per_sample_idioms_see_one_sample(rng):
    """x.T, axis=None reductions, x[0] and len(x) count the axes of one sample."""
    X = rng.standard_normal((4, 3, 2))

    def f(x):  # one sample (3, 2)
        assert x.shape == (3, 2) and len(x) == 3
        return x.T @ x / np.sum(x**2) + np.outer(x[0], x[-1])

    expected = complex_step_jacobian(lambda Z: np.stack([f(z) for z in Z]), X)
    assert_close(bj.jacobian(f, X, per_sample=True, method="exact"), expected)


def test_a_shared_parameter_passes_unbatched_with_in_axes(rng):
    """in_axes=(None, 0): per-sample gradients w.r.t. a shared W, (B, *out, *W.shape)."""
    W, x = rng.standard_normal((2, 3)), rng.standard_normal((5, 3))

    def f(W, x):
        return np.tanh(W @ x)

    J_W = bj.jacobian(f, W, x, per_sample=True, in_axes=(None, 0), method="exact")
    J_x = bj.jacobian(f, W, x, argnums=1, per_sample=True, in_axes=(None, 0), method="exact")
    # the same as differentiating a broadcast W in batched mode
    J_W_batched = bj.jacobian(
        lambda Wb, x: np.tanh(np.einsum("bij,bj->bi", Wb, x)), np.broadcast_to(W, (5, 2, 3)), x
    )
    assert J_W.shape == (5, 2, 2, 3) and J_x.shape == (5, 2, 3)
    assert_close(J_W, J_W_batched)
    d = 1 - np.tanh(x @ W.T) ** 2
    assert_close(J_x, d[:, :, None] * W)
    assert_close(J_W, np.einsum("bi,ij,bk->bijk", d, np.eye(2), x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        G = bj.grad(lambda W, x: np.sum(f(W, x)), per_sample=True, in_axes=(None, 0))(W, x)
    assert_close(G, J_W.sum(axis=1))


def test_per_sample_agrees_with_jax_vmap_in_float64(rng):
    x = rng.standard_normal((4, 3))

    def f(xp, s):
        return xp.concatenate([xp.sin(s) * xp.sum(s**2), xp.cumsum(s)[::-1], xp.linalg.norm(s)[None]])

    J = bj.jacobian(lambda s: f(np, s), x, per_sample=True, method="exact")
    if jnp is None:
        pytest.skip("JAX is not installed")
    assert_close(J, jax_jacobian(f, x, per_sample=True))


def test_a_newton_residual_converges_with_the_exact_jacobian(rng):
    """Newton on r(x) = A x + sin(x) - c, per sample, with the exact Jacobian in both modes."""
    A = rng.standard_normal((6, 4, 4)) + 5 * np.eye(4)
    c = rng.standard_normal((6, 4))

    def residual(x, A, c):
        return np.einsum("bij,bj->bi", A, x) + np.sin(x) - c

    def residual_one(x, A, c):
        return A @ x + np.sin(x) - c

    x = np.zeros((6, 4))
    for _ in range(8):
        J = bj.jacobian(residual, x, A, c, method="exact")
        assert_close(bj.jacobian(residual_one, x, A, c, per_sample=True, method="exact"), J)
        assert_close(J, A + np.einsum("bi,ij->bij", np.cos(x), np.eye(4)))
        x = x - bj.solve(J, residual(x, A, c))
    assert np.abs(residual(x, A, c)).max() < 1e-13
    J = bj.jacobian(residual, x, A, c, structured=True)
    step = bj.solve(J, residual(x, A, c))
    assert np.abs(step).max() < 1e-13


def test_a_softmax_classifier_per_sample_and_batched(rng):
    W, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    x = rng.standard_normal((4, 5))

    def probs(x):  # batched, written with NumPy
        t = x @ W.T + b
        return np.exp(t) / np.sum(np.exp(t), axis=-1, keepdims=True)

    def probs_one(W, x):
        t = W @ x + b
        return np.exp(t) / np.sum(np.exp(t))

    s = probs(x)
    closed = np.einsum("bi,ij->bij", s, np.eye(3)) - s[:, :, None] * s[:, None, :]
    assert_close(bj.jacobian(probs, x, method="exact"), closed @ W)
    J_W = bj.jacobian(probs_one, W, x, per_sample=True, in_axes=(None, 0), method="exact")
    assert_close(J_W, np.einsum("bij,bk->bijk", closed, x))


def test_per_sample_float32_keeps_float32(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    J = bj.jacobian(lambda s: np.tanh(s) * np.sum(s), x, per_sample=True, method="exact")
    assert J.dtype == np.float32
    expected = complex_step_jacobian(
        lambda z: np.tanh(z) * np.sum(z, axis=-1, keepdims=True), x.astype(np.float64)
    )
    assert_close(J, expected)
