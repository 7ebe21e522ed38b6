"""``bj.check_jacobian`` (issue 5): reports on a correct Jacobian, names the worst entry of a
wrong one, documented default tolerances; once per backend.

References are float64 closed forms computed with NumPy on the host.
"""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
from helpers import to_numpy

import batchjac as bj
from batchjac import checking
from batchjac.core.arrays import namespace

W = np.random.default_rng(7).standard_normal((4, 6))

# The defaults the checking module documents: (method, dtype) -> rtol.
DOCUMENTED_RTOL = {
    ("complex-step", np.float64): 1e-10,
    ("central", np.float64): 1e-6,
    ("forward", np.float64): 1e-4,
    ("complex-step", np.float32): 1e-4,
    ("central", np.float32): 1e-2,
    ("forward", np.float32): 5e-2,
}


def _layer(x):  # (B, 6) -> (B, 4): tanh(W x) * x[:4]
    return namespace(x).tanh(x @ namespace(x).asarray(W.T, dtype=x.dtype)) * x[:, :4]


def _layer_jacobian(x):
    t = np.tanh(x @ W.T)
    J = (1 - t**2)[:, :, None] * W * x[:, :4, None]
    J[:, np.arange(4), np.arange(4)] += t
    return J


def _matrix_square(X):
    return X @ X


def _matrix_square_jacobian(X):
    eye = np.eye(X.shape[1])
    return np.einsum("ik,blj->bijkl", eye, X) + np.einsum("bik,jl->bijkl", X, eye)


def _message_values(message):
    given, numerical = re.search(r"J = (\S+), numerical = (\S+),", message).groups()
    return float(given), float(numerical)


def test_a_correct_jacobian_passes_with_a_report(backend, on_device, rng):
    x = rng.standard_normal((5, 6))
    J = _layer_jacobian(x)
    report = bj.check_jacobian(_layer, on_device(x), J=on_device(J))
    assert isinstance(report, checking.JacobianCheck)
    assert report.method == "complex-step" and report.rtol == 1e-10
    assert report.atol == pytest.approx(1e-10 * np.abs(J).max())
    assert report.max_abs_error <= 1e-13 * max(1, np.abs(J).max())
    assert 0 <= report.max_rel_error < 1e-10
    w = report.worst
    assert 0 <= w.sample < 5 and len(w.output_index) == 1 and len(w.input_index) == 1
    assert w.given == J[(w.sample, *w.output_index, *w.input_index)]
    assert "complex-step" in str(report) and "max abs error" in str(report)


@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_one_wrong_entry_is_named_with_both_values(method, backend, on_device, rng):
    x = rng.standard_normal((5, 6))
    J = _layer_jacobian(x)
    bad = J.copy()
    bad[3, 2, 5] += 0.25
    with pytest.raises(AssertionError) as err:
        bj.check_jacobian(_layer, on_device(x), J=on_device(bad), method=method)
    message = str(err.value)
    assert "sample 3, output index (2,), input index (5,)" in message
    assert "in 1 of 120 entries" in message and method in message
    given, numerical = _message_values(message)
    assert given == bad[3, 2, 5]
    assert numerical == pytest.approx(J[3, 2, 5], rel=1e-4, abs=1e-6)


def test_matrix_input_and_output_indices_are_multi_indices(backend, on_device, rng):
    X = rng.standard_normal((4, 3, 3))
    J = _matrix_square_jacobian(X)
    bj.check_jacobian(_matrix_square, on_device(X), J=on_device(J))
    bad = J.copy()
    bad[1, 0, 2, 2, 1] = -7.5
    with pytest.raises(
        AssertionError, match=r"sample 1, output index \(0, 2\), input index \(2, 1\): J = -7\.5"
    ):
        bj.check_jacobian(_matrix_square, on_device(X), J=on_device(bad))


def test_a_structured_jacobian_is_compared_densely(backend, on_device, rng):
    X = rng.standard_normal((4, 3, 3))
    J = _matrix_square_jacobian(X).reshape(4, 9, 9)
    report = bj.check_jacobian(_matrix_square, on_device(X), J=bj.Dense(on_device(J)))
    assert report.max_abs_error < 1e-13 * np.abs(J).max()
    with pytest.raises(ValueError, match=r"J: expected a Jacobian of shape \(4, 9, 9\)"):
        bj.check_jacobian(_matrix_square, on_device(X), J=bj.Dense(on_device(J[:, :8])))


def test_a_jacobian_of_the_wrong_shape_is_a_value_error(backend, on_device, rng):
    x = rng.standard_normal((5, 6))
    J = _layer_jacobian(x)
    for wrong in (J.transpose(0, 2, 1), J[:4], J.reshape(5, 24)):
        with pytest.raises(ValueError, match=r"J: expected shape \(5, 4, 6\)"):
            bj.check_jacobian(_layer, on_device(x), J=on_device(wrong))


# The documented default atol: rtol max|N| + 100 eps^(1 - p) max|f(x)| / max(1, max|x|),
# p the method's step power (none for complex step), written out independently here.
STEP_POWER = {"complex-step": None, "central": 1 / 3, "forward": 1 / 2}


def documented_atol(method, dtype, rtol, J, y, x):
    rounding = 0.0
    if STEP_POWER[method] is not None:
        eps = np.finfo(dtype).eps
        rounding = 100 * eps ** (1 - STEP_POWER[method]) * np.abs(y).max() / max(1.0, np.abs(x).max())
    return rtol * np.abs(J).max() + rounding


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_default_tolerances_are_the_documented_ones(method, dtype, backend, on_device, rng):
    x = rng.standard_normal((5, 6)).astype(dtype)
    x64 = x.astype(np.float64)
    J = _layer_jacobian(x64)
    rtol = DOCUMENTED_RTOL[method, dtype]
    atol = documented_atol(method, dtype, rtol, J, _layer(x64), x64)
    for factor, passes in ((0.1, True), (10.0, False)):
        off = J.copy()
        off[2, 1, 1] += factor * (atol + rtol * abs(J[2, 1, 1]))  # an error of factor * tolerance
        if passes:
            report = bj.check_jacobian(_layer, on_device(x), J=on_device(off.astype(dtype)), method=method)
            assert report.rtol == rtol and report.atol == pytest.approx(atol, rel=1e-2)
        else:
            with pytest.raises(AssertionError, match=r"sample 2, output index \(1,\), input index \(1,\)"):
                bj.check_jacobian(_layer, on_device(x), J=on_device(off.astype(dtype)), method=method)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_a_zero_jacobian_of_a_small_function_fails(method, dtype, rng):
    # 1e-7 tanh: every derivative is below rtol, so atol = rtol max(1, max|N|) let J = 0 pass.
    x = rng.standard_normal((4, 3)).astype(dtype)

    def f(x):
        return 1e-7 * np.tanh(x)

    true = 1e-7 * (1 - np.tanh(x.astype(np.float64)) ** 2)[:, :, None] * np.eye(3)
    with pytest.raises(
        AssertionError, match=r"check_jacobian: J differs from the .* in 1[0-2] of 36 entries"
    ):
        bj.check_jacobian(f, x, J=np.zeros((4, 3, 3), dtype), method=method)
    report = bj.check_jacobian(f, x, J=true.astype(dtype), method=method)
    assert report.atol < 1e-8  # a tenth of the Jacobian's scale at most (forward, float32)


def test_the_default_atol_follows_the_scale_of_f_not_one(rng):
    x = rng.standard_normal((3, 2))
    for scale in (1e-12, 1.0, 1e12):
        J = scale * np.cos(x)[:, :, None] * np.eye(2)
        report = bj.check_jacobian(lambda x, s=scale: s * np.sin(x), x, J=J)
        assert report.atol == pytest.approx(1e-10 * np.abs(J).max(), rel=1e-6)


@pytest.mark.parametrize(
    "keywords,error,message",
    [
        (dict(rtol="1e-3"), TypeError, r"rtol: expected a real number, got '1e-3'"),
        (dict(atol=[1e-3]), TypeError, r"atol: expected a real number, got \[0.001\] \(list\)"),
        (dict(rtol=-1.0), ValueError, r"rtol: expected a finite real number >= 0, got -1.0"),
        (dict(atol=float("nan")), ValueError, r"atol: expected a finite real number >= 0, got nan"),
        (
            dict(method="backward"),
            ValueError,
            r"method: expected one of 'complex-step', 'central', 'forward'",
        ),
        (
            dict(J=np.full((2, 3, 3), "a")),
            TypeError,
            r"J: expected real floating-point \(or integer\) data, got dtype <U1",
        ),
        (
            dict(J=np.ones((2, 3, 3), bool)),
            TypeError,
            r"J: expected real floating-point \(or integer\) data, got dtype bool",
        ),
    ],
)
def test_bad_arguments_are_named(keywords, error, message, rng):
    x = rng.standard_normal((2, 3))
    J = keywords.pop("J", np.cos(x)[:, :, None] * np.eye(3))
    with pytest.raises(error, match=message):
        bj.check_jacobian(np.sin, x, J=J, **keywords)


def test_a_numpy_integer_tolerance_is_a_number(rng):
    x = rng.standard_normal((2, 3))
    report = bj.check_jacobian(
        np.sin, x, J=np.cos(x)[:, :, None] * np.eye(3), rtol=np.int64(0), atol=np.float32(1e-9)
    )
    assert report.rtol == 0.0 and report.atol == pytest.approx(1e-9)


def test_the_backend_keyword_wins_over_the_environment(monkeypatch, rng):
    # BATCHJAC_BACKEND names a backend that cannot take CPU arrays: the keyword must win
    # for the reference, the exact Jacobian and the densifying of a structured J.
    monkeypatch.setenv("BATCHJAC_BACKEND", "numba")
    x = rng.standard_normal((3, 4))
    expected = np.cos(x)[:, :, None] * np.eye(4)
    report = bj.check_jacobian(np.sin, x, J=bj.Diagonal(np.cos(x)), backend="numpy")
    assert report.max_abs_error < 1e-13
    report = bj.check_jacobian(bj.sin, x, method="central", backend="numpy")
    assert report.max_abs_error < 1e-8
    assert np.abs(expected).max() > 0


def test_a_torch_function_of_a_torch_tensor_is_checked(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.standard_normal((3, 2)))
    J = np.cos(x.numpy())[:, :, None] * np.eye(2)
    report = bj.check_jacobian(torch.sin, x, J=J)
    assert report.method == "complex-step" and report.max_abs_error < 1e-13


def test_explicit_tolerances_and_nan_entries(backend, on_device, rng):
    x = rng.standard_normal((3, 6))
    J = _layer_jacobian(x)
    off = J.copy()
    off[0, 0, 0] += 1e-3
    report = bj.check_jacobian(_layer, on_device(x), J=on_device(off), rtol=0, atol=2e-3)
    assert report.max_abs_error == pytest.approx(1e-3, rel=1e-6)
    off[1, 3, 2] = np.nan
    with pytest.raises(AssertionError, match=r"sample 1, output index \(3,\), input index \(2,\): J = nan"):
        bj.check_jacobian(_layer, on_device(x), J=on_device(off), rtol=0, atol=2e-3)


def test_an_empty_batch_passes_with_no_worst_entry(backend, on_device):
    report = bj.check_jacobian(_layer, on_device(np.zeros((0, 6))), J=on_device(np.zeros((0, 4, 6))))
    assert report.worst is None and report.max_abs_error == 0.0


def test_exact_jacobian_is_checked_when_none_is_given(backend, on_device, rng):
    pytest.importorskip("batchjac.api")
    x = rng.standard_normal((5, 4))

    def f(x):
        return bj.tanh(x) * x

    expected = np.einsum("bi,ij->bij", (1 - np.tanh(x) ** 2) * x + np.tanh(x), np.eye(4))
    assert np.allclose(to_numpy(bj.jacobian(f, on_device(x), method="exact")), expected, rtol=1e-12)
    report = bj.check_jacobian(f, on_device(x), method="central")
    assert report.method == "central" and report.max_abs_error < 1e-8
    # batchjac's array functions take no complex input, so complex-step falls back.
    with pytest.warns(bj.NumericalFallbackWarning, match="central differences"):
        report = bj.check_jacobian(f, on_device(x))
    assert report.method == "central"


def test_docstring_examples_run():
    failed, attempted = doctest.testmod(checking)
    assert attempted > 0 and failed == 0
