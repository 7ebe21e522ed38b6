"""Second derivatives: ``bj.hessian`` (exact and central), ``bj.hvp``/``bj.vhp``, ``bj.grad``,
``bj.jvp``, ``bj.vjp`` and nesting, against closed forms, the complex step, and JAX.

The property test composes random traceable operations (element-wise, reductions, moves,
products, linear algebra, kinks) up to depth 5. Its reference Hessian is the complex step of
an *exact gradient written independently in this file*: every operation carries an analytic
forward-mode rule here (``jvp``), the gradient is one forward sweep per input direction, and
the complex step of that analytic gradient has no subtractive cancellation (agreement to
1e-10 relative in float64). Where JAX is installed, ``jax.vmap(jax.hessian(f))`` must agree
too.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian
from tracing_references import complex_step_gradient_jacobian, jax_hessian, jnp, relative_error

import batchjac as bj

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

# --------------------------------------------------------------------------------------
# The worked examples of math.md whose second derivative exists
# --------------------------------------------------------------------------------------


def test_example_1_a_dot_product_has_a_zero_hessian(rng):
    w = np.array([1.0, 2.0, 3.0])
    x = np.vstack([[5.0, 8.0, -1.0], rng.standard_normal((3, 3))])
    H = bj.hessian(lambda t: bj.dot(t, w), x)
    np.testing.assert_array_equal(H, np.zeros((4, 3, 3)))
    np.testing.assert_array_equal(
        bj.hessian(lambda t: t @ w, x, structured=True).to_dense(), np.zeros((4, 3, 3))
    )
    np.testing.assert_array_equal(bj.hvp(lambda t: t @ w, x, x), np.zeros((4, 3)))
    assert_close(bj.grad(lambda t: t @ w)(x), np.broadcast_to(w, (4, 3)))


def test_example_2_the_2x2_determinant():
    X = np.array([[[3.0, 2.0], [6.0, -4.0]]])
    H = bj.hessian(lambda t: np.linalg.det(t), X)
    expected = np.zeros((2, 2, 2, 2))  # d2(x11 x22 - x12 x21)
    expected[0, 0, 1, 1] = expected[1, 1, 0, 0] = 1.0
    expected[0, 1, 1, 0] = expected[1, 0, 0, 1] = -1.0
    assert_close(H[0], expected)
    assert_close(bj.grad(lambda t: np.linalg.det(t))(X), np.array([[[-4.0, -6.0], [-2.0, 3.0]]]))


def test_example_3_the_square_of_a_scalar(rng):
    x = rng.standard_normal(5)  # (B,): one scalar per sample
    assert_close(bj.hessian(lambda t: t**2, x), np.full(5, 2.0))
    assert_close(bj.hessian(lambda t: t[:, 0] ** 2, x[:, None]), np.full((5, 1, 1), 2.0))


def test_example_4_x_plus_x_squared_element_wise(rng):
    x = rng.standard_normal((3, 4))
    expected = np.zeros((3, 4, 4, 4))
    for i in range(4):
        expected[:, i, i, i] = 2.0
    assert_close(bj.hessian(lambda t: t + t**2, x), expected)
    assert_close(bj.hessian(lambda t: t + t**2, x, layout="denominator"), expected)  # symmetric in all axes
    H_sum = bj.hessian(lambda t: np.sum(t + t**2, axis=-1), x, structured=True)
    assert isinstance(H_sum, bj.Diagonal)
    assert_close(H_sum.to_dense(), np.broadcast_to(2 * np.eye(4), (3, 4, 4)))


def test_example_5_the_relu_neuron_is_piecewise_linear_in_w():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    w = np.broadcast_to(np.array([1.0, -2.0]), (2, 2))
    H = bj.hessian(lambda w, x: np.maximum(0.0, np.sum(w * x, axis=-1) + 0.5), w, x)
    np.testing.assert_array_equal(H, np.zeros((2, 2, 2)))
    assert_close(
        bj.grad(lambda w, x: np.maximum(0.0, np.sum(w * x, axis=-1) + 0.5))(w, x), [[1.0, 0.0], [0.0, 0.0]]
    )


# --------------------------------------------------------------------------------------
# Structure and symmetry
# --------------------------------------------------------------------------------------


def test_a_quadratic_form_has_the_shared_hessian_a_plus_a_transpose(rng):
    A, x = rng.standard_normal((4, 4)), rng.standard_normal((5, 4))
    for f in (lambda t: bj.quadratic_form(t, A), lambda t: np.sum(t * (t @ A.T), axis=-1)):
        H = bj.hessian(f, x, structured=True)
        assert isinstance(H, bj.Shared)
        assert_close(H.to_dense(), np.broadcast_to(A + A.T, (5, 4, 4)))
        dense = H.to_dense()
        np.testing.assert_array_equal(dense, np.swapaxes(dense, -1, -2))


def test_gauss_newton_r_transpose_r_with_linear_r_has_a_shared_hessian(rng):
    C, d, x = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal((5, 4))
    for f in (
        lambda t: np.sum((t @ C.T - d) ** 2, axis=-1),
        lambda t: bj.dot(bj.linear(t, C, -d), bj.linear(t, C, -d)),
        lambda t: np.sum(np.square(t @ C.T - d), axis=-1),
    ):
        H = bj.hessian(f, x, structured=True)
        assert isinstance(H, bj.Shared)
        assert_close(H.to_dense(), np.broadcast_to(2 * C.T @ C, (5, 4, 4)))


def test_a_sum_of_element_wise_terms_has_a_diagonal_hessian(rng):
    x = rng.standard_normal((5, 4))

    def f(t):
        return np.sum(np.sin(t) ** 2 + np.exp(0.5 * t) - np.log1p(t**2), axis=-1)

    H = bj.hessian(f, x, structured=True)
    assert isinstance(H, bj.Diagonal)
    second = 2 * np.cos(2 * x) + 0.25 * np.exp(0.5 * x) - (2 - 2 * x**2) / (1 + x**2) ** 2
    assert_close(H.diagonal(), second)


@pytest.mark.parametrize("method", ["exact", "central"])
def test_hessians_are_exactly_symmetric(method, rng):
    W, x = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))

    def f(t):
        return np.sum(np.tanh(t @ W.T) ** 2, axis=-1) + np.prod(t, axis=-1) + np.linalg.norm(t, axis=-1)

    H = bj.hessian(f, x, method=method)
    np.testing.assert_array_equal(H, np.swapaxes(H, -1, -2))
    H_vector = bj.hessian(lambda t: np.tanh(t @ W.T), x, method=method)
    np.testing.assert_array_equal(H_vector, np.swapaxes(H_vector, -1, -2))


# --------------------------------------------------------------------------------------
# The transforms against references
# --------------------------------------------------------------------------------------


def _mlp_loss(W1, W2):
    def f(t):
        return np.sum(np.log1p(np.exp(np.tanh(t @ W1.T) @ W2.T)), axis=-1)

    def gradient(z):  # by hand: complex-safe
        h = np.tanh(z @ W1.T)
        s = 1 / (1 + np.exp(-(h @ W2.T)))
        return ((s @ W2) * (1 - h**2)) @ W1

    return f, gradient


def test_grad_hessian_hvp_vhp_against_the_complex_step_of_a_hand_written_gradient(rng):
    W1, W2 = rng.standard_normal((5, 4)) / 2, rng.standard_normal((3, 5)) / 2
    f, gradient = _mlp_loss(W1, W2)
    x, v = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    H_reference = complex_step_gradient_jacobian(gradient, x)
    assert_close(bj.grad(f)(x), gradient(x))
    assert_close(bj.hessian(f, x), H_reference)
    assert_close(bj.hessian(f, x, per_sample=False, structured=True).to_dense(), H_reference)
    assert_close(bj.hvp(f, x, v), np.einsum("bij,bj->bi", H_reference, v))
    assert_close(bj.vhp(f, x, v), np.einsum("bij,bi->bj", H_reference, v))
    assert_close(bj.jacobian(bj.grad(f), x), H_reference)
    assert_close(bj.jacobian(lambda t: bj.jacobian(f, t), x), H_reference)
    f_one = lambda s: np.sum(np.log1p(np.exp(np.tanh(W1 @ s) @ W2.T)))  # noqa: E731
    assert_close(bj.hessian(f_one, x, per_sample=True), H_reference)
    assert_close(bj.hvp(f_one, x, v, per_sample=True), np.einsum("bij,bj->bi", H_reference, v))
    assert_close(bj.hessian(f, x.astype(np.float32)), H_reference, rtol=2e-5)
    assert bj.hessian(f, x.astype(np.float32)).dtype == np.float64  # W1, W2 are float64: NumPy promotes


def test_jvp_and_vjp_against_the_complex_step(rng):
    W = rng.standard_normal((3, 4))
    x, v, u = rng.standard_normal((5, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 3))

    def f(t):
        return np.tanh(t @ W.T) * np.sum(t**2, axis=-1, keepdims=True)

    J = complex_step_jacobian(f, x)
    y, jv = bj.jvp(f, x, v)
    assert_close(y, f(x))
    assert_close(jv, np.einsum("bij,bj->bi", J, v))
    y, vjp_fn = bj.vjp(f, x)
    (uJ,) = vjp_fn(u)
    assert_close(uJ, np.einsum("bij,bi->bj", J, u))
    f_one = lambda s: np.tanh(W @ s) * np.sum(s**2)  # noqa: E731
    assert_close(bj.jvp(f_one, x, v, per_sample=True)[1], np.einsum("bij,bj->bi", J, v))
    assert_close(bj.vjp(f_one, x, per_sample=True)[1](u)[0], np.einsum("bij,bi->bj", J, u))
    y32, jv32 = bj.jvp(lambda t: np.tanh(t) * t, x.astype(np.float32), v.astype(np.float32))
    assert jv32.dtype == np.float32
    assert_close(jv32, np.einsum("bij,bj->bi", complex_step_jacobian(lambda t: np.tanh(t) * t, x), v))


def test_a_shared_parameter_hessian_and_hvp_with_in_axes(rng):
    W, x = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))
    V = rng.standard_normal((3, 4))

    def f(W, s):
        return np.sum(np.tanh(W @ s) ** 2)

    def gradient_W(Wz):  # (B, 3*4) complex: d f / d W per sample, by hand
        Wm = Wz.reshape(-1, 3, 4)
        t = np.tanh(np.einsum("bij,bj->bi", Wm, x))
        return np.einsum("bi,bj->bij", 2 * t * (1 - t**2), x).reshape(-1, 12)

    reference = complex_step_gradient_jacobian(gradient_W, np.broadcast_to(W.ravel(), (5, 12))).reshape(
        5, 3, 4, 3, 4
    )
    H = bj.hessian(f, W, x, per_sample=True, in_axes=(None, 0))
    assert_close(H, reference)
    assert_close(
        bj.hvp(f, W, V, x, per_sample=True, in_axes=(None, 0)), np.einsum("bijkl,kl->bij", reference, V)
    )


def test_hessians_of_a_vector_function_and_both_layouts(rng):
    W, x = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))

    def f(t):
        return np.sin(t @ W.T) * np.sum(t, axis=-1, keepdims=True)

    def gradient_of_output(k):
        return lambda z: (
            W[k] * np.cos(z @ W[k])[:, None] * np.sum(z, -1, keepdims=True) + np.sin(z @ W[k])[:, None]
        )

    reference = np.stack([complex_step_gradient_jacobian(gradient_of_output(k), x) for k in range(3)], axis=1)
    H = bj.hessian(f, x)
    assert H.shape == (5, 3, 4, 4)
    assert_close(H, reference)
    assert_close(bj.hessian(f, x, layout="denominator"), np.moveaxis(reference, 1, -1))
    assert_close(bj.jacobian(lambda t: bj.jacobian(f, t), x), reference)
    assert_close(bj.hessian(f, x, method="central"), reference, rtol=1e-7)


def test_third_derivatives_by_nesting(rng):
    x = rng.standard_normal((4, 3))
    T = bj.jacobian(
        lambda t: bj.hessian(lambda s: np.sum(np.sin(s) * np.prod(s, axis=-1, keepdims=True), -1), t), x
    )

    assert T.shape == (4, 3, 3, 3)
    np.testing.assert_allclose(T, np.transpose(T, (0, 2, 1, 3)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(T, np.transpose(T, (0, 3, 2, 1)), rtol=1e-12, atol=1e-12)
    # third derivative of a cubic: x0 x1 x2 has d3 = 1 at permutations of (0, 1, 2)
    T_cubic = bj.jacobian(lambda t: bj.hessian(lambda s: np.prod(s, axis=-1), t), x)
    expected = np.zeros((3, 3, 3))
    for perm in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:
        expected[perm] = 1.0
    assert_close(T_cubic, np.broadcast_to(expected, (4, 3, 3, 3)))


# --------------------------------------------------------------------------------------
# Numerical Hessians: central differences of the exact gradient; second differences
# --------------------------------------------------------------------------------------


def test_central_differences_of_the_exact_gradient_are_accurate_to_1e_8(rng):
    W1, W2 = rng.standard_normal((5, 4)) / 2, rng.standard_normal((3, 5)) / 2
    f, gradient = _mlp_loss(W1, W2)
    x = rng.standard_normal((6, 4))
    reference = complex_step_gradient_jacobian(gradient, x)
    assert relative_error(bj.hessian(f, x, method="central"), reference) < 1e-8
    assert relative_error(bj.hessian(f, x.astype(np.float32), method="central"), reference) < 1e-3


def test_a_function_that_does_not_trace_gets_second_differences_with_a_warning(rng):
    x = rng.standard_normal((4, 3))

    def black_box(t):
        t = np.asarray(t)  # leaves the trace
        return np.sum(np.sin(t) * t**2, axis=-1)

    second = (2 - x**2) * np.sin(x) + 4 * x * np.cos(x)
    with pytest.warns(bj.NumericalFallbackWarning, match="second differences"):
        H = bj.hessian(black_box, x)
    assert_close(H, np.einsum("bi,ij->bij", second, np.eye(3)), rtol=1e-5)
    np.testing.assert_array_equal(H, np.swapaxes(H, -1, -2))
    with pytest.raises(bj.TraceError):
        bj.hessian(black_box, x, method="exact")
    with pytest.raises(TypeError, match="float64"):
        bj.hessian(black_box, x.astype(np.float32), method="central")


def test_hessian_errors_name_the_argument(rng):
    x = rng.standard_normal((3, 2))
    with pytest.raises(ValueError, match="argnums"):
        bj.hessian(lambda a, b: np.sum(a * b, -1), x, x, argnums=(0, 1))
    with pytest.raises(TypeError, match="one array"):
        bj.hessian(lambda p: np.sum(p["a"] ** 2, -1), {"a": x})
    with pytest.raises(ValueError, match="method"):
        bj.hessian(lambda a: np.sum(a**2, -1), x, method="complex-step")
    with pytest.raises(ValueError, match="structured=True needs the exact method"):
        bj.hessian(lambda a: np.sum(a**2, -1), x, method="central", structured=True)
    with pytest.raises(ValueError, match="grad: f must return one number per sample"):
        bj.grad(lambda a: a**2)(x)


# --------------------------------------------------------------------------------------
# Property test: random compositions up to depth 5
# --------------------------------------------------------------------------------------

N = 4
M4 = np.random.default_rng(0).standard_normal((N, N)) / 2
WEIGHTS = np.arange(1.0, N + 1)


def _spd(xp, a):
    """K K^T + 4 I with K = a M4 (columns scaled): symmetric positive definite."""
    K = a[..., None, :] * M4
    return K @ xp.swapaxes(K, -1, -2) + 4.0 * np.eye(N)


def _d_spd(a, da):
    K, dK = a[..., None, :] * M4, da[..., None, :] * M4
    return dK @ np.swapaxes(K, -1, -2) + K @ np.swapaxes(dK, -1, -2)


def _unit(xp, a):
    return 0.9 * xp.tanh(a)


def _positive(xp, a):
    return 1.5 + xp.tanh(a)


# name -> (f(xp, a) on the batch (B, N); analytic jvp(a, da), complex-safe; complex-safe value
# where f itself is not (None: f with NumPy))
OPERATIONS = {
    "sin": (lambda xp, a: xp.sin(a), lambda a, d: np.cos(a) * d, None),
    "tanh": (lambda xp, a: xp.tanh(a), lambda a, d: (1 - np.tanh(a) ** 2) * d, None),
    "exp": (lambda xp, a: xp.exp(0.3 * a), lambda a, d: 0.3 * np.exp(0.3 * a) * d, None),
    "log": (lambda xp, a: xp.log(_positive(xp, a)), lambda a, d: (1 - np.tanh(a) ** 2) / (1.5 + np.tanh(a)) * d, None),
    "sqrt": (lambda xp, a: xp.sqrt(_positive(xp, a)), lambda a, d: 0.5 * (1 - np.tanh(a) ** 2) / np.sqrt(1.5 + np.tanh(a)) * d, None),
    "arcsin": (lambda xp, a: xp.arcsin(_unit(xp, a)),
               lambda a, d: 0.9 * (1 - np.tanh(a) ** 2) / np.sqrt(1 - (0.9 * np.tanh(a)) ** 2) * d, None),
    "arctan": (lambda xp, a: xp.arctan(a), lambda a, d: d / (1 + a**2), None),
    "power": (lambda xp, a: _positive(xp, a) ** 1.5, lambda a, d: 1.5 * np.sqrt(1.5 + np.tanh(a)) * (1 - np.tanh(a) ** 2) * d, None),
    "cube": (lambda xp, a: a**3, lambda a, d: 3 * a**2 * d, None),
    "cumsum": (lambda xp, a: xp.cumsum(a, axis=-1), lambda a, d: np.cumsum(d, axis=-1), None),
    "flip roll": (lambda xp, a: xp.roll(xp.flip(a, axis=-1), 1, axis=-1), lambda a, d: np.roll(np.flip(d, axis=-1), 1, axis=-1), None),
    "matmul": (lambda xp, a: a @ M4.T, lambda a, d: d @ M4.T, None),
    "quadratic": (lambda xp, a: a * (a @ M4), lambda a, d: d * (a @ M4) + a * (d @ M4), None),
    "product": (lambda xp, a: a * xp.prod(a, axis=-1, keepdims=True),
                lambda a, d: d * np.prod(a, -1, keepdims=True) + a * np.sum(d * _others(a), -1, keepdims=True), None),
    "softmax": (lambda xp, a: xp.exp(a) / xp.sum(xp.exp(a), axis=-1, keepdims=True),
                lambda a, d: _softmax(a) * (d - np.sum(_softmax(a) * d, -1, keepdims=True)), None),
    "log-softmax": (lambda xp, a: a - xp.log(xp.sum(xp.exp(a), axis=-1, keepdims=True)),
                    lambda a, d: d - np.sum(_softmax(a) * d, -1, keepdims=True), None),
    "normalize": (lambda xp, a: a / xp.linalg.norm(a, axis=-1, keepdims=True),
                  lambda a, d: d / _norm(a) - a * np.sum(a * d, -1, keepdims=True) / _norm(a) ** 3,
                  lambda a: a / _norm(a)),
    "centre": (lambda xp, a: a - xp.mean(a, axis=-1, keepdims=True), lambda a, d: d - np.mean(d, -1, keepdims=True), None),
    "max": (lambda xp, a: a * xp.max(a, axis=-1, keepdims=True),
            lambda a, d: d * _top(a) + a * _top_of(a, d), lambda a: a * _top(a)),
    "where": (lambda xp, a: xp.where(a > 0, a**2, xp.sin(a)), lambda a, d: np.where(a.real > 0, 2 * a, np.cos(a)) * d, None),
    "abs": (lambda xp, a: xp.abs(a) * a, lambda a, d: 2 * np.sign(a.real) * a * d, lambda a: np.sign(a.real) * a * a),
    "maximum": (lambda xp, a: xp.maximum(a, 0.1), lambda a, d: np.where(a.real > 0.1, d, 0), None),
    "stack": (lambda xp, a: xp.concatenate([a[..., 1:], a[..., :1] ** 2], axis=-1),
              lambda a, d: np.concatenate([d[..., 1:], 2 * a[..., :1] * d[..., :1]], axis=-1), None),
    "inv": (lambda xp, a: xp.linalg.inv(_spd(xp, a))[..., 0, :],
            lambda a, d: -(np.linalg.inv(_spd(np, a)) @ _d_spd(a, d) @ np.linalg.inv(_spd(np, a)))[..., 0, :], None),
    "solve": (lambda xp, a: xp.linalg.solve(_spd(xp, a), a[..., None])[..., 0],
              lambda a, d: np.linalg.solve(_spd(np, a), (d - (_d_spd(a, d) @ np.linalg.solve(_spd(np, a), a[..., None])[..., 0][..., None])[..., 0])[..., None])[..., 0],
              None),
    "det": (lambda xp, a: a * xp.linalg.det(_spd(xp, a))[..., None] / 1000,
            lambda a, d: (d * np.linalg.det(_spd(np, a))[..., None] + a * (np.linalg.det(_spd(np, a)) * np.trace(np.linalg.solve(_spd(np, a), _d_spd(a, d)), axis1=-2, axis2=-1))[..., None]) / 1000,
            None),
    "slogdet": (lambda xp, a: a * xp.linalg.slogdet(_spd(xp, a))[1][..., None],
                lambda a, d: d * np.log(np.linalg.det(_spd(np, a)))[..., None] + a * np.trace(np.linalg.solve(_spd(np, a), _d_spd(a, d)), axis1=-2, axis2=-1)[..., None],
                lambda a: a * np.log(np.linalg.det(_spd(np, a)))[..., None]),
    "einsum": (lambda xp, a: xp.einsum("...i,ij,...j->...i", a, M4, a), lambda a, d: d * (a @ M4.T) + a * (d @ M4.T), None),
}  # fmt: skip


def _others(a):
    n = a.shape[-1]
    return np.stack([np.prod(np.delete(a, i, axis=-1), axis=-1) for i in range(n)], axis=-1)


def _softmax(a):
    e = np.exp(a - a.real.max(axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _norm(a):
    return np.sqrt(np.sum(a * a, axis=-1, keepdims=True))


def _top(a):
    return np.take_along_axis(a, np.argmax(a.real, axis=-1)[..., None], axis=-1)


def _top_of(a, d):
    return np.take_along_axis(d, np.argmax(a.real, axis=-1)[..., None], axis=-1)


def _tame(xp, a):
    """Between operations: keeps values in range (analytic)."""
    return a / (1.0 + 0.1 * a * a)


def _composition(names):
    def f(xp, x):
        a = x
        for name in names:
            a = _tame(xp, OPERATIONS[name][0](xp, a))
        return xp.sum(a * WEIGHTS, axis=-1)

    def gradient(z):
        """Forward mode, one sweep per input direction, in complex-safe NumPy."""
        columns = []
        for j in range(N):
            a, d = z, np.zeros_like(z)
            d[..., j] = 1.0
            for name in names:
                op, jvp, value = OPERATIONS[name]
                d = jvp(a, d)
                a = (value or (lambda u: op(np, u)))(a)
                d = d * (1 - 0.1 * a * a) / (1 + 0.1 * a * a) ** 2
                a = _tame(np, a)
            columns.append(np.sum(d * WEIGHTS, axis=-1))
        return np.stack(columns, axis=-1)

    return f, gradient


def _check_composition(names, seed, against_jax=True):
    x = np.random.default_rng(seed).standard_normal((3, N))
    f, gradient = _composition(names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = bj.hessian(lambda t: f(np, t), x, method="exact")
        g = bj.grad(lambda t: f(np, t))(x)
        H_one = bj.hessian(lambda s: f(np, s), x, method="exact", per_sample=True)
    assert relative_error(g, gradient(x)) < 1e-12, names
    reference = complex_step_gradient_jacobian(gradient, x)
    assert relative_error(H, reference) < 1e-10, names
    assert relative_error(H_one, reference) < 1e-10, names
    if against_jax and jnp is not None:
        assert relative_error(H, jax_hessian(f, x)) < 1e-10, names


def test_the_reference_gradients_of_the_property_test_are_right(rng):
    """The hand-written forward rules above against the complex step of each operation."""
    x = rng.standard_normal((3, N))
    for name, (op, jvp, value) in OPERATIONS.items():
        J = complex_step_jacobian(value or (lambda u: op(np, u)), x)
        for j in range(N):
            d = np.zeros_like(x)
            d[:, j] = 1.0
            np.testing.assert_allclose(jvp(x, d), J[..., j], rtol=1e-12, atol=1e-12, err_msg=name)


if given is not None:

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        names=st.lists(st.sampled_from(sorted(OPERATIONS)), min_size=1, max_size=5),
        seed=st.integers(0, 2**16),
    )
    def test_hessians_of_random_compositions_agree_with_references(names, seed):
        # JAX compiles each new composition (about a second): it checks one example in eight
        _check_composition(names, seed, against_jax=seed % 8 == 0)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_hessian_of_every_operation_of_the_property_test(name):
    _check_composition([name], seed=1)
    _check_composition([name, "softmax", name], seed=2)


@pytest.mark.parametrize("method", ["exact", "central"])
@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_hessians_in_passes_of_samples(rng, method, chunk):
    """``chunk_size`` bounds the samples per pass (per-sample data outside argnums included)."""
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    f = lambda x, y: np.sum(np.tanh(x * y) ** 2, axis=-1)  # noqa: E731
    t = np.tanh(x * y)
    d2 = y**2 * (2 * (1 - t**2) ** 2 - 4 * t**2 * (1 - t**2))  # d^2/dx^2 of tanh(xy)^2
    expected = np.einsum("bi,ij->bij", d2, np.eye(4))
    H = bj.hessian(f, x, y, method=method, chunk_size=chunk)
    np.testing.assert_allclose(H, expected, rtol=1e-13 if method == "exact" else 1e-7, atol=1e-13 if method == "exact" else 1e-7)
    if method == "exact":
        np.testing.assert_array_equal(H, bj.hessian(f, x, y, method=method))


def test_hessian_passes_show_progress_and_are_validated(rng, capsys):
    pytest.importorskip("tqdm")
    x = rng.standard_normal((6, 3))
    f = lambda x: np.sum(np.sin(x) ** 3, axis=-1)  # noqa: E731
    bj.hessian(f, x, chunk_size=2, progress=True)
    assert "3/3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        bj.hessian(f, x, chunk_size=0)
    with pytest.raises((TypeError, ValueError), match="progress"):
        bj.hessian(f, x, progress="yes")
    with pytest.raises(ValueError, match="chunk_size: a structured Jacobian"):
        bj.hessian(f, x, structured=True, chunk_size=2)
