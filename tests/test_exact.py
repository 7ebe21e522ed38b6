"""Exact batched Jacobians by tracing: every rule of math.md against an independent
float64 reference (complex-step or a closed form), the nine derivative classes in both
layouts, total derivatives, structure, kinks and errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian, to_numpy

import batchjac as bj
from batchjac.structured.types import Kronecker

RTOL = {np.float64: 1e-10, np.float32: 2e-4}


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


# (bj function, complex-safe NumPy form, input sampler)
ANALYTIC_UNARY = {
    "exp": (bj.exp, np.exp, lambda r, s: r.standard_normal(s)),
    "log": (bj.log, np.log, lambda r, s: r.uniform(0.2, 3.0, s)),
    "log1p": (bj.log1p, np.log1p, lambda r, s: r.uniform(-0.5, 3.0, s)),
    "expm1": (bj.expm1, np.expm1, lambda r, s: r.standard_normal(s)),
    "sin": (bj.sin, np.sin, lambda r, s: r.standard_normal(s)),
    "cos": (bj.cos, np.cos, lambda r, s: r.standard_normal(s)),
    "tan": (bj.tan, np.tan, lambda r, s: r.uniform(-1.2, 1.2, s)),
    "tanh": (bj.tanh, np.tanh, lambda r, s: r.standard_normal(s)),
    "sigmoid": (bj.sigmoid, _np_sigmoid, lambda r, s: 3 * r.standard_normal(s)),
    "softplus": (bj.softplus, lambda x: np.log(1 + np.exp(x)), lambda r, s: 3 * r.standard_normal(s)),
    "sqrt": (bj.sqrt, np.sqrt, lambda r, s: r.uniform(0.1, 4.0, s)),
    "square": (bj.square, lambda x: x * x, lambda r, s: r.standard_normal(s)),
    "reciprocal": (
        bj.reciprocal,
        lambda x: 1 / x,
        lambda r, s: r.uniform(0.5, 2.0, s) * r.choice([-1, 1], s),
    ),
    "negative": (bj.negative, lambda x: -x, lambda r, s: r.standard_normal(s)),
}

_PHI = np.vectorize(lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2))))

# Not complex-analytic: closed-form derivatives, sampled away from the kinks.
PIECEWISE_UNARY = {
    "relu": (bj.relu, lambda x: (x > 0).astype(float)),
    "abs": (bj.abs, np.sign),
    "leaky_relu": (bj.leaky_relu, lambda x: np.where(x > 0, 1.0, 0.01)),
    "elu": (bj.elu, lambda x: np.where(x > 0, 1.0, np.exp(x))),
    "gelu": (bj.gelu, lambda x: _PHI(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
}


def _away_from_zero(rng, shape):
    return rng.uniform(0.1, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


@pytest.fixture(params=[np.float64, np.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param


def _check(f, f_np, args, on_device, dtype, argnum=0, structured_type=None):
    """Exact Jacobian of ``f`` (on the backend) against complex-step of ``f_np`` (float64)."""
    device_args = [on_device(np.asarray(a, dtype=dtype)) if isinstance(a, np.ndarray) else a for a in args]
    J = bj.jacobian(f, *device_args, argnums=argnum, method="exact")
    ref_args = [np.asarray(a, dtype=np.float64) if isinstance(a, np.ndarray) else a for a in args]
    reference = complex_step_jacobian(f_np, *ref_args, argnum=argnum)
    assert to_numpy(J).dtype == np.dtype(dtype)
    assert_close(J, reference, rtol=RTOL[dtype])
    if structured_type is not None:
        assert isinstance(
            bj.jacobian(f, *device_args, argnums=argnum, method="exact", structured=True), structured_type
        )


# --------------------------------------------------------------------------------------
# Element-wise rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ANALYTIC_UNARY))
def test_unary_rule_matches_complex_step(name, backend, on_device, rng, dtype):
    fn, f_np, sample = ANALYTIC_UNARY[name]
    x = sample(rng, (5, 4))
    _check(fn, f_np, [x], on_device, dtype, structured_type=bj.Diagonal)


@pytest.mark.parametrize("name", sorted(PIECEWISE_UNARY))
def test_piecewise_unary_rule_matches_closed_form(name, backend, on_device, rng, dtype):
    fn, derivative = PIECEWISE_UNARY[name]
    x = _away_from_zero(rng, (6, 3))
    D = bj.jacobian(fn, on_device(x.astype(dtype)), method="exact", structured=True)
    assert isinstance(D, bj.Diagonal)
    assert_close(D.diagonal(), derivative(x), rtol=RTOL[dtype])


def test_power_by_constant(backend, on_device, rng, dtype):
    x = rng.uniform(0.5, 2.0, (4, 3))
    _check(lambda x: x**3.5, lambda x: x**3.5, [x], on_device, dtype, structured_type=bj.Diagonal)
    _check(lambda x: bj.power(x, -2), lambda x: x**-2.0, [x], on_device, dtype)


BINARY = {
    "add": (lambda u, v: u + v, lambda u, v: u + v),
    "sub": (lambda u, v: u - v, lambda u, v: u - v),
    "mul": (lambda u, v: u * v, lambda u, v: u * v),
    "div": (lambda u, v: u / v, lambda u, v: u / v),
    "pow": (lambda u, v: u**v, lambda u, v: u**v),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("argnum", [0, 1])
@pytest.mark.parametrize("v_shape", [(5, 4), (5, 1)], ids=["same", "per-sample-scalar"])
def test_binary_rule_both_operands(op, argnum, v_shape, backend, on_device, rng, dtype):
    f, f_np = BINARY[op]
    u = rng.uniform(0.5, 2.0, (5, 4))
    v = rng.uniform(0.5, 2.0, v_shape)
    same = v_shape == (5, 4)
    _check(f, f_np, [u, v], on_device, dtype, argnum=argnum, structured_type=bj.Diagonal if same else None)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_rule_with_constants(op, backend, on_device, rng):
    f, f_np = BINARY[op]
    u = rng.uniform(0.5, 2.0, (3, 4))
    c = rng.uniform(0.5, 2.0, 4)
    device_c = on_device(c)
    _check(lambda u: f(u, device_c), lambda u: f_np(u, c), [u], on_device, np.float64)
    _check(lambda u: f(device_c, u), lambda u: f_np(c, u), [u], on_device, np.float64)
    _check(lambda u: f(u, 1.5), lambda u: f_np(u, 1.5), [u], on_device, np.float64)
    _check(lambda u: f(1.5, u), lambda u: f_np(1.5, u), [u], on_device, np.float64)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_away_from_ties(name, backend, on_device, rng):
    u, v = rng.standard_normal((2, 6, 5))
    first = (u > v) if name == "maximum" else (u < v)
    y, Du, Dv = bj.elementwise(name, on_device(u), on_device(v))
    assert_close(y, np.maximum(u, v) if name == "maximum" else np.minimum(u, v))
    assert_close(Du.diagonal(), first.astype(float))
    assert_close(Dv.diagonal(), (~first).astype(float))
    J = bj.jacobian(getattr(bj, name), on_device(u), on_device(v), argnums=(0, 1), method="exact")
    assert_close(J[0], np.einsum("bi,ij->bij", first.astype(float), np.eye(5)))


def test_kinks_take_the_documented_values(backend, on_device):
    zero = on_device(np.zeros((2, 3)))
    for fn, expected in ((bj.relu, 0.0), (bj.abs, 0.0), (bj.leaky_relu, 0.01), (bj.elu, 1.0)):
        D = bj.jacobian(fn, zero, method="exact", structured=True)
        assert_close(D.diagonal(), np.full((2, 3), expected))
    Du, Dv = bj.jacobian(bj.maximum, zero, zero, argnums=(0, 1), method="exact", structured=True)
    assert_close(Du.diagonal(), np.zeros((2, 3)))
    assert_close(Dv.diagonal(), np.ones((2, 3)))
    Du, Dv = bj.jacobian(bj.minimum, zero, zero, argnums=(0, 1), method="exact", structured=True)
    assert_close(Du.diagonal(), np.zeros((2, 3)))
    assert_close(Dv.diagonal(), np.ones((2, 3)))


def test_where_routes_the_derivative(backend, on_device, rng):
    u, v = rng.standard_normal((2, 4, 5))
    mask = u > 0
    Ju, Jv = bj.jacobian(lambda u, v: bj.where(u > 0, u * 2, v), on_device(u), on_device(v), argnums=(0, 1))
    assert_close(Ju, np.einsum("bi,ij->bij", 2.0 * mask, np.eye(5)))
    assert_close(Jv, np.einsum("bi,ij->bij", (~mask).astype(float), np.eye(5)))


# --------------------------------------------------------------------------------------
# Reductions, products, softmax, determinants, shapes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 1, 2, -1, (1, 2)])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_reductions_over_sample_axes(axis, reduction, backend, on_device, rng, dtype):
    x = rng.standard_normal((3, 4, 5))
    np_axis = tuple(range(1, 3)) if axis is None else axis
    f_np = (lambda x: np.sum(x, axis=np_axis)) if reduction == "sum" else (lambda x: np.mean(x, axis=np_axis))
    _check(lambda x: getattr(bj, reduction)(x, axis=axis), f_np, [x], on_device, dtype)


def test_dot_rule_both_operands(backend, on_device, rng, dtype):
    a, b = rng.standard_normal((2, 4, 6))
    for argnum in (0, 1):
        _check(bj.dot, lambda a, b: np.sum(a * b, axis=-1), [a, b], on_device, dtype, argnum=argnum)
    w = rng.standard_normal(6)
    dw = on_device(w.astype(dtype))
    _check(lambda x: bj.dot(x, dw), lambda x: x @ w, [a], on_device, dtype)
    stacked = rng.standard_normal((4, 3, 6))
    _check(lambda x: bj.dot(x, x), lambda x: np.sum(x * x, axis=-1), [stacked], on_device, dtype)


def test_dot_gradient_is_the_other_operand(backend, on_device, rng):
    a, b = rng.standard_normal((2, 5, 3))
    da, db = bj.jacobian(bj.dot, on_device(a), on_device(b), argnums=(0, 1), method="exact")
    assert_close(da, b)
    assert_close(db, a)


@pytest.mark.parametrize("argnum", [0, 1])
def test_matmul_per_sample_matrices(argnum, backend, on_device, rng, dtype):
    A, X = rng.standard_normal((3, 2, 3)), rng.standard_normal((3, 3, 4))
    _check(bj.matmul, np.matmul, [A, X], on_device, dtype, argnum=argnum)


def test_matmul_with_constants(backend, on_device, rng, dtype):
    x, X = rng.standard_normal((5, 3)), rng.standard_normal((5, 3, 4))
    W, V, v = rng.standard_normal((3, 2)), rng.standard_normal((2, 3)), rng.standard_normal(4)
    dW, dV, dv = (on_device(a.astype(dtype)) for a in (W, V, v))
    _check(lambda x: x @ dW, lambda x: x @ W, [x], on_device, dtype, structured_type=bj.Shared)
    _check(lambda X: dV @ X, lambda X: V @ X, [X], on_device, dtype, structured_type=Kronecker)  # V ⊗ I_4
    _check(lambda X: X @ dv, lambda X: X @ v, [X], on_device, dtype)
    _check(lambda X: bj.matmul(X, bj.transpose(X)), lambda X: X @ np.swapaxes(X, 1, 2), [X], on_device, dtype)


def test_matmul_rule_is_kron_of_left_and_identity(backend, on_device, rng):
    A, X = rng.standard_normal((2, 2, 3)), rng.standard_normal((2, 3, 4))
    dX = bj.jacobian(lambda X: bj.matmul(on_device(A), X), on_device(X), method="exact")
    expected = np.stack([np.kron(a, np.eye(4)) for a in A]).reshape(2, 2, 4, 3, 4)
    assert_close(dX, expected)


def test_linear_rules(backend, on_device, rng, dtype):
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    dW, db = on_device(W.astype(dtype)), on_device(b.astype(dtype))
    _check(
        lambda x: bj.linear(x, dW, db),
        lambda x: x @ W.T + b,
        [x],
        on_device,
        dtype,
        structured_type=bj.Shared,
    )
    Ws, bs = np.broadcast_to(W, (4, 5, 3)), np.broadcast_to(b, (4, 5))
    f_np = lambda x, W, b: np.einsum("bmn,bn->bm", W, x) + b  # noqa: E731
    for argnum in (0, 1, 2):
        _check(bj.linear, f_np, [x, np.array(Ws), np.array(bs)], on_device, dtype, argnum=argnum)
    xs = rng.standard_normal((4, 2, 3))
    _check(lambda x: bj.linear(x, dW), lambda x: x @ W.T, [xs], on_device, dtype, structured_type=Kronecker)  # I_2 ⊗ W


def test_linear_weight_gradient_is_x_per_row(backend, on_device, rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((3, 2, 4))
    dW = bj.jacobian(lambda W, x: bj.linear(x, W), on_device(W), on_device(x), method="exact")
    expected = np.einsum("ik,bj->bikj", np.eye(2), x)  # dy_i/dW_kj = delta_ik x_j
    assert_close(dW, expected)


def test_quadratic_form(backend, on_device, rng, dtype):
    x, A = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    dA = on_device(A.astype(dtype))
    _check(
        lambda x: bj.quadratic_form(x, dA), lambda x: np.einsum("bi,ij,bj->b", x, A, x), [x], on_device, dtype
    )
    g = bj.jacobian(lambda x: bj.quadratic_form(x, on_device(A)), on_device(x), method="exact")
    assert_close(g, x @ (A + A.T))  # math.md: x^T (A + A^T)
    As = rng.standard_normal((4, 3, 3))
    _check(
        lambda A, x: bj.quadratic_form(x, A),
        lambda A, x: np.einsum("bi,bij,bj->b", x, A, x),
        [As, x],
        on_device,
        dtype,
    )


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 4)])
def test_softmax_family(shape, backend, on_device, rng, dtype):
    x = rng.standard_normal(shape)

    def softmax_np(x):
        e = np.exp(x - np.max(x.real, axis=-1, keepdims=True))
        return e / np.sum(e, axis=-1, keepdims=True)

    _check(bj.softmax, softmax_np, [x], on_device, dtype)
    _check(bj.log_softmax, lambda x: np.log(softmax_np(x)), [x], on_device, dtype)


def test_softmax_jacobian_formula(backend, on_device, rng):
    x = rng.standard_normal((3, 4))
    s = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    J = bj.jacobian(bj.softmax, on_device(x), method="exact")
    assert_close(J, np.einsum("bi,ij->bij", s, np.eye(4)) - np.einsum("bi,bj->bij", s, s))
    L = bj.jacobian(bj.log_softmax, on_device(x), method="exact")
    assert_close(L, np.eye(4) - s[:, None, :])


def test_det_and_slogdet(backend, on_device, rng, dtype):
    X = rng.standard_normal((4, 3, 3)) + 2 * np.eye(3)
    cofactor = np.linalg.det(X)[:, None, None] * np.linalg.inv(X).transpose(0, 2, 1)
    assert_close(
        bj.jacobian(bj.det, on_device(X.astype(dtype)), method="exact"), cofactor, rtol=RTOL[dtype] * 10
    )
    logdet = bj.jacobian(lambda X: bj.slogdet(X)[1], on_device(X.astype(dtype)), method="exact")
    assert_close(logdet, np.linalg.inv(X).transpose(0, 2, 1), rtol=RTOL[dtype] * 10)


def test_reshape_transpose_indexing(backend, on_device, rng, dtype):
    x = rng.standard_normal((3, 4, 5))
    cases = [
        (lambda x: bj.reshape(x, (-1, 20)), lambda x: x.reshape(3, 20), bj.Identity),
        (lambda x: bj.reshape(x, (3, 2, 10)), lambda x: x.reshape(3, 2, 10), bj.Identity),
        (bj.transpose, lambda x: np.transpose(x, (0, 2, 1)), bj.Gather),
        (lambda x: x[:, 1:3], lambda x: x[:, 1:3], bj.Gather),
        (lambda x: x[..., 0], lambda x: x[..., 0], bj.Gather),
        (lambda x: x[:, [2, 0], ::-2], lambda x: x[:, [2, 0], ::-2], bj.Gather),
        (lambda x: x[:, 1, 2], lambda x: x[:, 1, 2], bj.Gather),
    ]
    for f, f_np, structure in cases:
        _check(f, f_np, [x], on_device, dtype, structured_type=structure)


def test_ndarray_on_the_left_of_an_operator(rng):
    x, c = rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, 4)
    f = lambda x: c * x + c - x / (c + 3) - c**x  # noqa: E731
    _check(f, f, [x], np.asarray, np.float64)


# --------------------------------------------------------------------------------------
# The nine derivative classes, both layouts
# --------------------------------------------------------------------------------------

rng9 = np.random.default_rng(9)
_C = rng9.standard_normal((2, 3))
_v = rng9.standard_normal(3)

NINE = {
    # name: (input per-sample shape, bj f, complex-safe NumPy f, expected per-sample out shape)
    "scalar-scalar": ((), lambda x: bj.sin(x) * x, lambda x: np.sin(x) * x, ()),
    "scalar-vector": ((3,), lambda x: bj.sum(bj.tanh(x)), lambda x: np.tanh(x).sum(-1), ()),
    "scalar-matrix": ((2, 3), lambda x: bj.sum(x * x), lambda x: (x * x).sum((1, 2)), ()),
    "vector-scalar": ((), lambda x: bj.reshape(x, (-1, 1)) * _v, lambda x: x[:, None] * _v, (3,)),
    "vector-vector": ((3,), bj.softmax, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True), (3,)),
    "vector-matrix": ((2, 3), lambda x: x @ _v, lambda x: x @ _v, (2,)),
    "matrix-scalar": ((), lambda x: bj.reshape(x, (-1, 1, 1)) * _C, lambda x: x[:, None, None] * _C, (2, 3)),
    "matrix-vector": ((3,), lambda x: bj.reshape(x, (-1, 3, 1)) * bj.reshape(x, (-1, 1, 3)),
                      lambda x: x[:, :, None] * x[:, None, :], (3, 3)),
    "matrix-matrix": ((2, 3), lambda x: bj.exp(x) * x, lambda x: np.exp(x) * x, (2, 3)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(NINE))
@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_nine_derivative_classes(name, layout, backend, on_device, rng, dtype):
    in_shape, f, f_np, out_shape = NINE[name]
    B = 4
    x = rng.standard_normal((B, *in_shape))
    J = bj.jacobian(f, on_device(x.astype(dtype)), method="exact", layout=layout)
    reference = complex_step_jacobian(f_np, x)
    assert reference.shape == (B, *out_shape, *in_shape)  # math.md's table
    if layout == "denominator":
        n_out = len(out_shape)
        axes = (0, *range(1 + n_out, reference.ndim), *range(1, 1 + n_out))
        reference = reference.transpose(axes)
        assert J.shape == (B, *in_shape, *out_shape)
    assert_close(J, reference, rtol=RTOL[dtype])


# --------------------------------------------------------------------------------------
# Graphs: several paths, several arguments, structure
# --------------------------------------------------------------------------------------


def test_total_derivative_sums_the_paths(backend, on_device, rng, dtype):
    x = rng.standard_normal((5, 4))
    D = bj.jacobian(lambda x: x + x**2, on_device(x.astype(dtype)), method="exact", structured=True)
    assert isinstance(D, bj.Diagonal)
    assert_close(D.diagonal(), 1 + 2 * x, rtol=RTOL[dtype])  # math.md example 4
    _check(lambda x: x * x, lambda x: x * x, [x], on_device, dtype, structured_type=bj.Diagonal)


def test_diamond_graph_with_a_shared_intermediate(backend, on_device, rng, dtype):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    dW = on_device(W.astype(dtype))

    def f(x):
        h = bj.tanh(bj.linear(x, dW))
        g = bj.softmax(h) * h + bj.sin(h) * bj.linear(h, dW)
        return bj.log_softmax(g + x)

    def f_np(x):
        h = np.tanh(x @ W.T)
        e = np.exp(h - h.real.max(-1, keepdims=True))
        g = e / e.sum(-1, keepdims=True) * h + np.sin(h) * (h @ W.T) + x
        e = np.exp(g - g.real.max(-1, keepdims=True))
        return np.log(e / e.sum(-1, keepdims=True))

    _check(f, f_np, [x], on_device, dtype)


def test_several_arguments(backend, on_device, rng, dtype):
    x, y, z = rng.uniform(0.5, 2, (3, 4, 3))

    def f(x, y, z):
        return bj.sum(x * bj.exp(y) / z, axis=-1) + bj.dot(x, y)

    def f_np(x, y, z):
        return np.sum(x * np.exp(y) / z, axis=-1) + np.sum(x * y, -1)

    Js = bj.jacobian(f, *(on_device(a.astype(dtype)) for a in (x, y, z)), argnums=(0, 1, 2), method="exact")
    assert isinstance(Js, tuple) and len(Js) == 3
    for argnum, J in enumerate(Js):
        assert_close(J, complex_step_jacobian(f_np, x, y, z, argnum=argnum), rtol=RTOL[dtype])


def test_argument_the_output_does_not_depend_on(backend, on_device, rng):
    x, y = rng.standard_normal((2, 3, 4))
    Jx, Jy = bj.jacobian(lambda x, y: bj.tanh(x), on_device(x), on_device(y), argnums=(0, 1), method="exact")
    assert_close(Jy, np.zeros((3, 4, 4)))
    assert_close(Jx, np.einsum("bi,ij->bij", 1 - np.tanh(x) ** 2, np.eye(4)))


def test_identity_function(backend, on_device, rng):
    x = rng.standard_normal((2, 3))
    J = bj.jacobian(lambda x: x, on_device(x), method="exact", structured=True)
    assert isinstance(J, bj.Identity)
    assert_close(J.to_dense(), np.broadcast_to(np.eye(3), (2, 3, 3)))


def test_structure_is_kept(backend, on_device, rng):
    x = on_device(rng.standard_normal((4, 6)))
    W = on_device(rng.standard_normal((3, 6)))
    chain = bj.jacobian(
        lambda x: bj.sigmoid(bj.tanh(bj.exp(bj.sin(x)) * 2.0) + 1.0), x, method="exact", structured=True
    )
    assert isinstance(chain, bj.Diagonal)
    assert isinstance(
        bj.jacobian(lambda x: x * x - bj.cos(x), x, method="exact", structured=True), bj.Diagonal
    )
    assert isinstance(bj.jacobian(lambda x: bj.linear(x, W), x, method="exact", structured=True), bj.Shared)
    mlp = bj.jacobian(
        lambda x: bj.linear(bj.tanh(bj.linear(x, W)), on_device(np.ones((2, 3)))),
        x,
        method="exact",
        structured=True,
    )
    assert isinstance(mlp, bj.Dense) and "chain of 3 factors" in mlp.plan.explain()


def test_batch_of_zero_and_one(backend, on_device, rng, dtype):
    W = on_device(rng.standard_normal((3, 4)).astype(dtype))
    f = lambda x: bj.softmax(bj.linear(bj.tanh(x), W))  # noqa: E731
    for B in (0, 1):
        x = rng.standard_normal((B, 4))
        J = bj.jacobian(f, on_device(x.astype(dtype)), method="exact")
        assert J.shape == (B, 3, 4)
        assert_close(
            J, complex_step_jacobian(lambda x: _softmax_np(np.tanh(x) @ to_numpy(W).T), x), rtol=RTOL[dtype]
        )


def _softmax_np(z):
    e = np.exp(z - z.real.max(-1, keepdims=True)) if z.size else np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_inputs_are_not_modified_and_may_be_strided_or_read_only(backend, on_device, rng):
    base = rng.standard_normal((6, 8))
    x = on_device(base)[::2, ::2]
    if hasattr(x, "flags") and isinstance(x, np.ndarray):
        x.flags.writeable = False
    before = to_numpy(x).copy()
    J = bj.jacobian(lambda x: bj.exp(x) * bj.sum(x, axis=-1, keepdims=True), x, method="exact")
    assert np.array_equal(to_numpy(x), before)
    assert_close(J, complex_step_jacobian(lambda x: np.exp(x) * x.sum(-1, keepdims=True), before))


def test_integer_input_is_promoted(backend, on_device):
    x = on_device(np.arange(6).reshape(2, 3))
    J = bj.jacobian(lambda x: x * x, x, method="exact")
    assert to_numpy(J).dtype == np.float64
    assert_close(J, np.einsum("bi,ij->bij", 2.0 * np.arange(6).reshape(2, 3), np.eye(3)))


def test_value_and_jacobian_returns_the_value(backend, on_device, rng):
    x = rng.standard_normal((3, 4))
    y, J = bj.value_and_jacobian(lambda x: bj.tanh(x) * 3, on_device(x), method="exact")
    assert_close(y, np.tanh(x) * 3)
    assert_close(J, np.einsum("bi,ij->bij", 3 * (1 - np.tanh(x) ** 2), np.eye(4)))


def test_plain_arrays_give_values_only(rng):
    x = rng.standard_normal((3, 4))
    assert np.allclose(bj.tanh(x), np.tanh(x))
    assert np.allclose(bj.sum(x), x.sum(1))
    assert np.allclose(bj.softmax(x), _softmax_np(x))
    assert np.allclose(bj.transpose(x.reshape(3, 2, 2)), x.reshape(3, 2, 2).transpose(0, 2, 1))


# --------------------------------------------------------------------------------------
# Worked examples of math.md
# --------------------------------------------------------------------------------------


def test_worked_examples(backend, on_device):
    w = on_device(np.array([1.0, 2.0, 3.0]))
    y, g = bj.value_and_jacobian(
        lambda x: bj.dot(x, w), on_device(np.array([[5.0, 8.0, -1.0]])), method="exact"
    )
    assert to_numpy(y).tolist() == [18.0] and to_numpy(g).tolist() == [[1.0, 2.0, 3.0]]

    X0 = on_device(np.array([[[3.0, 2.0], [6.0, -4.0]]]))
    by_hand = lambda X: X[:, 0, 0] * X[:, 1, 1] - X[:, 0, 1] * X[:, 1, 0]  # noqa: E731
    for f in (by_hand, bj.det):
        assert_close(bj.jacobian(f, X0, method="exact"), [[[-4.0, -6.0], [-2.0, 3.0]]])

    x = np.array([3.0, -1.5])
    assert_close(bj.jacobian(lambda x: x**2, on_device(x), method="exact"), 2 * x)

    x = np.array([[0.5, -2.0, 3.0]])
    assert_close(bj.jacobian(lambda x: x + x**2, on_device(x), method="exact"), np.diag(1 + 2 * x[0])[None])

    wb = on_device(np.array([[1.0, -2.0]]))
    for point, expected in (([1.0, 0.0], 1.0), ([0.0, 1.0], 0.0)):
        neuron = lambda w, b, x: bj.relu(bj.dot(w, x) + b)  # noqa: E731
        dw, db = bj.jacobian(
            neuron, wb, on_device(np.array([0.5])), on_device(np.array([point])), argnums=(0, 1)
        )
        assert_close(dw, expected * np.array([point]))
        assert_close(db, [expected])


# --------------------------------------------------------------------------------------
# elementwise() and register_elementwise()
# --------------------------------------------------------------------------------------


def test_elementwise_value_and_diagonal(backend, on_device, rng, dtype):
    x = rng.standard_normal((4, 2, 3))
    y, D = bj.elementwise("tanh", on_device(x.astype(dtype)))
    assert isinstance(D, bj.Diagonal) and D.shape == (4, 6, 6) and to_numpy(D.d).dtype == np.dtype(dtype)
    assert_close(y, np.tanh(x), rtol=RTOL[dtype])
    assert_close(D.diagonal(), (1 - np.tanh(x) ** 2).reshape(4, 6), rtol=RTOL[dtype])
    u, v = rng.uniform(0.5, 2, (2, 3, 4))
    y, Du, Dv = bj.elementwise("div", on_device(u), on_device(v))
    assert_close(y, u / v)
    assert_close(Du.diagonal(), 1 / v)
    assert_close(Dv.diagonal(), -u / v**2)
    y, D = bj.elementwise("leaky_relu", on_device(-np.ones((1, 2))), alpha=0.2)
    assert_close(D.diagonal(), [[0.2, 0.2]])


def test_elementwise_errors(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="unknown element-wise operation 'nope'"):
        bj.elementwise("nope", x)
    with pytest.raises(ValueError, match=r"u and v must have one shape, got \(2, 3\) and \(2, 1\)"):
        bj.elementwise("mul", x, x[:, :1])
    with pytest.raises(TypeError, match="unknown parameter"):
        bj.elementwise("tanh", x, alpha=1.0)
    with pytest.raises(TypeError, match="expected 2 array"):
        bj.elementwise("mul", x)


@pytest.fixture
def registered():
    """Names registered by a test, removed afterwards so the rule tables stay as shipped."""
    from batchjac.core.elementwise_rules import UNARY

    names = []
    yield names
    for name in names:
        UNARY.pop(name, None)


def test_register_elementwise(backend, on_device, rng, registered):
    registered.append("swish_test")
    swish = bj.register_elementwise(
        "swish_test",
        lambda t: t / (1 + math.exp(-t)),
        lambda t: (1 + math.exp(-t) + t * math.exp(-t)) / (1 + math.exp(-t)) ** 2,
    )
    x = rng.standard_normal((3, 5))
    sig = _np_sigmoid(x)
    y, D = bj.elementwise("swish_test", on_device(x))
    assert_close(y, x * sig)
    assert_close(D.diagonal(), sig + x * sig * (1 - sig))
    _check(
        lambda x: bj.sum(swish(x) * x),
        lambda x: np.sum(x * _np_sigmoid(x) * x, -1),
        [x],
        on_device,
        np.float64,
    )
    y32, D32 = bj.elementwise("swish_test", on_device(x.astype(np.float32)))
    assert to_numpy(y32).dtype == np.float32 and to_numpy(D32.d).dtype == np.float32


def test_register_elementwise_errors(registered):
    registered.extend(["bad_fn", "bad_df"])
    with pytest.raises(ValueError, match="built-in"):
        bj.register_elementwise("tanh", lambda t: t, lambda t: 1.0)
    with pytest.raises(ValueError, match="identifier"):
        bj.register_elementwise("not a name", lambda t: t, lambda t: 1.0)
    with pytest.raises(TypeError, match="numba cannot compile"):
        bj.register_elementwise("bad_fn", lambda t: {"a": t}, lambda t: 1.0)
    with pytest.raises(TypeError, match="expected a scalar Python function"):
        bj.register_elementwise("bad_df", lambda t: t, 3)


# --------------------------------------------------------------------------------------
# Errors and functions that do not trace
# --------------------------------------------------------------------------------------


def test_numpy_calls_without_a_rule_do_not_trace(rng):
    x = rng.standard_normal((2, 3))
    for f in (
        lambda x: np.sort(x, axis=-1),
        lambda x: np.asarray(x) * 2,
        lambda x: np.sum(x),  # NumPy's axis=None would sum over the batch too
        lambda x: float(x[:, 0]),
        lambda x: x.tolist(),
    ):
        with pytest.raises(bj.TraceError):
            bj.jacobian(f, x, method="exact")


def test_auto_falls_back_to_numerical_with_a_warning(rng):
    x = rng.standard_normal((3, 4))
    with pytest.warns(bj.NumericalFallbackWarning, match="numpy.sort.*does not trace.*complex-step"):
        J = bj.jacobian(lambda x: np.sort(np.sin(x) * 2, axis=-1)[:, ::-1][:, ::-1], x[:, :1], method="auto")
    assert_close(J, 2 * np.cos(x[:, :1])[:, :, None], rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bj.jacobian(lambda x: bj.sin(x) * 2, x, method="auto")  # traces: no warning


def test_call_errors(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="method: expected one of"):
        bj.jacobian(bj.tanh, x, method="magic")
    with pytest.raises(ValueError, match="layout: expected"):
        bj.jacobian(bj.tanh, x, layout="sideways")
    with pytest.raises(ValueError, match="argnums"):
        bj.jacobian(bj.tanh, x, argnums=3)
    with pytest.raises(ValueError, match="structured=True needs the exact method"):
        bj.jacobian(bj.tanh, x, method="central", structured=True)
    with pytest.raises(ValueError, match="argument 1: batch size 2 differs from x's 3"):
        bj.jacobian(lambda a, b: a * b[:1].sum(), x, x[:2], argnums=(0, 1))
    with pytest.raises(TypeError, match="x: expected real floating-point"):
        bj.jacobian(bj.tanh, x.astype(complex))
    with pytest.raises(TypeError, match="f: expected a callable"):
        bj.jacobian(3, x)


def test_operations_that_would_mix_samples_raise(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="axis 0 is the batch axis"):
        bj.jacobian(lambda x: bj.sum(x, axis=0), x, method="exact")
    with pytest.raises(IndexError, match="batch axis"):
        bj.jacobian(lambda x: x[0], x, method="exact")
    with pytest.raises(ValueError, match="keep the batch axis first"):
        bj.jacobian(lambda x: bj.reshape(x, (4, 3)), x, method="exact")
    square = rng.standard_normal((4, 4))
    with pytest.raises(ValueError, match="would mix samples"):
        bj.jacobian(lambda x: x + bj.sum(x), square, method="exact")
    with pytest.raises(ValueError, match="keeps the batch axis 0 first"):
        bj.jacobian(lambda x: bj.transpose(x, (1, 0)), x, method="exact")


# --------------------------------------------------------------------------------------
# The planner inside the exact Jacobian
# --------------------------------------------------------------------------------------


def _tanh_mlp(sizes, rng, on_device):
    weights = [on_device(rng.standard_normal((m, n)) / np.sqrt(n)) for n, m in zip(sizes[:-1], sizes[1:])]

    def f(x):
        for i, W in enumerate(weights):
            x = bj.linear(x, W)
            if i < len(weights) - 1:
                x = bj.tanh(x)
        return x

    def dense_product(x):
        J, h = np.broadcast_to(np.eye(sizes[0]), (len(x), sizes[0], sizes[0])), x
        for i, W in enumerate(map(to_numpy, weights)):
            h = h @ W.T
            J = W @ J
            if i < len(weights) - 1:
                J = (1 - np.tanh(h) ** 2)[:, :, None] * J
                h = np.tanh(h)
        return J

    return f, dense_product


@pytest.mark.parametrize(
    "sizes, order",
    [([784, 1024, 1024, 10], "((((J5 J4) J3) J2) J1)"), ([10, 1024, 784], "(J3 (J2 J1))")],
    ids=["classifier-reverse", "decoder-forward"],
)
def test_traced_chains_take_the_cheapest_order(sizes, order, backend, on_device, rng):
    f, dense_product = _tanh_mlp(sizes, rng, on_device)
    x = rng.standard_normal((3, sizes[0]))
    J = bj.jacobian(f, on_device(x), method="exact", structured=True)
    assert J.plan.order == order
    assert f"chain of {2 * len(sizes) - 3} factors" in J.plan.explain() and J.plan.flops > 0
    assert_close(J.to_dense(), dense_product(x))


# --------------------------------------------------------------------------------------
# Regressions from review: each of these once gave a silently wrong result or broke "auto"
# --------------------------------------------------------------------------------------


def test_equality_comparisons_are_element_wise_under_tracing(rng):
    x = np.array([[0.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    f = lambda x: bj.where(x == 0, 1.0, x) * 2  # noqa: E731
    y, J = bj.value_and_jacobian(f, x, method="exact")
    np.testing.assert_array_equal(y, f(x))
    assert_close(J, np.einsum("bi,ij->bij", 2.0 * (x != 0), np.eye(3)))
    g = lambda x: bj.where(x != 0, x * x, 0.0)  # noqa: E731
    assert_close(bj.jacobian(g, x, method="exact"), np.einsum("bi,ij->bij", 2 * x * (x != 0), np.eye(3)))
    assert (
        np.zeros(3) == bj.jacobian(lambda x: bj.where(np.zeros(3) == x, x, 2 * x), x)[0].diagonal()
    ).sum() == 0


@pytest.mark.parametrize("S", [1, 2])
def test_linear_with_leading_positions_and_a_per_sample_bias(S, rng):
    x, W, b = rng.standard_normal((3, S, 4)), rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    expected = x @ W.T + b[:, None, :]
    np.testing.assert_allclose(bj.linear(x, W, b), expected, rtol=1e-14)
    y, Jb = bj.value_and_jacobian(lambda b: bj.linear(x, W, b), b, method="exact")
    np.testing.assert_allclose(y, expected, rtol=1e-14)
    assert_close(Jb, complex_step_jacobian(lambda b: x @ W.T + b[:, None, :], b))


def test_advanced_indices_separated_by_a_slice_keep_samples_apart(rng):
    x = rng.standard_normal((2, 3, 4, 5))  # B = 2 equals the length of the index lists
    key = (slice(None), [0, 1], slice(None), [1, 2])
    expected = np.stack([sample[key[1:]] for sample in x])
    y, J = bj.value_and_jacobian(lambda x: x[key], x, method="exact")
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(bj.take(x, key), expected)
    assert_close(J, complex_step_jacobian(lambda x: np.stack([s[key[1:]] for s in x]), x))


def test_a_returned_jacobian_never_shares_memory_with_the_callers_weights(rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((3, 5, 4))
    J = bj.jacobian(lambda x: bj.linear(x, W), x, method="exact")
    assert not np.shares_memory(J, W)
    J *= 0  # the caller may write into the result
    assert np.abs(W).sum() > 0
    shared = np.broadcast_to(W[0], (3, 5, 4))
    J = bj.jacobian(lambda x: bj.linear(x, shared), x, method="exact")
    assert J.flags.writeable and not np.shares_memory(J, shared)


def _diag(d):
    return np.einsum("bi,ij->bij", d, np.eye(d.shape[1]))


# NumPy idioms that leave batchjac's array functions: f, and its Jacobian in closed form
UNTRACEABLE = {
    "asarray": (lambda x: np.asarray(x) * 2, lambda x: _diag(np.full_like(x, 2.0))),
    "sort": (lambda x: np.sort(x, axis=1), lambda x: np.eye(x.shape[1])[np.argsort(x, axis=1)]),
    "tolist": (lambda x: np.array(x.tolist()) * 2, lambda x: _diag(np.full_like(x, 2.0))),
    "mod": (lambda x: x % 2.0, lambda x: _diag(np.ones_like(x))),
    "floordiv": (lambda x: x // 2.0 + x, lambda x: _diag(np.ones_like(x))),
    "fft": (lambda x: np.fft.ifft(np.fft.fft(x, axis=1), axis=1).real, lambda x: _diag(np.ones_like(x))),
}


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")  # astype drops the imaginary part
@pytest.mark.filterwarnings("ignore:f is not complex-safe")  # the second fallback, to central
@pytest.mark.parametrize("name", sorted(UNTRACEABLE))
def test_numpy_idioms_fall_back_under_auto_and_refuse_under_exact(name, rng):
    f, closed_form = UNTRACEABLE[name]
    x = rng.uniform(0.5, 1.5, (3, 4))
    with pytest.raises(bj.TraceError):
        bj.jacobian(f, x, method="exact")
    with pytest.warns(bj.NumericalFallbackWarning, match="does not trace"):
        J = bj.jacobian(f, x, method="auto")
    assert_close(J, closed_form(x), rtol=1e-6)


def test_builtin_abs_and_sum_keepdims_trace(rng):
    x = rng.uniform(0.5, 1.5, (2, 3)) * np.array([1, -1, 1])
    assert_close(
        bj.jacobian(lambda x: abs(x), x, method="exact"), np.einsum("bi,ij->bij", np.sign(x), np.eye(3))
    )
    J = bj.jacobian(lambda x: x * x.sum(axis=1, keepdims=True), x, method="exact")
    assert_close(J, complex_step_jacobian(lambda x: x * x.sum(axis=1, keepdims=True), x))


def test_structured_results_need_tracing_and_follow_the_layout(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(bj.TraceError):
        bj.jacobian(lambda x: np.sort(x, axis=-1), x, method="auto", structured=True)
    W = rng.standard_normal((4, 3))
    J = bj.jacobian(lambda x: bj.linear(x, W), x, structured=True, layout="denominator")
    assert J.shape == (2, 3, 4)
    assert_close(J.to_dense(), np.broadcast_to(W.T, (2, 3, 4)))


def test_numpy_integer_argnums_and_division_by_zero(rng):
    x, y = rng.standard_normal((2, 3, 2))
    J = bj.jacobian(lambda x, y: x * y, x, y, argnums=np.int64(1))
    assert_close(J, np.einsum("bi,ij->bij", x, np.eye(2)))
    with np.errstate(divide="ignore"):
        D = bj.jacobian(lambda x: x / 0.0, x, method="exact", structured=True)
    assert np.all(np.isinf(D.diagonal()))
