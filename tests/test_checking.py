"""``bj.check_jacobian`` (issue 5): reports on a correct Jacobian, names the worst entry of a
wrong one, documented default tolerances; once per backend.

References are float64 closed forms computed with NumPy on the host.
"""

from __future__ import annotations

import doctest
import re

import numpy as np
import pytest
from conftest import to_numpy

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
    assert report.atol == pytest.approx(1e-10 * max(1, np.abs(J).max()))
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_default_tolerances_are_the_documented_ones(method, dtype, backend, on_device, rng):
    x = rng.standard_normal((5, 6)).astype(dtype)
    J = _layer_jacobian(x.astype(np.float64))
    rtol = DOCUMENTED_RTOL[method, dtype]
    atol = rtol * max(1.0, np.abs(J).max())
    for factor, passes in ((0.1, True), (10.0, False)):
        off = J.copy()
        off[2, 1, 1] += factor * atol  # an error of factor * atol on one entry
        if passes:
            report = bj.check_jacobian(_layer, on_device(x), J=on_device(off.astype(dtype)), method=method)
            assert report.rtol == rtol and report.atol == pytest.approx(atol, rel=1e-3)
        else:
            with pytest.raises(AssertionError, match=r"sample 2, output index \(1,\), input index \(1,\)"):
                bj.check_jacobian(_layer, on_device(x), J=on_device(off.astype(dtype)), method=method)


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
