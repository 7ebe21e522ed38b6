"""Complex safety of complex-step Jacobians (issue 13, items 2 and 16).

A NumPy function that drops imaginary parts gives a wrong complex-step Jacobian; the check
of :mod:`batchjac.numerical.differences` must see it at every sample, along every
column, and ``method="auto"`` must then fall back to central differences, which are right.
References are float64 closed forms written here (``sign``, ``where``), independent of the
library; float32 and float64, batches of 0, 1 and many samples.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj
from batchjac.core.errors import NotComplexSafeError, NumericalFallbackWarning
from batchjac.numerical import differences
from batchjac.numerical.differences import numerical_value_and_jacobian

DTYPES = (np.float64, np.float32)
# central differences in float64 / float32 against the closed forms
CENTRAL_RTOL = {np.float64: 1e-8, np.float32: 5e-3}


def _away_from_zero(rng, shape, dtype):
    """Entries in +-[0.5, 2]: every kink of abs is farther than any step."""
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(dtype)


def _diag(d):
    return d[:, :, None] * np.eye(d.shape[1])


# f, its closed-form Jacobian (float64) -- each drops an imaginary part somewhere.
NOT_COMPLEX_SAFE = {
    "abs": (np.abs, lambda x: _diag(np.sign(x))),
    "concatenate_100t_abs": (
        lambda t: np.concatenate([100 * t, np.abs(t)], axis=1),
        lambda x: np.concatenate([_diag(100 * np.ones_like(x)), _diag(np.sign(x))], axis=1),
    ),
    "t_plus_005_abs": (lambda t: t + 0.05 * np.abs(t), lambda x: _diag(1 + 0.05 * np.sign(x))),
    "relu_by_abs": (lambda t: (t + np.abs(t)) / 2, lambda x: _diag((x > 0).astype(float))),
    "conj": (lambda t: (t * np.conj(t)).sum(axis=1, keepdims=True), lambda x: 2 * x[:, None, :]),
    "norm": (
        lambda t: np.linalg.norm(t, axis=1, keepdims=True),
        lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True))[:, None, :],
    ),
    "sign": (lambda t: t * np.sign(t), lambda x: _diag(np.sign(x))),
    "real_part": (lambda t: np.real(t) ** 3, lambda x: _diag(3 * x**2)),
    "cast_to_float": (lambda t: (t.real**2).astype(t.real.dtype), lambda x: _diag(2 * x)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", list(NOT_COMPLEX_SAFE))
def test_functions_that_drop_imaginary_parts_are_refused_and_auto_falls_back(name, dtype, rng):
    f, jacobian = NOT_COMPLEX_SAFE[name]
    x = _away_from_zero(rng, (9, 4), dtype)
    with pytest.raises(NotComplexSafeError, match=r"f is not complex-safe.*use method='central'"):
        numerical_value_and_jacobian(f, (x,), 0, "complex-step")
    # auto is right whichever way it goes: traced (NumPy functions trace), or numerical,
    # when the complex-step check sends it to central differences with a warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        J = bj.jacobian(f, x, method="auto")
    assert_close(J, jacobian(x.astype(np.float64)), rtol=CENTRAL_RTOL[dtype])
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, NumericalFallbackWarning)]
    if fallbacks:  # numerical: complex step was refused, central differences served
        assert fallbacks[-1].endswith("using method='central'")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_auto_on_an_untraceable_function_that_drops_imaginary_parts_falls_back_to_central(dtype, rng):
    def f(t):  # np.asarray leaves the trace; abs drops the imaginary part
        return np.concatenate([100 * np.asarray(t), np.abs(np.asarray(t))], axis=1)

    x = _away_from_zero(rng, (6, 3), dtype)
    with pytest.warns(NumericalFallbackWarning, match=r"f is not complex-safe .*; using method='central'"):
        J = bj.jacobian(f, x, method="auto")
    assert_close(
        J, NOT_COMPLEX_SAFE["concatenate_100t_abs"][1](x.astype(np.float64)), rtol=CENTRAL_RTOL[dtype]
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_a_branch_that_only_the_last_sample_takes_is_caught(dtype, rng):
    # Only sample 40 of 41 reaches the branch through abs: the old check looked at the
    # first 8 samples only.
    def f(t):
        return np.where(t.real > 5, np.abs(t) * t, t**2)

    x = _away_from_zero(rng, (41, 3), dtype)
    x[40, 1] = 6.0
    with pytest.raises(NotComplexSafeError, match=r"at sample 40, output 1 of the flattened sample"):
        numerical_value_and_jacobian(f, (x,), 0, "complex-step")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalFallbackWarning)
        J = bj.jacobian(f, x, method="auto")
    x64 = x.astype(np.float64)
    expected = _diag(np.where(x64 > 5, 2 * np.abs(x64), 2 * x64))
    assert_close(J, expected, rtol=CENTRAL_RTOL[dtype])


def test_only_one_column_dropping_its_imaginary_part_is_caught(rng):
    # abs acts on column 3 of 6 only: a check along one fixed direction could miss it
    # (the old check tolerated 10 %); here the error is 5 % of one column.
    def f(t):
        return np.stack(
            [t[:, 0] * t[:, 1], t[:, 2] + 0.05 * np.abs(t[:, 3]), np.sin(t[:, 4] * t[:, 5])], axis=1
        )

    x = _away_from_zero(rng, (16, 6), np.float64)
    with pytest.raises(NotComplexSafeError, match=r"output 1 of the flattened sample"):
        numerical_value_and_jacobian(f, (x,), 0, "complex-step")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("batch", [1, 30])
def test_smooth_functions_pass_and_match_closed_forms(dtype, batch, rng):
    # Hard but complex-safe cases: large third derivatives, near-poles, high frequency,
    # quantities far from 1; none may be refused.
    cases = {
        "exp20": (lambda t: np.exp(20 * t), lambda x: _diag(20 * np.exp(20 * x))),
        "reciprocal": (lambda t: 1 / t, lambda x: _diag(-1 / x**2)),
        "sin100": (lambda t: np.sin(100 * t), lambda x: _diag(100 * np.cos(100 * x))),
        "tiny": (lambda t: 1e-30 * np.tanh(t), lambda x: _diag(1e-30 * (1 - np.tanh(x) ** 2))),
        "huge": (lambda t: 1e30 * np.tanh(t), lambda x: _diag(1e30 * (1 - np.tanh(x) ** 2))),
        "x7": (lambda t: (t**7).sum(axis=1, keepdims=True), lambda x: (7 * x**6)[:, None, :]),
    }
    x = _away_from_zero(rng, (batch, 5), dtype) / 2
    for f, jacobian in cases.values():
        _, (J,) = numerical_value_and_jacobian(f, (x,), 0, "complex-step")
        assert_close(J, jacobian(x.astype(np.float64)), rtol=1e-4 if dtype == np.float32 else 1e-12)


def test_an_ignored_argument_has_a_zero_jacobian_not_a_complex_safety_error(rng):
    # f ignores w: complex w gives a real output, which used to read as "not complex-safe".
    x, w = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    value, (Jx, Jw) = numerical_value_and_jacobian(lambda x, w: 2 * x, (x, w), (0, 1), "complex-step")
    assert_close(value, 2 * x)
    assert_close(Jx, _diag(2 * np.ones_like(x)))
    assert np.array_equal(Jw, np.zeros((5, 3, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        J = bj.jacobian(lambda x, w: 2 * x, x, w, argnums=1, method="auto")
    assert np.array_equal(J, np.zeros((5, 3, 2)))
    assert not [w for w in caught if "complex-safe" in str(w.message)]  # no complex-step fallback


def test_a_real_output_that_depends_on_the_argument_is_refused_saying_so(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(NotComplexSafeError, match=r"it returned real data for complex input"):
        numerical_value_and_jacobian(lambda t: np.abs(t) + 1, (x,), 0, "complex-step")


def test_a_type_error_on_complex_input_is_refused_saying_so(rng):
    x = rng.uniform(1, 2, (3, 2))
    with pytest.raises(NotComplexSafeError, match=r"f does not accept complex input: .*use method='central'"):
        numerical_value_and_jacobian(np.floor, (x,), 0, "complex-step")  # floor takes no complex


@pytest.mark.parametrize("batch", [0, 1])
def test_empty_and_single_sample_batches(batch, rng):
    x = _away_from_zero(rng, (batch, 3), np.float64)
    if batch:
        with pytest.raises(NotComplexSafeError):
            numerical_value_and_jacobian(np.abs, (x,), 0, "complex-step")
    else:  # nothing to differentiate, nothing to refuse
        _, (J,) = numerical_value_and_jacobian(np.abs, (x,), 0, "complex-step")
        assert J.shape == (0, 3, 3)


def test_the_check_evaluates_every_sample_once_more_on_a_bounded_stack(rng):
    # Cost documented in the module docstring: 12 B real samples beside the n B complex
    # ones of the Jacobian, for a smooth f.
    calls = []

    def f(t):
        calls.append((t.shape[0], t.dtype.kind))
        return np.sin(t)

    x = rng.standard_normal((7, 4))
    numerical_value_and_jacobian(f, (x,), 0, "complex-step")
    real_rows = sum(rows for rows, kind in calls if kind == "f")
    complex_rows = sum(rows for rows, kind in calls if kind == "c")
    head, value, mixing = min(7, differences.HEAD_SAMPLES), 7, 2 * 7
    assert complex_rows == 4 * 7
    assert real_rows == head + value + mixing + 6 * differences.SAFETY_DIRECTIONS * 7
