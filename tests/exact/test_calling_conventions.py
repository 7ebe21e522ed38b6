"""Calling conventions a JAX/PyTorch user expects, on the exact path: keyword arguments to
``f``, ``has_aux``, pytrees (dict/list/tuple) with ``argnums``, ``in_axes``, batch sizes 0
and 1, float32 and float64, non-contiguous and read-only inputs (never modified).

References: closed forms of small functions, and the complex step of NumPy code.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian

import batchjac as bj


def _tanh_affine_jacobians(W, b, x):
    """Closed forms for y = tanh(W x + b) per sample (W, b per sample): dy/dW, dy/db, dy/dx."""
    d = 1 - np.tanh(np.einsum("bij,bj->bi", W, x) + b) ** 2
    m = W.shape[1]
    dW = np.einsum("bi,ij,bk->bijk", d, np.eye(m), x)
    db = np.einsum("bi,ij->bij", d, np.eye(m))
    dx = d[:, :, None] * W
    return dW, db, dx


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_keyword_arguments_reach_f_and_are_not_differentiated(dtype, rng):
    x = rng.standard_normal((4, 3)).astype(dtype)

    def f(x, *, scale, shift=0.0):
        return scale * np.sin(x) + shift

    J = bj.jacobian(f, x, method="exact", scale=2.5, shift=1.0)
    assert J.dtype == dtype
    assert_close(J, np.einsum("bi,ij->bij", 2.5 * np.cos(x.astype(np.float64)), np.eye(3)))


def test_has_aux_returns_the_auxiliary_output_untouched(rng):
    x = rng.standard_normal((4, 3))

    def f(x):
        y = np.tanh(x)
        return y, {"norm": np.sum(y, axis=-1), "label": "tanh", "copy": x}

    J, aux = bj.jacobian(f, x, has_aux=True, method="exact")
    assert_close(J, np.einsum("bi,ij->bij", 1 - np.tanh(x) ** 2, np.eye(3)))
    assert aux["label"] == "tanh"
    np.testing.assert_allclose(aux["norm"], np.tanh(x).sum(axis=-1), rtol=1e-15)
    np.testing.assert_array_equal(aux["copy"], x)
    J_chunked, aux_chunked = bj.jacobian(f, x, has_aux=True, method="exact", chunk_size=3)
    assert_close(J_chunked, J)
    np.testing.assert_allclose(aux_chunked["norm"], aux["norm"], rtol=1e-15)
    J_one, aux_one = bj.jacobian(
        lambda s: (np.tanh(s), np.sum(s)), x, has_aux=True, per_sample=True, method="exact"
    )
    assert_close(J_one, J)
    np.testing.assert_allclose(aux_one, x.sum(axis=-1), rtol=1e-15)
    g, aux = bj.grad(lambda s: (np.sum(np.tanh(s), axis=-1), s * 2), has_aux=True)(x)
    assert_close(g, 1 - np.tanh(x) ** 2)
    np.testing.assert_allclose(aux, 2 * x)


def test_pytrees_of_parameters_give_jacobians_in_the_same_structure(rng):
    B, m, n = 4, 2, 3
    W, b, x = rng.standard_normal((B, m, n)), rng.standard_normal((B, m)), rng.standard_normal((B, n))
    dW, db, dx = _tanh_affine_jacobians(W, b, x)

    def f(params, x):
        return np.tanh((params["W"] @ x[..., None])[..., 0] + params["b"])

    J = bj.jacobian(f, {"W": W, "b": b}, x, method="exact")
    assert set(J) == {"W", "b"}
    assert_close(J["W"], dW)
    assert_close(J["b"], db)
    J_params, J_x = bj.jacobian(f, {"W": W, "b": b}, x, argnums=(0, 1), method="exact")
    assert_close(J_params["W"], dW)
    assert_close(J_x, dx)
    J_list = bj.jacobian(
        lambda p, x: np.tanh((p[0] @ x[..., None])[..., 0] + p[1]), [W, b], x, method="exact"
    )
    assert isinstance(J_list, list) and len(J_list) == 2
    assert_close(J_list[0], dW)
    J_tuple = bj.jacobian(
        lambda p, x: np.tanh((p[0] @ x[..., None])[..., 0] + p[1][0]), (W, (b,)), x, method="exact"
    )
    assert isinstance(J_tuple, tuple) and isinstance(J_tuple[1], tuple)
    assert_close(J_tuple[1][0], db)
    J_den = bj.jacobian(f, {"W": W, "b": b}, x, layout="denominator", method="exact")
    assert_close(J_den["b"], np.swapaxes(db, 1, 2))
    G = bj.grad(lambda p, x: np.sum(f(p, x), axis=-1))({"W": W, "b": b}, x)
    assert_close(G["W"], dW.sum(axis=1))


def test_in_axes_shared_parameters_give_per_sample_gradients(rng):
    m, n, B = 2, 3, 5
    W, b, x = rng.standard_normal((m, n)), rng.standard_normal(m), rng.standard_normal((B, n))
    dW, db, dx = _tanh_affine_jacobians(np.broadcast_to(W, (B, m, n)), np.broadcast_to(b, (B, m)), x)

    def f(params, x):  # one sample
        return np.tanh(params["W"] @ x + params["b"])

    J = bj.jacobian(f, {"W": W, "b": b}, x, per_sample=True, in_axes=(None, 0), method="exact")
    assert J["W"].shape == (B, m, m, n)
    assert_close(J["W"], dW)
    assert_close(J["b"], db)
    J_x = bj.jacobian(f, {"W": W, "b": b}, x, argnums=1, per_sample=True, in_axes=(None, 0), method="exact")
    assert_close(J_x, dx)
    with pytest.raises(ValueError, match="in_axes"):
        bj.jacobian(f, {"W": W, "b": b}, x, per_sample=True, in_axes=(None,))
    with pytest.raises(ValueError, match="in_axes"):
        bj.jacobian(f, {"W": W, "b": b}, x, per_sample=True, in_axes=(1, 0))


@pytest.mark.parametrize("batch", [0, 1])
@pytest.mark.parametrize("per_sample", [False, True])
def test_batch_sizes_zero_and_one(batch, per_sample, rng):
    x = rng.standard_normal((batch, 3))
    W = rng.standard_normal((2, 3))
    f = (
        (lambda s: np.tanh(W @ s) * np.sum(s))
        if per_sample
        else (lambda s: np.tanh(s @ W.T) * np.sum(s, -1, keepdims=True))
    )
    J = bj.jacobian(f, x, per_sample=per_sample, method="exact")
    assert J.shape == (batch, 2, 3)
    expected = (
        complex_step_jacobian(lambda z: np.tanh(z @ W.T) * np.sum(z, -1, keepdims=True), x) if batch else J
    )
    assert_close(J, expected)
    scalar = (lambda s: np.sum(s**3)) if per_sample else (lambda s: np.sum(s**3, axis=-1))
    assert_close(bj.grad(scalar, per_sample=per_sample)(x), 3 * x**2)
    H = bj.hessian(scalar, x, per_sample=per_sample)
    assert H.shape == (batch, 3, 3)
    assert_close(H, np.einsum("bi,ij->bij", 6 * x, np.eye(3)))
    hv = bj.hvp(scalar, x, np.ones_like(x), per_sample=per_sample)
    assert_close(hv, 6 * x)


def test_non_contiguous_and_read_only_inputs_are_used_and_never_modified(rng):
    base = rng.standard_normal((4, 6))
    x = base[:, ::2]  # non-contiguous view
    frozen = base.copy()
    frozen.setflags(write=False)
    before = base.copy()
    f = lambda t: np.cumsum(np.sin(t), axis=-1)  # noqa: E731
    expected = complex_step_jacobian(f, np.ascontiguousarray(x))
    assert_close(bj.jacobian(f, x, method="exact"), expected)
    assert_close(bj.jacobian(f, frozen, method="exact"), complex_step_jacobian(f, base))
    scalar = lambda t: np.sum(np.sin(t) ** 2, axis=-1)  # noqa: E731
    for call in (
        lambda a: bj.jacobian(f, a),
        lambda a: bj.jacobian(f, a, per_sample=True),
        lambda a: bj.grad(scalar)(a),
        lambda a: bj.hessian(scalar, a),
        lambda a: bj.hvp(scalar, a, a),
        lambda a: bj.jvp(f, a, a),
        lambda a: bj.vjp(f, a)[1](a),
        lambda a: bj.hessian(scalar, a, method="central"),
    ):
        call(x)
        call(frozen)
    np.testing.assert_array_equal(base, before)
    np.testing.assert_array_equal(frozen, before)


def test_f_that_writes_into_an_intermediate_is_traced_and_one_that_writes_its_input_is_not(rng):
    x = rng.standard_normal((3, 4))
    before = x.copy()

    def scaled(t):
        y = np.sin(t)
        y *= 2.0  # rebinds y to a new traced array: traces
        return y

    assert_close(bj.jacobian(scaled, x, method="exact"), np.einsum("bi,ij->bij", 2 * np.cos(x), np.eye(4)))

    def overwrite(t):
        t[:, 0] = 0.0
        return t

    with pytest.raises(bj.TraceError, match="cannot be written into"):
        bj.jacobian(overwrite, x, method="exact")
    with pytest.warns(bj.NumericalFallbackWarning, match="cannot be written into"):
        J = bj.jacobian(overwrite, x)
    expected = np.broadcast_to(np.diag([0.0, 1, 1, 1]), (3, 4, 4))
    assert_close(J, expected, rtol=1e-10)
    np.testing.assert_array_equal(x, before)


def test_results_do_not_alias_the_callers_arrays(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    J = bj.jacobian(lambda t: t @ W.T, x, structured=True)
    W_before = W.copy()
    W[...] = 0.0
    assert_close(J.to_dense(), np.broadcast_to(W_before, (3, 2, 4)))
    A = rng.standard_normal((4, 4))
    H = bj.hessian(lambda t: bj.quadratic_form(t, A), x, structured=True)
    A_before = A.copy()
    A[...] = 0.0
    assert_close(H.to_dense(), np.broadcast_to(A_before + A_before.T, (3, 4, 4)))
    y, J = bj.value_and_jacobian(lambda t: t, x, method="exact")
    assert not np.shares_memory(y, x)
