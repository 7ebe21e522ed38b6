"""Issue 13 on traced arrays (items 1, 5, 7, 8, 10, 15, 16) and their kin: no silent wrong
Jacobian, no touched input, a clear error (a ``TraceError`` where ``method="auto"`` should
fall back) for every misuse.

References: closed forms (the derivatives of ``where``, ``relu``... are 0/1 masks) and the
complex step of NumPy code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian

import batchjac as bj
from batchjac.core.errors import NumericalFallbackWarning, TraceError


def _diagonal(d):
    return np.einsum("bi,ij->bij", d, np.eye(d.shape[-1]))


# --------------------------------------------------------------------------------------
# 1. where: the condition is a truth value, never a derivative
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        np.array([[2, 0, 1]]),
        np.array([[2.0, 0.0, -1.0]]),
        np.array([[np.nan, 0.0, 0.5]]),
        np.array([[True, False, True]]),
    ],
    ids=["int", "float", "nan", "bool"],
)
def test_where_takes_its_condition_as_truth_values(condition, rng):
    x = rng.standard_normal((4, 3))
    chosen = (condition != 0).astype(float)  # NaN is nonzero: true, as in NumPy
    for where in (bj.where, np.where):
        y, J = bj.value_and_jacobian(lambda t: where(condition, t, 3.0 * t), x, method="exact")
        np.testing.assert_array_equal(y, np.where(condition, x, 3.0 * x))
        assert_close(J, _diagonal(np.broadcast_to(chosen + 3.0 * (1 - chosen), (4, 3))))
    y, J = bj.value_and_jacobian(
        lambda t: np.where(t, t, 2.0 * t), np.array([[0.0, 1.5, -2.0]]), method="exact"
    )
    assert_close(J, _diagonal(np.array([[2.0, 1.0, 1.0]])))  # a traced float condition: t != 0


# --------------------------------------------------------------------------------------
# 5. NaN propagates through values and derivatives, first and second order
# --------------------------------------------------------------------------------------

KINKED = {
    "relu": lambda t: bj.relu(t),
    "maximum": lambda t: np.maximum(t, 0.0),
    "abs": lambda t: np.abs(t),
    "clip": lambda t: np.clip(t, -1.0, 1.0),
    "leaky_relu": lambda t: bj.leaky_relu(t),
    "elu": lambda t: bj.elu(t),
    "softplus": lambda t: bj.softplus(t),
    "max": lambda t: np.max(t, axis=-1, keepdims=True) * t,
    "norm": lambda t: np.linalg.norm(t, axis=-1, keepdims=True) * t,
    "softmax": lambda t: bj.softmax(t),
    "prod": lambda t: np.prod(t, axis=-1, keepdims=True) * t,
}


@pytest.mark.parametrize("name", sorted(KINKED))
def test_nan_propagates_through_the_value_and_the_jacobian(name):
    x = np.array([[np.nan, 0.5, -0.3], [0.2, -0.4, 0.9]])
    f = KINKED[name]
    with np.errstate(all="ignore"):
        y, J = bj.value_and_jacobian(f, x, method="exact")
        g = bj.grad(lambda t: np.sum(f(t), axis=-1))(x)
    assert np.isnan(y[0]).any() and np.isfinite(y[1]).all()
    assert np.isnan(J[0]).any() and np.isfinite(J[1]).all()
    assert np.isnan(g[0]).any() and np.isfinite(g[1]).all()
    assert_close(J[1:], complex_step_jacobian(lambda z: _analytic(name, z), x[1:]))


def _analytic(name, z):
    positive = z.real > 0
    return {
        "relu": np.where(positive, z, 0),
        "maximum": np.where(positive, z, 0),
        "abs": np.where(positive, z, -z),
        "clip": z,
        "leaky_relu": np.where(positive, z, 0.01 * z),
        "elu": np.where(positive, z, np.expm1(z)),
        "softplus": np.log1p(np.exp(z)),
        "max": z[..., 2:3] * z,
        "norm": np.sqrt(np.sum(z * z, axis=-1, keepdims=True)) * z,
        "softmax": np.exp(z) / np.sum(np.exp(z), axis=-1, keepdims=True),
        "prod": np.prod(z, axis=-1, keepdims=True) * z,
    }[name]


def test_nan_propagates_through_a_hessian():
    x = np.array([[np.nan, 0.5], [0.2, -0.4]])
    with np.errstate(all="ignore"):
        H = bj.hessian(lambda t: np.sum(bj.relu(t) ** 2 + np.sin(t), axis=-1), x)
    assert np.isnan(H[0, 0, 0]) and np.isfinite(H[1]).all()
    assert_close(H[1], np.diag([2.0 - np.sin(0.2), -np.sin(-0.4)]))


# --------------------------------------------------------------------------------------
# 7. Iterating over a traced array raises (it would run over the samples or leave the trace)
# --------------------------------------------------------------------------------------

ITERATIONS = {
    "sum": lambda t: sum(t),
    "for": lambda t: np.stack([row for row in t]),
    "list": lambda t: np.stack(list(t)),
    "unpacking": lambda t: (lambda a, *rest: a)(*t),
    "zip": lambda t: np.stack([a for a, _ in zip(t, t)]),
    "builtin max": lambda t: max(t),
    "in": lambda t: t * (0.5 in t),
    "enumerate": lambda t: np.stack([a * i for i, a in enumerate(t)]),
}


@pytest.mark.parametrize("name", sorted(ITERATIONS))
@pytest.mark.parametrize("per_sample", [False, True])
def test_iterating_over_a_traced_array_is_a_trace_error(name, per_sample, rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(TraceError, match="iterat|operator in"):
        bj.jacobian(ITERATIONS[name], x, method="exact", per_sample=per_sample)


def test_iteration_under_auto_falls_back_for_per_sample_code_and_gives_the_right_jacobian(rng):
    x = rng.standard_normal((4, 3))
    with pytest.warns(NumericalFallbackWarning, match="iterat"):
        J = bj.jacobian(lambda s: np.stack([a * a for a in s]), x, per_sample=True)
    assert_close(J, _diagonal(2 * x), rtol=1e-10)


# --------------------------------------------------------------------------------------
# 8. Results never hold the caller's arrays
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, f",
    [
        ("linear", lambda W: lambda t: bj.linear(t, W)),
        ("matmul", lambda W: lambda t: t @ W.T),
        ("einsum", lambda W: lambda t: np.einsum("ij,bj->bi", W, t)),
        ("dot", lambda W: lambda t: np.dot(t, W.T)),
    ],
)
def test_a_structured_jacobian_is_not_changed_by_updating_the_callers_weights(name, f, rng):
    x, W = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    original = W.copy()
    J = bj.jacobian(f(W), x, structured=True)
    W[...] = 0.0
    assert_close(J.to_dense(), np.broadcast_to(original, (3, 2, 4)))


# --------------------------------------------------------------------------------------
# 10. Axes out of range or repeated raise (never wrap around)
# --------------------------------------------------------------------------------------

BAD_AXES = {
    "transpose out of range": (lambda t: bj.transpose(t, (0, 7, 1, 2)), ValueError, r"out of range"),
    "transpose repeated": (lambda t: np.transpose(t, (0, 1, 1, 2)), ValueError, r"permutation"),
    "transpose moving the batch": (
        lambda t: bj.transpose(t, (1, 0, 2, 3)),
        ValueError,
        r"batch axis 0 first",
    ),
    "moveaxis out of range": (lambda t: np.moveaxis(t, 5, 1), ValueError, r"out of range"),
    "moveaxis repeated": (lambda t: np.moveaxis(t, (1, 2), (3, 3)), ValueError, r"repeated"),
    "swapaxes out of range": (lambda t: np.swapaxes(t, 1, 9), ValueError, r"out of range"),
    "swapaxes with the batch": (lambda t: np.swapaxes(t, 0, 1), ValueError, r"batch axis"),
    "sum out of range": (lambda t: np.sum(t, axis=4), ValueError, r"out of range"),
    "sum over the batch": (lambda t: np.sum(t, axis=0), ValueError, r"batch axis.*per_sample=True"),
    "sum repeated": (lambda t: np.sum(t, axis=(1, -3)), ValueError, r"repeated"),
    "softmax out of range": (lambda t: bj.softmax(t, axis=-5), ValueError, r"out of range"),
    "cumsum out of range": (lambda t: np.cumsum(t, axis=4), ValueError, r"out of range"),
    "flip out of range": (lambda t: np.flip(t, axis=4), ValueError, r"out of range"),
    "roll out of range": (lambda t: np.roll(t, 1, axis=4), ValueError, r"out of range"),
    "stack out of range": (lambda t: np.stack([t, t], axis=6), ValueError, r"out of range"),
    "concatenate over the batch": (lambda t: np.concatenate([t, t]), ValueError, r"batch axis"),
    "expand_dims out of range": (lambda t: np.expand_dims(t, 6), ValueError, r"out of range"),
    "squeeze a long axis": (lambda t: np.squeeze(t, axis=1), ValueError, r"length 1"),
    "index out of range": (lambda t: t[:, 5], IndexError, r"out of bounds"),
    "index the batch": (lambda t: t[0], IndexError, r"batch axis"),
    "reshape changing the batch": (lambda t: t.reshape(1, -1), ValueError, r"batch axis first"),
    "pad the batch": (lambda t: np.pad(t, 1), ValueError, r"batch axis cannot be padded"),
    "axis=None over the batch": (lambda t: np.max(t), TraceError, r"per_sample=True"),
}


@pytest.mark.parametrize("name", sorted(BAD_AXES))
def test_bad_axes_raise_and_name_the_function(name, rng):
    f, error, message = BAD_AXES[name]
    x = rng.standard_normal((2, 2, 3, 4))
    with pytest.raises(error, match=message):
        bj.jacobian(f, x, method="exact")


# --------------------------------------------------------------------------------------
# 15. Writing into a traced array; batchjac's own objects inside f
# --------------------------------------------------------------------------------------


def test_writing_into_a_traced_array_is_a_trace_error_and_auto_falls_back(rng):
    x = rng.standard_normal((3, 4))
    before = x.copy()

    def f(t):
        t[:, 0] = 0.0
        return t * 2.0

    with pytest.raises(TraceError, match="cannot be written into"):
        bj.jacobian(f, x, method="exact")
    with pytest.warns(NumericalFallbackWarning, match="cannot be written into"):
        J = bj.jacobian(f, x)
    assert_close(J, np.broadcast_to(np.diag([0.0, 2.0, 2.0, 2.0]), (3, 4, 4)), rtol=1e-10)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(TraceError, match="out="):
        bj.jacobian(lambda t: np.add(t, 1.0, out=t), x, method="exact")
    np.testing.assert_array_equal(x, before)


def test_batchjac_objects_inside_f_trace_or_say_why(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(TraceError, match=r"bj\.elementwise"):
        bj.jacobian(lambda t: bj.elementwise("tanh", t)[0], x, method="exact")
    nested = bj.jacobian(lambda t: bj.jacobian(np.sin, t), x, method="exact")  # nested: exact
    expected = np.zeros((3, 4, 4, 4))
    for i in range(4):
        expected[:, i, i, i] = -np.sin(x[:, i])
    assert_close(nested, expected)
    with pytest.raises(TraceError, match="method='central'"):
        bj.jacobian(lambda t: bj.jacobian(np.sin, t, method="central"), x, method="exact")


# --------------------------------------------------------------------------------------
# 16. Clear errors: leaked tracers, argnums, suggestions that exist, keywords checked
# --------------------------------------------------------------------------------------


def test_a_traced_array_leaked_from_an_earlier_call_is_a_trace_error(rng):
    x = rng.standard_normal((3, 4))
    leaked = []
    bj.jacobian(lambda t: (leaked.append(t), t * 2)[1], x)
    for use in (
        lambda: leaked[0] + 1.0,
        lambda: np.sin(leaked[0]),
        lambda: bj.jacobian(lambda t: t * leaked[0], x, method="exact"),
    ):
        with pytest.raises(TraceError, match="earlier call"):
            use()


@pytest.mark.parametrize(
    "argnums, error, message",
    [
        (1.0, TypeError, "argnums"),
        (None, TypeError, "argnums"),
        (2, ValueError, "argnums"),
        ((0, 0), ValueError, "distinct"),
    ],
)
def test_bad_argnums_name_the_argument(argnums, error, message, rng):
    x = rng.standard_normal((3, 2))
    with pytest.raises(error, match=message):
        bj.jacobian(lambda a, b: a * b, x, x, argnums=argnums)
    assert_close(bj.jacobian(lambda a, b: a * b, x, x, argnums=np.int64(1)), _diagonal(x))


@pytest.mark.parametrize(
    "keywords, error, message",
    [
        ({"chunk_size": -1}, ValueError, "chunk_size"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"layout": "num"}, ValueError, "layout"),
        ({"method": "exactly"}, ValueError, "method"),
        ({"structured": 1}, TypeError, "structured"),
        ({"per_sample": "yes"}, TypeError, "per_sample"),
    ],
)
def test_keywords_are_checked_even_when_f_traces(keywords, error, message, rng):
    with pytest.raises(error, match=message):
        bj.jacobian(np.sin, rng.standard_normal((3, 2)), **keywords)


def _refusal_messages(rng):
    x = rng.standard_normal((3, 4))
    calls = [
        lambda t: t.T,
        lambda t: t.flatten(),
        lambda t: np.outer(t, t),
        lambda t: np.diag(t),
        lambda t: np.inner(t, t),
        lambda t: np.sum(t),
        lambda t: np.vstack([t, t]),
        lambda t: np.atleast_2d(t[:, 0]),
        lambda t: np.abs(t) + np.sort(t),
        lambda t: t % 2,
        lambda t: t.tolist(),
        lambda t: np.linalg.solve(t[:, :, None] * t[:, None, :], t),
        lambda t: t @ t,
        lambda t: np.einsum("bi,bi->i", t, t),
        lambda t: t.reshape(-1),
        lambda t: np.pad(t, 1, mode="mean"),
    ]
    messages = []
    for f in calls:
        with pytest.raises((TraceError, ValueError, IndexError)) as info:
            bj.jacobian(f, x, method="exact")
        messages.append(str(info.value))
    return messages


def test_refusals_only_suggest_functions_that_exist(rng):
    for message in _refusal_messages(rng):
        for name in re.findall(r"\bbj\.([a-z_]+)", message):
            assert hasattr(bj, name), f"{message!r} suggests bj.{name}, which does not exist"
        for dotted in re.findall(r"\bnumpy\.([a-z0-9_.]+[a-z0-9])", message):
            target = np
            for part in dotted.split("."):
                target = getattr(target, part, None)
            assert target is not None, f"{message!r} suggests numpy.{dotted}, which does not exist"
        for method in re.findall(r"\bx\.([a-zA-Z_]+)", message):
            assert method in dir(np.ndarray), f"{message!r} suggests x.{method}"


def test_a_structured_constructor_on_a_traced_array_is_a_trace_error(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(TraceError, match="traced array was converted"):
        bj.jacobian(lambda t: bj.Dense(t[:, :, None] * t[:, None, :]), x, method="exact")


def test_a_string_parameter_of_an_element_wise_rule_is_named(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(TypeError, match="leaky_relu.*alpha must be a real number, got 'a'"):
        bj.elementwise("leaky_relu", x, alpha="a")
    with pytest.raises(TypeError, match="alpha"):
        bj.jacobian(lambda t: bj.leaky_relu(t, alpha="a"), x, method="exact")


@pytest.mark.parametrize("method", ["exact", "central"])
def test_the_backend_keyword_of_jacobian_wins_over_the_environment(rng, monkeypatch, method):
    x = rng.standard_normal((3, 4))
    monkeypatch.setenv("BATCHJAC_BACKEND", "numba")  # not available here: it would raise if it won
    J = bj.jacobian(lambda t: np.tanh(t), x, method=method, backend="numpy")
    assert_close(J, np.einsum("bi,ij->bij", 1 - np.tanh(x) ** 2, np.eye(4)), rtol=1e-8)


def test_nan_propagates_through_the_compiled_scalar_forms(rng):
    """The fused CPU kernel runs the rules' scalar forms (the GPU kernels are generated from
    the same): a NaN entry gives NaN value and derivative, the others are untouched."""
    x = rng.standard_normal((2, 6))
    x[0, 1] = x[1, 4] = np.nan
    f = lambda t: bj.relu(t) + bj.abs(t) + bj.leaky_relu(t, alpha=0.1)  # noqa: E731
    y, J = bj.value_and_jacobian(f, x, method="exact", fuse=True, structured=True)
    d = np.asarray(J.diagonal())
    nan = np.isnan(x)
    assert np.isnan(y[nan]).all() and np.isnan(d[nan]).all()
    expected = np.where(x > 0, 1.0, 0.0) + np.sign(x) + np.where(x > 0, 1.0, 0.1)
    assert_close(d[~nan], expected[~nan], rtol=1e-15)
    assert_close(y[~nan], (np.maximum(x, 0) + np.abs(x) + np.where(x > 0, x, 0.1 * x))[~nan], rtol=1e-15)
