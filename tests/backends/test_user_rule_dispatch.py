"""A rule registered with ``bj.register_elementwise`` goes through the dispatch table like a
built-in one: NumPy on the CPU, and on the GPU the numba backend (its scalar Python
functions compile with numba only); ``backend="cupy"`` refuses it with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj
from batchjac.backends import dispatch
from batchjac.core.errors import BackendUnavailableError


@pytest.fixture(scope="module")
def softsign():
    return bj.register_elementwise("softsign_dispatch", lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2)


def test_a_user_rule_runs_on_the_numpy_backend_and_traces(softsign, rng):
    x = rng.standard_normal((3, 4))
    y, D = bj.elementwise("softsign_dispatch", x, backend="numpy")
    np.testing.assert_allclose(y, x / (1 + np.abs(x)), rtol=1e-15)
    np.testing.assert_allclose(D.diagonal(), 1 / (1 + np.abs(x)) ** 2, rtol=1e-15)
    J = bj.jacobian(lambda x: softsign(x) * 2.0, x, method="exact")
    np.testing.assert_allclose(J, np.einsum("bi,ij->bij", 2 / (1 + np.abs(x)) ** 2, np.eye(4)), rtol=1e-15)


def test_the_default_gpu_dispatch_sends_user_rules_to_numba(softsign, monkeypatch):
    calls = []

    def preferred(name, *args, **params):
        calls.append(("cupy", name))
        return "cupy result"

    def numba_elementwise(name, *args, **params):
        calls.append(("numba", name))
        return "numba result"

    class FakeNumba:
        elementwise = staticmethod(numba_elementwise)

    monkeypatch.setattr(dispatch, "get_backend", lambda name: FakeNumba if name == "numba" else None)
    routed = dispatch._user_rules_on_numba(preferred)
    assert routed("softsign_dispatch", np.ones(2)) == "numba result"
    assert routed("tanh", np.ones(2)) == "cupy result"
    assert calls == [("numba", "softsign_dispatch"), ("cupy", "tanh")]


def test_the_cupy_backend_refuses_a_user_rule_by_name(softsign):
    from batchjac.backends import cupy_ops

    with pytest.raises(BackendUnavailableError, match="softsign_dispatch.*compiles with numba.*backend='numba'"):
        cupy_ops.elementwise("softsign_dispatch", np.ones(2))


def test_a_user_rule_has_no_traced_second_derivative(softsign, rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(NotImplementedError, match="register_elementwise"):
        bj.hessian(lambda x: bj.sum(softsign(x)), x, method="exact")
