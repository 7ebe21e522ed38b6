"""NumPy's own functions, ufuncs and array methods on traced arrays, and batchjac's array
functions: exact Jacobians against independent references, in both batch modes.

Each case is a function written once with NumPy (for a whole batch, axes counted from the
end, so the same text is valid per sample under ``per_sample=True``). The reference is the
complex step of that NumPy function in float64, or, where the function is not analytic in
the complex plane (``abs``, ``norm``, ``var``, ``slogdet``, ``cholesky``...), the complex step
of an analytic equivalent written out in the test, or a closed form. The value under
tracing must equal NumPy's own value of ``f``; float32 is checked against the float64
reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian
from tracing_references import jax_jacobian

import batchjac as bj
from batchjac.core.errors import NumericalFallbackWarning, TraceError

B = 3
W = np.random.default_rng(7).standard_normal((5, 4))
M4 = np.random.default_rng(8).standard_normal((4, 4)) / 2
V4 = np.random.default_rng(9).standard_normal(4)


def _inputs(rng, shape, domain):
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "unit":
        return rng.uniform(-0.9, 0.9, shape)
    if domain == "above1":
        return rng.uniform(1.2, 3.0, shape)
    if domain == "distinct":  # distinct entries: no ties for max/min/clip kinks
        flat = rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 1.0
        return flat + rng.uniform(-0.01, 0.01, shape)
    if domain == "invertible":
        return rng.standard_normal(shape) + 2.5 * np.eye(shape[-1])
    raise ValueError(domain)


def _spd(xp, x):
    """A symmetric positive-definite matrix from each matrix of ``x``."""
    return x @ xp.swapaxes(x, -1, -2) + 3.0 * np.eye(x.shape[-1])


def _cholesky_reference(A):
    """Cholesky-Banachiewicz without conjugation: analytic, so its complex step is exact."""
    n = A.shape[-1]
    L = np.zeros_like(A)
    for j in range(n):
        L[..., j, j] = np.sqrt(A[..., j, j] - np.sum(L[..., j, :j] ** 2, axis=-1))
        for i in range(j + 1, n):
            L[..., i, j] = (A[..., i, j] - np.sum(L[..., i, :j] * L[..., j, :j], axis=-1)) / L[..., j, j]
    return L


def _real_sign(x):
    return np.sign(x.real)


ZERO = "zero"  # the derivative is zero wherever it exists (floor, sign, ...)

# name, f(xp, x), input shape, domain, reference (None: complex step of f; a function of x:
# complex step of that analytic equivalent; ZERO), both modes
CASES = [
    # ufuncs (NEP 13), unary
    ("sin", lambda xp, x: xp.sin(x), (B, 3, 4), "real", None),
    ("cos", lambda xp, x: xp.cos(x), (B, 3, 4), "real", None),
    ("tan", lambda xp, x: xp.tan(x), (B, 3, 4), "unit", None),
    ("arcsin", lambda xp, x: xp.arcsin(x), (B, 3, 4), "unit", None),
    ("arccos", lambda xp, x: xp.arccos(x), (B, 3, 4), "unit", None),
    ("arctan", lambda xp, x: xp.arctan(x), (B, 3, 4), "real", None),
    ("sinh", lambda xp, x: xp.sinh(x), (B, 3, 4), "real", None),
    ("cosh", lambda xp, x: xp.cosh(x), (B, 3, 4), "real", None),
    ("tanh", lambda xp, x: xp.tanh(x), (B, 3, 4), "real", None),
    ("arcsinh", lambda xp, x: xp.arcsinh(x), (B, 3, 4), "real", None),
    ("arccosh", lambda xp, x: xp.arccosh(x), (B, 3, 4), "above1", None),
    ("arctanh", lambda xp, x: xp.arctanh(x), (B, 3, 4), "unit", None),
    ("exp", lambda xp, x: xp.exp(x), (B, 3, 4), "real", None),
    ("exp2", lambda xp, x: xp.exp2(x), (B, 3, 4), "real", None),
    ("expm1", lambda xp, x: xp.expm1(x), (B, 3, 4), "real", None),
    ("log", lambda xp, x: xp.log(x), (B, 3, 4), "positive", None),
    ("log2", lambda xp, x: xp.log2(x), (B, 3, 4), "positive", None),
    ("log10", lambda xp, x: xp.log10(x), (B, 3, 4), "positive", None),
    ("log1p", lambda xp, x: xp.log1p(x), (B, 3, 4), "positive", None),
    ("sqrt", lambda xp, x: xp.sqrt(x), (B, 3, 4), "positive", None),
    ("square", lambda xp, x: xp.square(x), (B, 3, 4), "real", None),
    ("reciprocal", lambda xp, x: xp.reciprocal(x), (B, 3, 4), "positive", None),
    ("negative", lambda xp, x: xp.negative(x), (B, 3, 4), "real", None),
    ("positive", lambda xp, x: xp.positive(x) * 2, (B, 3, 4), "real", None),
    ("deg2rad", lambda xp, x: xp.deg2rad(x), (B, 3, 4), "real", lambda x: x * (np.pi / 180)),
    ("rad2deg", lambda xp, x: xp.rad2deg(x), (B, 3, 4), "real", lambda x: x * (180 / np.pi)),
    ("absolute", lambda xp, x: xp.abs(x), (B, 3, 4), "real", lambda x: x * _real_sign(x)),
    ("fabs", lambda xp, x: xp.fabs(x), (B, 3, 4), "real", lambda x: x * _real_sign(x)),
    ("sign", lambda xp, x: xp.sign(x) + x, (B, 3, 4), "real", lambda x: x),
    ("floor", lambda xp, x: xp.floor(x) + x, (B, 3, 4), "distinct", lambda x: x),
    ("ceil", lambda xp, x: xp.ceil(x) * x, (B, 3, 4), "distinct", lambda x: np.ceil(x.real) * x),
    ("rint", lambda xp, x: xp.rint(x) * x, (B, 3, 4), "distinct", lambda x: np.rint(x.real) * x),
    ("round", lambda xp, x: xp.round(x) * x, (B, 3, 4), "distinct", lambda x: np.rint(x.real) * x),
    (
        "scipy expit",
        lambda xp, x: _scipy_special().expit(x),
        (B, 3, 4),
        "real",
        lambda x: 1 / (1 + np.exp(-x)),
    ),
    # ufuncs, binary (the second operand a traced function of x, a constant, a number)
    ("add", lambda xp, x: xp.add(x, xp.flip(x, axis=-1)), (B, 3, 4), "real", None),
    ("subtract", lambda xp, x: xp.subtract(x, 2 * xp.roll(x, 1, axis=-1)), (B, 3, 4), "real", None),
    ("multiply", lambda xp, x: xp.multiply(x, xp.roll(x, 1, axis=-1)), (B, 3, 4), "real", None),
    ("divide", lambda xp, x: xp.divide(x, xp.roll(x, 1, axis=-1)), (B, 3, 4), "positive", None),
    ("power uv", lambda xp, x: xp.power(x, xp.roll(x, 1, axis=-1)), (B, 3, 4), "positive", None),
    ("power p", lambda xp, x: xp.power(x, 2.5), (B, 3, 4), "positive", None),
    ("power int", lambda xp, x: x**3, (B, 3, 4), "real", None),
    ("rpow", lambda xp, x: 2.0**x, (B, 3, 4), "real", None),
    ("maximum", lambda xp, x: xp.maximum(x, xp.flip(x, axis=-1)), (B, 3, 4), "distinct", None),
    ("minimum", lambda xp, x: xp.minimum(x, 0.1), (B, 3, 4), "distinct", None),
    (
        "arctan2",
        lambda xp, x: xp.arctan2(x, xp.roll(x, 1, axis=-1)),
        (B, 3, 4),
        "positive",
        lambda x: np.arctan(x / np.roll(x, 1, axis=-1)),
    ),
    (
        "hypot",
        lambda xp, x: xp.hypot(x, xp.roll(x, 1, axis=-1)),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(x**2 + np.roll(x, 1, axis=-1) ** 2),
    ),
    (
        "logaddexp",
        lambda xp, x: xp.logaddexp(x, 0.5 * xp.roll(x, 1, axis=-1)),
        (B, 3, 4),
        "real",
        lambda x: np.log(np.exp(x) + np.exp(0.5 * np.roll(x, 1, axis=-1))),
    ),
    ("operators", lambda xp, x: (2 - x) * 3 / (1 + x * x) + (-x) ** 2 - +x, (B, 3, 4), "real", None),
    ("where", lambda xp, x: xp.where(x > 0, x**2, xp.sin(x)), (B, 3, 4), "distinct", None),
    ("where const", lambda xp, x: xp.where(x < 0.2, x, 0.0), (B, 3, 4), "distinct", None),
    ("clip", lambda xp, x: xp.clip(x, -0.5, 0.5) * x, (B, 3, 4), "distinct", None),
    (
        "comparisons",
        lambda xp, x: xp.where((x >= 0) & ~(x > 0.5) | (x == 1.7), x, 2 * x),
        (B, 3, 4),
        "distinct",
        None,
    ),
    # reductions
    ("sum", lambda xp, x: xp.sum(x, axis=-1), (B, 3, 4), "real", None),
    ("sum axes", lambda xp, x: xp.sum(x, axis=(-2, -1)), (B, 3, 4), "real", None),
    ("sum keepdims", lambda xp, x: xp.sum(x, axis=-2, keepdims=True) * x, (B, 3, 4), "real", None),
    ("mean", lambda xp, x: xp.mean(x, axis=-1), (B, 3, 4), "real", None),
    (
        "var",
        lambda xp, x: xp.var(x, axis=-1),
        (B, 3, 4),
        "real",
        lambda x: np.mean((x - np.mean(x, axis=-1, keepdims=True)) ** 2, axis=-1),
    ),
    (
        "var ddof",
        lambda xp, x: xp.var(x, axis=-2, ddof=1),
        (B, 3, 4),
        "real",
        lambda x: np.sum((x - np.mean(x, axis=-2, keepdims=True)) ** 2, axis=-2) / 2,
    ),
    (
        "std",
        lambda xp, x: xp.std(x, axis=-1, keepdims=True),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(np.mean((x - np.mean(x, axis=-1, keepdims=True)) ** 2, axis=-1, keepdims=True)),
    ),
    ("prod", lambda xp, x: xp.prod(x, axis=-1), (B, 3, 4), "real", None),
    ("max", lambda xp, x: xp.max(x, axis=-1), (B, 3, 4), "distinct", None),
    ("min", lambda xp, x: xp.min(x, axis=-2, keepdims=True), (B, 3, 4), "distinct", None),
    ("amax", lambda xp, x: xp.amax(x, axis=(-2, -1)), (B, 3, 4), "distinct", None),
    ("amin", lambda xp, x: xp.amin(x, axis=-1), (B, 3, 4), "distinct", None),
    ("cumsum", lambda xp, x: xp.cumsum(x, axis=-1), (B, 3, 4), "real", None),
    ("cumsum -2", lambda xp, x: xp.cumsum(x, axis=-2), (B, 3, 4), "real", None),
    ("add.reduce", lambda xp, x: xp.add.reduce(x, axis=-1), (B, 3, 4), "real", None),
    ("add.accumulate", lambda xp, x: xp.add.accumulate(x, axis=-1), (B, 3, 4), "real", None),
    ("diff", lambda xp, x: xp.diff(x, n=2, axis=-1), (B, 3, 4), "real", None),
    ("average", lambda xp, x: xp.average(x, axis=-1), (B, 3, 4), "real", None),
    (
        "norm",
        lambda xp, x: xp.linalg.norm(x, axis=-1),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(np.sum(x**2, axis=-1)),
    ),
    (
        "norm 1",
        lambda xp, x: xp.linalg.norm(x, ord=1, axis=-1),
        (B, 3, 4),
        "real",
        lambda x: np.sum(x * _real_sign(x), axis=-1),
    ),
    (
        "norm 3",
        lambda xp, x: xp.linalg.norm(x, ord=3, axis=-1),
        (B, 3, 4),
        "real",
        lambda x: np.sum((x * _real_sign(x)) ** 3, axis=-1) ** (1 / 3),
    ),
    (
        "norm inf",
        lambda xp, x: xp.linalg.norm(x, ord=np.inf, axis=-1),
        (B, 3, 4),
        "distinct",
        lambda x: np.max(x * _real_sign(x), axis=-1),
    ),
    (
        "norm fro",
        lambda xp, x: xp.linalg.norm(x, axis=(-2, -1)),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(np.sum(x**2, axis=(-2, -1))),
    ),
    (
        "matrix_norm",
        lambda xp, x: xp.linalg.matrix_norm(x),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(np.sum(x**2, axis=(-2, -1))),
    ),
    (
        "argmax mask",
        lambda xp, x: xp.where(
            xp.argmax(x, axis=-1)[..., None] == xp.arange(4), x, xp.argmin(x, axis=-1)[..., None] * x
        ),
        (B, 3, 4),
        "distinct",
        lambda x: np.where(
            np.argmax(x.real, -1)[..., None] == np.arange(4), x, np.argmin(x.real, -1)[..., None] * x
        ),
    ),
    (
        "vector_norm",
        lambda xp, x: xp.linalg.vector_norm(x, axis=-1),
        (B, 3, 4),
        "real",
        lambda x: np.sqrt(np.sum(x**2, axis=-1)),
    ),
    ("softmax", lambda xp, x: xp.exp(x) / xp.sum(xp.exp(x), axis=-1, keepdims=True), (B, 3, 4), "real", None),
    ("log-sum-exp", lambda xp, x: xp.log(xp.sum(xp.exp(x), axis=-1)), (B, 3, 4), "real", None),
    # shapes and moves
    ("reshape", lambda xp, x: xp.reshape(x, x.shape[:-2] + (2, 6)), (B, 3, 4), "real", None),
    ("swapaxes", lambda xp, x: xp.swapaxes(x, -1, -2), (B, 3, 4), "real", None),
    ("moveaxis", lambda xp, x: xp.moveaxis(x[..., None], -1, -3), (B, 3, 4), "real", None),
    ("matrix_transpose", lambda xp, x: xp.matrix_transpose(x), (B, 3, 4), "real", None),
    ("expand_dims", lambda xp, x: xp.expand_dims(x, -2), (B, 3, 4), "real", None),
    ("squeeze", lambda xp, x: xp.squeeze(x[..., :1, :], axis=-2), (B, 3, 4), "real", None),
    (
        "broadcast_to",
        lambda xp, x: xp.broadcast_to(x[..., None, :], x.shape[:-1] + (2, 4)),
        (B, 3, 4),
        "real",
        None,
    ),
    ("stack", lambda xp, x: xp.stack([x, x**2], axis=-1), (B, 3, 4), "real", None),
    ("concatenate", lambda xp, x: xp.concatenate([x, xp.sin(x[..., :2])], axis=-1), (B, 3, 4), "real", None),
    ("column_stack", lambda xp, x: xp.column_stack([x[..., 0], x[..., 1] ** 2]), (B, 4), "real", None),
    (
        "split",
        lambda xp, x: xp.split(x, 2, axis=-1)[1] * xp.split(x, [1], axis=-1)[0],
        (B, 3, 4),
        "real",
        None,
    ),
    ("flip", lambda xp, x: xp.flip(x, axis=-1), (B, 3, 4), "real", None),
    ("roll", lambda xp, x: xp.roll(x, (1, -1), axis=(-2, -1)), (B, 3, 4), "real", None),
    ("repeat", lambda xp, x: xp.repeat(x, 2, axis=-1), (B, 3, 4), "real", None),
    ("repeat counts", lambda xp, x: xp.repeat(x, [1, 0, 2], axis=-2), (B, 3, 4), "real", None),
    ("take", lambda xp, x: xp.take(x, [3, 0, 0], axis=-1), (B, 3, 4), "real", None),
    ("triu", lambda xp, x: xp.triu(x, 1), (B, 3, 4), "real", None),
    ("tril", lambda xp, x: xp.tril(x, -1), (B, 3, 4), "real", None),
    ("diagonal", lambda xp, x: xp.diagonal(x, 1, axis1=-2, axis2=-1), (B, 3, 4), "real", None),
    ("trace", lambda xp, x: xp.trace(x, axis1=-2, axis2=-1), (B, 3, 4), "real", None),
    ("indexing", lambda xp, x: x[..., 1:, ::-2] * x[..., :1, [0, 0]], (B, 3, 4), "real", None),
    ("boolean index", lambda xp, x: x[..., np.array([True, False, True, True])], (B, 3, 4), "real", None),
    ("new axis", lambda xp, x: x[..., None, 2] * x[..., :, None, 1], (B, 3, 4), "real", None),
    (
        "zeros_like",
        lambda xp, x: x + xp.zeros_like(x) + xp.ones_like(x) * xp.full_like(x, 2.0),
        (B, 3, 4),
        "real",
        None,
    ),
    # products and linear algebra
    ("matmul const", lambda xp, x: x @ W.T, (B, 3, 4), "real", None),
    ("matmul const left", lambda xp, x: W @ xp.swapaxes(x, -1, -2), (B, 3, 4), "real", None),
    ("matmul traced", lambda xp, x: x @ xp.swapaxes(x, -1, -2), (B, 3, 4), "real", None),
    ("matmul vector", lambda xp, x: x @ V4, (B, 3, 4), "real", None),
    ("matvec", lambda xp, x: xp.matvec(M4, x), (B, 3, 4), "real", None),
    ("dot", lambda xp, x: xp.dot(x, V4) + xp.sum(xp.dot(x, M4), axis=-1), (B, 3, 4), "real", None),
    ("inner const", lambda xp, x: xp.inner(x, V4), (B, 3, 4), "real", None),
    (
        "vecdot",
        lambda xp, x: xp.vecdot(x, xp.cos(x)),
        (B, 3, 4),
        "real",
        lambda x: np.sum(x * np.cos(x), axis=-1),
    ),
    ("tensordot", lambda xp, x: xp.tensordot(x, M4, axes=1), (B, 3, 4), "real", None),
    ("einsum", lambda xp, x: xp.einsum("...ij,jk,...k->...i", x, M4, x[..., 0, :]), (B, 3, 4), "real", None),
    ("einsum implicit", lambda xp, x: xp.einsum("...j,...j", x, x), (B, 3, 4), "real", None),
    ("einsum diagonal", lambda xp, x: xp.einsum("...ii->...i", x[..., :3]), (B, 3, 4), "real", None),
    ("cross", lambda xp, x: xp.cross(x[..., :3], x[..., 1:]), (B, 3, 4), "real", None),
    ("det", lambda xp, x: xp.linalg.det(x), (B, 2, 3, 3), "invertible", None),
    (
        "slogdet",
        lambda xp, x: xp.linalg.slogdet(_spd(xp, x))[1],
        (B, 2, 3, 3),
        "real",
        lambda x: np.log(np.linalg.det(_spd(np, x))),
    ),
    ("inv", lambda xp, x: xp.linalg.inv(x), (B, 2, 3, 3), "invertible", None),
    ("solve matrix", lambda xp, x: xp.linalg.solve(x, xp.sin(x[..., :2])), (B, 2, 3, 3), "invertible", None),
    ("solve shared b", lambda xp, x: xp.linalg.solve(x, M4[:3, :2]), (B, 2, 3, 3), "invertible", None),
    ("solve shared vector", lambda xp, x: xp.linalg.solve(x, V4[:3]), (B, 2, 3, 3), "invertible", None),
    (
        "solve shared A",
        lambda xp, x: xp.linalg.solve(M4 + 3 * np.eye(4), x[..., :4, :]),
        (B, 4, 3),
        "real",
        None,
    ),
    (
        "cholesky",
        lambda xp, x: xp.linalg.cholesky(_spd(xp, x)),
        (B, 2, 3, 3),
        "real",
        lambda x: _cholesky_reference(_spd(np, x)),
    ),
    ("matrix_power", lambda xp, x: xp.linalg.matrix_power(x, 3), (B, 2, 3, 3), "real", None),
    ("matrix_power -2", lambda xp, x: xp.linalg.matrix_power(x, -2), (B, 2, 3, 3), "invertible", None),
    (
        "pad constant",
        lambda xp, x: xp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 0), (0, 2)], constant_values=3.0),
        (B, 3, 4),
        "real",
        None,
    ),
    (
        "pad reflect",
        lambda xp, x: xp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 2), (2, 1)], mode="reflect"),
        (B, 3, 4),
        "real",
        None,
    ),
    (
        "pad edge",
        lambda xp, x: xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 1)], mode="edge"),
        (B, 3, 4),
        "real",
        None,
    ),
    (
        "pad wrap",
        lambda xp, x: xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(3, 1)], mode="wrap"),
        (B, 3, 4),
        "real",
        None,
    ),
    (
        "pad symmetric",
        lambda xp, x: xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(2, 2)], mode="symmetric"),
        (B, 3, 4),
        "real",
        None,
    ),
]

# the function depends on the number of axes f sees (pad widths, tile reps): batched mode only
BATCHED_ONLY = {"pad constant", "pad reflect", "pad edge", "pad wrap", "pad symmetric", "column_stack"}


def _scipy_special():
    return pytest.importorskip("scipy.special")


def _reference(f, reference, x):
    if reference is None:
        return complex_step_jacobian(lambda z: f(np, z), x)
    if reference is ZERO:
        return np.zeros(np.shape(f(np, x)) + x.shape[1:])
    return complex_step_jacobian(reference, x)


def _exact(f, x, per_sample):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, no NumPy warning
        return bj.value_and_jacobian(lambda t: f(np, t), x, method="exact", per_sample=per_sample)


@pytest.mark.parametrize("name, f, shape, domain, reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("per_sample", [False, True], ids=["batched", "per_sample"])
def test_numpy_functions_trace_exactly_in_float64(name, f, shape, domain, reference, per_sample, rng):
    if per_sample and name in BATCHED_ONLY:
        pytest.skip("written for the batch's axes")
    x = _inputs(rng, shape, domain)
    expected = _reference(f, reference, x)
    y, J = _exact(f, x, per_sample)
    np.testing.assert_allclose(y, f(np, x), rtol=1e-13, atol=1e-13)  # NumPy's own value of f
    assert J.dtype == np.float64
    assert_close(J, expected, rtol=1e-11)


@pytest.mark.parametrize("name, f, shape, domain, reference", CASES, ids=[c[0] for c in CASES])
def test_numpy_functions_trace_in_float32(name, f, shape, domain, reference, rng):
    if name in ("scipy expit",):
        pytest.skip("SciPy computes expit of float32 in float32 either way; covered in float64")
    x = _inputs(rng, shape, domain)
    expected = _reference(f, reference, x)
    x32 = x.astype(np.float32)
    y, J = _exact(f, x32, per_sample=False)
    assert y.dtype == f(np, x32).dtype  # NumPy's promotion (float64 constants give float64)
    assert J.dtype == np.result_type(y.dtype, np.float32)
    tolerance = 3e-4 if name in ("inv", "matrix_power -2", "solve matrix", "power uv", "cholesky") else 5e-5
    assert_close(J, expected, rtol=tolerance)


@pytest.mark.parametrize("name, f, shape, domain, reference", CASES, ids=[c[0] for c in CASES])
def test_numpy_functions_agree_with_jax_in_float64(name, f, shape, domain, reference, rng):
    """A second, independent reference: the same text run by JAX (``jax.numpy``)."""
    x = _inputs(rng, shape, domain)
    try:
        expected = jax_jacobian(f, x)
    except (AttributeError, NotImplementedError, TypeError) as err:  # JAX lacks this NumPy function
        pytest.skip(f"jax.numpy cannot run this case: {err}")
    assert_close(bj.jacobian(lambda t: f(np, t), x, method="exact"), expected, rtol=1e-11)


@pytest.mark.parametrize(
    "name, f",
    [
        ("tile", lambda xp, x: xp.tile(x, 2)),
        ("pad", lambda xp, x: xp.pad(x, ((1, 0), (0, 2)), constant_values=((1.0, 2.0), (3.0, 4.0)))),
        ("ravel", lambda xp, x: xp.ravel(x) * x.flatten()),
        ("transpose", lambda xp, x: xp.transpose(x) + x.T),
        ("vstack", lambda xp, x: xp.vstack([x, x**2])),
        ("atleast_3d", lambda xp, x: xp.atleast_3d(x[0])),
        ("outer", lambda xp, x: xp.outer(x[0], x[1])),
        ("linalg.outer", lambda xp, x: xp.linalg.outer(x[0], x[1])),
        ("diag", lambda xp, x: xp.diag(x[0], 1)[:3, :3] + xp.diag(xp.diag(x[:, :3]))),
        ("dot matrices", lambda xp, x: xp.dot(x, x.T)),
        (
            "full reductions",
            lambda xp, x: xp.sum(x) * xp.mean(x) + x.max() - x.min() + x.std() + xp.prod(x[0]),
        ),
        ("cumsum flat", lambda xp, x: xp.cumsum(x)),
        ("repeat flat", lambda xp, x: xp.repeat(x, 2)),
        ("roll flat", lambda xp, x: xp.roll(x, 3)),
        ("flip all", lambda xp, x: xp.flip(x)),
        ("norm of matrix", lambda xp, x: xp.linalg.norm(x) * x),
        ("indexing", lambda xp, x: x[0, 1] * x[1:, ::-1]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_numpy_idioms_of_one_sample_under_per_sample(name, f, rng):
    """Code written for one sample (axis=None, .T, x[0], outer, diag): the Jacobian of each
    sample, against the complex step of the function mapped over the samples."""
    x = rng.standard_normal((B, 3, 4))

    def per_sample_loop(z):
        return np.stack([f(np, s) for s in z])

    reference = f
    if name in ("full reductions", "norm of matrix"):  # max, min, std, norm: analytic stand-ins

        def reference(xp, s):
            flat = s.ravel()
            top, bottom = flat[np.argmax(flat.real)], flat[np.argmin(flat.real)]
            centred = s - np.mean(s)
            if name == "norm of matrix":
                return np.sqrt(np.sum(s * s)) * s
            return np.sum(s) * np.mean(s) + top - bottom + np.sqrt(np.mean(centred * centred)) + np.prod(s[0])

    expected = complex_step_jacobian(lambda z: np.stack([reference(np, s) for s in z]), x)
    y, J = _exact(f, x, per_sample=True)
    np.testing.assert_allclose(y, per_sample_loop(x), rtol=1e-13, atol=1e-13)
    assert_close(J, expected, rtol=1e-11)


def test_softmax_with_an_axis_and_the_numpy_spelling_agree_with_the_closed_form(rng):
    x = rng.standard_normal((B, 3, 4))
    for axis in (-1, -2, 1, 2):
        s = np.exp(x) / np.sum(np.exp(x), axis=axis, keepdims=True)
        J = bj.jacobian(lambda t: bj.softmax(t, axis=axis), x, method="exact")
        J_numpy = bj.jacobian(
            lambda t: np.exp(t) / np.sum(np.exp(t), axis=axis, keepdims=True), x, method="exact"
        )
        J_log = bj.jacobian(lambda t: bj.log_softmax(t, axis=axis), x, method="exact")
        # closed forms: ds_i/dx_j = s_i (delta_ij - s_j) along the axis, 0 across it
        a = axis % 3 - 1  # the per-sample axis
        same_line = np.ones((3, 4, 3, 4), dtype=bool)
        for i0, i1, j0, j1 in np.ndindex(3, 4, 3, 4):
            same_line[i0, i1, j0, j1] = (i1 == j1) if a == 0 else (i0 == j0)
        delta = np.einsum("ik,jl->ijkl", np.eye(3), np.eye(4))
        s_out = s[:, :, :, None, None]
        s_in = s[:, None, None, :, :]
        assert_close(J, same_line * s_out * (delta - s_in))
        assert_close(J_numpy, same_line * s_out * (delta - s_in))
        assert_close(J_log, same_line * (delta - s_in))


def test_stacks_of_matrices_per_sample_for_matmul_det_slogdet_solve_inv(rng):
    X = rng.standard_normal((B, 2, 3, 3)) + 2.5 * np.eye(3)
    checks = {
        "matmul": lambda t: t @ t,
        "det": lambda t: bj.det(t),
        "slogdet": lambda t: bj.slogdet(t)[1],
        "solve": lambda t: bj.solve(t, t[..., 0]),
        "inv": lambda t: bj.inv(t),
    }
    references = {
        "matmul": lambda z: z @ z,
        "det": lambda z: np.linalg.det(z),
        "slogdet": lambda z: np.log(np.linalg.det(z) * np.sign(np.linalg.det(X))),
        "solve": lambda z: np.linalg.solve(z, z[..., :1])[..., 0],
        "inv": lambda z: np.linalg.inv(z),
    }
    for name, f in checks.items():
        assert_close(
            bj.jacobian(f, X, method="exact"), complex_step_jacobian(references[name], X), rtol=1e-11
        )


def test_a_per_sample_matrix_times_a_per_sample_vector(rng):
    X, v = rng.standard_normal((B, 3, 4)), rng.standard_normal((B, 4))
    J = bj.jacobian(lambda A, u: A @ u, X, v, argnums=(0, 1), per_sample=True, method="exact")
    assert_close(J[0], complex_step_jacobian(lambda A: np.einsum("bij,bj->bi", A, v), X))
    assert_close(J[1], X)
    # batched mode: NumPy would contract over the batch axis; the message says how to write it
    with pytest.raises(ValueError, match=r"x\[\.\.\., None\]"):
        bj.jacobian(lambda A, u: A @ u, X, v, argnums=(0, 1), method="exact")
    J = bj.jacobian(lambda A, u: (A @ u[..., None])[..., 0], X, v, argnums=(0, 1), method="exact")
    assert_close(J[0], complex_step_jacobian(lambda A: np.einsum("bij,bj->bi", A, v), X))
    assert_close(J[1], X)


def test_quadratic_form_beyond_vectors(rng):
    x, A = rng.standard_normal((B, 2, 4)), rng.standard_normal((4, 4))
    A_per_sample = rng.standard_normal((B, 4, 4))
    expected = complex_step_jacobian(lambda z: np.einsum("bsi,ij,bsj->bs", z, A, z), x)
    assert_close(bj.jacobian(lambda t: bj.quadratic_form(t, A), x, method="exact"), expected)
    expected = complex_step_jacobian(lambda z: np.einsum("bsi,bij,bsj->bs", z, A_per_sample, z), x)
    assert_close(bj.jacobian(lambda t: bj.quadratic_form(t, A_per_sample), x, method="exact"), expected)
    J_A = bj.jacobian(lambda a: bj.quadratic_form(x, a), A_per_sample, method="exact")
    assert_close(J_A, np.einsum("bsi,bsj->bsij", x, x))


def test_numpy_linalg_solve_follows_numpy_2_for_a_batch_of_vectors(rng):
    """NumPy 2 reads b (B, n) as one matrix whose rows are the samples: refused with the fix."""
    A, b = rng.standard_normal((B, 4, 4)) + 3 * np.eye(4), rng.standard_normal((B, 4))
    for right in (lambda t: t[..., 0], lambda t: b):
        with pytest.raises(ValueError, match=r"b\[\.\.\., None\]"):
            bj.jacobian(lambda t: np.linalg.solve(t, right(t)), A, method="exact")
    J = bj.jacobian(lambda t: bj.solve(t, b), A, method="exact")  # batchjac's own: a vector per sample
    assert_close(J, complex_step_jacobian(lambda z: np.linalg.solve(z, b[..., None])[..., 0], A))
    J = bj.jacobian(lambda t: np.linalg.solve(t, t[..., :1])[..., 0], A, method="exact")
    assert_close(J, complex_step_jacobian(lambda z: np.linalg.solve(z, z[..., :1])[..., 0], A))


def test_structured_solve_uses_the_jacobian_structure(rng):
    d, r = rng.uniform(1, 2, (B, 4)), rng.standard_normal((B, 4))
    assert_close(bj.solve(bj.Diagonal(d), r), r / d)
    J = bj.jacobian(lambda t: np.tanh(t) + t @ W[:4].T, r, structured=True)
    assert_close(bj.solve(J, r), np.linalg.solve(J.to_dense(), r[..., None])[..., 0])


def test_determinant_gradient_at_singular_matrices_is_the_cofactor_matrix():
    X = np.array([[[1.0, 2.0], [2.0, 4.0]], [[3.0, 2.0], [6.0, -4.0]]])  # singular, then math.md's example
    cofactor = np.array([[[4.0, -2.0], [-2.0, 1.0]], [[-4.0, -6.0], [-2.0, 3.0]]])
    assert_close(bj.grad(lambda t: np.linalg.det(t))(X), cofactor)
    assert_close(bj.jacobian(lambda t: np.linalg.det(t), X, method="exact"), cofactor)
    X3 = np.array([[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]]])  # rank 2
    expected = complex_step_jacobian(lambda z: np.linalg.det(z), X3)
    assert_close(bj.grad(lambda t: np.linalg.det(t))(X3), expected)


def test_product_derivatives_are_exact_with_zero_entries():
    x = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 2.0], [1.0, 2.0, 3.0]])
    expected = np.array([[6.0, 0.0, 0.0], [0.0, 0.0, 0.0], [6.0, 3.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(bj.jacobian(lambda t: np.prod(t, axis=-1), x, method="exact"), expected)
        assert_close(bj.grad(lambda t: np.prod(t, axis=-1))(x), expected)


def test_methods_of_traced_arrays(rng):
    x = 0.01 * rng.standard_normal((B, 3, 4)) + np.arange(12).reshape(3, 4) / 3  # increasing entries
    methods = [  # (traced, analytic equivalent for the complex step), each one number per sample
        (lambda t: t.mT.sum(axis=(-2, -1)), lambda z: z.sum(axis=(-2, -1))),
        (lambda t: t.max(axis=-1).sum(axis=-1), lambda z: z[..., -1].sum(axis=-1)),
        (lambda t: t.min(axis=(-2, -1)), lambda z: z[..., 0, 0]),
        (lambda t: t.astype(np.float64).mean(axis=(-2, -1)), lambda z: z.mean(axis=(-2, -1))),
        (lambda t: t.prod(axis=-1).sum(axis=-1), lambda z: z.prod(axis=-1).sum(axis=-1)),
        (lambda t: t[..., :1, :].squeeze()[..., 0], lambda z: z[..., 0, 0]),
        (lambda t: t.cumsum(axis=-1)[..., -1, -1], lambda z: z[..., -1, :].sum(axis=-1)),
        (lambda t: t.clip(-100, 100).sum(axis=(-2, -1)), lambda z: z.sum(axis=(-2, -1))),
        (
            lambda t: t.var(axis=-1).sum(axis=-1),
            lambda z: np.mean((z - z.mean(-1, keepdims=True)) ** 2, -1).sum(-1),
        ),
        (
            lambda t: t.std(axis=-1).sum(axis=-1),
            lambda z: np.sqrt(np.mean((z - z.mean(-1, keepdims=True)) ** 2, -1)).sum(-1),
        ),
        (
            lambda t: t.swapaxes(-1, -2)[..., 0, 1] + t.transpose(0, 2, 1)[..., 1, 0],
            lambda z: z[..., 1, 0] + z[..., 0, 1],
        ),
        (
            lambda t: t.reshape(B, 12)[..., 5] + t.reshape(-1, 4, 3)[..., 0, 2],
            lambda z: z[..., 1, 1] + z[..., 0, 2],
        ),
        (lambda t: t.dot(np.arange(4.0)).sum(axis=-1), lambda z: (z @ np.arange(4.0)).sum(axis=-1)),
        (
            lambda t: t.diagonal(axis1=-2, axis2=-1).sum(axis=-1) + t.trace(axis1=-2, axis2=-1),
            lambda z: 2 * np.trace(z, axis1=-2, axis2=-1),
        ),
        (
            lambda t: t.real[..., 0, 0] + t.conj()[..., 0, 1] + t.copy()[..., 0, 2] + t.imag[..., 0, 3],
            lambda z: z[..., 0, 0] + z[..., 0, 1] + z[..., 0, 2],
        ),
        (lambda t: t.round()[..., 0, 0] * t[..., 0, 0], lambda z: np.rint(z[..., 0, 0].real) * z[..., 0, 0]),
        (
            lambda t: t.argmax(axis=-1).astype(np.float64).sum(axis=-1) * t[..., 0, 0],
            lambda z: 9.0 * z[..., 0, 0],
        ),
    ]
    for traced, analytic in methods:
        J = bj.jacobian(traced, x, method="exact")
        assert_close(J, complex_step_jacobian(analytic, x), rtol=1e-11)


def test_every_registered_numpy_function_and_ufunc_is_exercised_or_listed():
    """A guard: the tables of what traces are the ones these tests and the README cover."""
    from batchjac.exact.ops.array_methods import NUMPY_FUNCTIONS, UFUNCS

    tested_text = open(__file__).read()
    missing = [
        f.__name__ for f in NUMPY_FUNCTIONS
        if f"xp.{f.__name__}(" not in tested_text and f"xp.linalg.{f.__name__}(" not in tested_text
        and f.__name__ not in ("copy", "real", "conj", "conjugate", "ndim", "shape", "size", "result_type",
                               "iscomplexobj", "isrealobj", "empty_like", "hstack", "amax", "amin", "around",
                               "atleast_1d", "atleast_2d", "linalg_trace", "linalg_diagonal", "matmul")
    ]  # fmt: skip
    assert not missing, f"NumPy functions with a rule but no test here: {missing}"
    assert {"sin", "arctan2", "hypot", "logaddexp", "vecdot", "matvec", "expit"} <= set(UFUNCS)


# --------------------------------------------------------------------------------------
# What does not trace raises TraceError naming the call (and method="auto" falls back)
# --------------------------------------------------------------------------------------

UNTRACEABLE = [
    ("numpy.sort", lambda t: np.sort(t, axis=-1)),
    ("numpy.fft.fft", lambda t: np.fft.fft(t).real),
    ("numpy.linalg.eigh", lambda t: np.linalg.eigh(t[..., None] * t[..., None, :])[0]),
    ("numpy.remainder", lambda t: np.mod(t, 2.0)),
    ("numpy.cbrt", lambda t: np.cbrt(t)),
    ("numpy.exp", lambda t: np.exp(t, where=t > 0)),
    ("numpy.multiply.outer", lambda t: np.multiply.outer(t, t)),
    ("numpy.take_along_axis", lambda t: np.take_along_axis(t, np.zeros((B, 1), int), axis=-1)),
    ("numpy.round with decimals", lambda t: np.round(t, 2)),
    (
        "numpy.pad with reflect_type",
        lambda t: np.pad(t, ((0, 0), (1, 1)), mode="reflect", reflect_type="odd"),
    ),
    ("pad: mode='linear_ramp'", lambda t: np.pad(t, ((0, 0), (1, 1)), mode="linear_ramp")),
    ("numpy.average with weights", lambda t: np.average(t, axis=-1, weights=np.ones(3))),
    ("numpy.sum with out=", lambda t: np.sum(t, axis=-1, out=np.empty(B))),
    ("numpy.multiply with out=", lambda t: np.multiply(t, 2, out=np.empty((B, 3)))),
    ("the ufunc gamma", lambda t: _scipy_special().gamma(t)),
    ("the operator %", lambda t: t % 2),
    ("the operator in", lambda t: t * (1.0 in t)),
    ("iterating over a traced array", lambda t: sum(t)),
    ("cannot be written into", lambda t: t.__setitem__((slice(None), 0), 0.0) or t),
    ("converted to a NumPy array", lambda t: np.asarray(t) * 2),
    ("numpy.sum with axis=None", lambda t: np.sum(t) * t),
    ("numpy.ndarray.sum with axis=None", lambda t: t.sum()),
    ("numpy.ndarray.max with axis=None", lambda t: t.max()),
    ("numpy.std with axis=None", lambda t: t.std()),
    ("transpose (.T) of a batch", lambda t: t.T @ t),
    ("numpy.vstack", lambda t: np.vstack([t, t])),
]


@pytest.mark.parametrize("name, f", UNTRACEABLE, ids=[u[0] for u in UNTRACEABLE])
def test_what_does_not_trace_raises_a_trace_error_naming_it(name, f, rng):
    x = rng.standard_normal((B, 3))
    with pytest.raises(TraceError, match=_escaped(name)):
        bj.jacobian(f, x, method="exact")


def _escaped(text):
    import re

    return re.escape(text)


def test_auto_falls_back_with_a_warning_naming_the_call_and_a_right_value(rng):
    x = rng.standard_normal((B, 4))
    with pytest.warns(NumericalFallbackWarning, match=r"numpy\.sort"):
        J = bj.jacobian(lambda t: np.sort(t, axis=-1) * 2.0, x)
    order = np.argsort(x, axis=-1)
    expected = np.zeros((B, 4, 4))
    for b in range(B):
        expected[b, np.arange(4), order[b]] = 2.0
    assert_close(J, expected, rtol=1e-10)


def test_metadata_functions_read_the_shape_that_f_sees(rng):
    x = rng.standard_normal((B, 3, 4))
    seen = {}

    def f(t):
        seen.update(ndim=np.ndim(t), shape=np.shape(t), size=np.size(t), dtype=np.result_type(t, np.float32))
        return t * 2

    bj.jacobian(f, x, method="exact")
    assert seen == {"ndim": 3, "shape": (B, 3, 4), "size": B * 12, "dtype": np.dtype(np.float64)}
    bj.jacobian(f, x, method="exact", per_sample=True)
    assert seen["shape"] == (3, 4) and seen["ndim"] == 2
