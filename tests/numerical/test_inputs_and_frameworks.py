"""What ``f`` receives under the numerical methods (issue 13 item 4, issue 20).

``f`` never sees the caller's buffers (an ``f`` that writes into its arguments changes
only private copies), and an ``f`` written for PyTorch or JAX receives that framework's
arrays. References: float64 closed forms computed with NumPy on copies taken before.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj
from batchjac.core.errors import NotComplexSafeError
from batchjac.numerical.differences import numerical_value_and_jacobian

METHODS = ("complex-step", "central", "forward")


def _doubles_in_place(x):
    x *= 2  # modifies its argument, then returns it
    return x


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_an_f_that_writes_into_its_input_leaves_the_callers_array_and_value_right(method, dtype, rng):
    x = rng.standard_normal((5, 3)).astype(dtype)
    before = x.copy()
    value, (J,) = numerical_value_and_jacobian(_doubles_in_place, (x,), 0, method)
    assert np.array_equal(x, before)  # the caller's x is untouched
    assert np.array_equal(value, 2 * before)  # the value is f(x), computed once
    assert not np.shares_memory(value, x)
    assert_close(J, np.broadcast_to(2 * np.eye(3), J.shape), rtol=1e-3 if dtype == np.float32 else 1e-8)


def test_extra_arguments_batched_or_shared_are_not_written_through(rng):
    x, s, W = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 3))
    copies = [a.copy() for a in (x, s, W)]

    def f(x, s, W):
        y = s[:, None] * (x @ W.T)
        s[...] = 0  # writes into every argument it was given
        W[...] = 0
        x[...] = 0
        return y

    for method in METHODS:
        value, (J,) = numerical_value_and_jacobian(f, (x, s, W), 0, method)
        for a, b in zip((x, s, W), copies):
            assert np.array_equal(a, b)
        assert_close(value, copies[1][:, None] * (copies[0] @ copies[2].T))
        assert_close(J, copies[1][:, None, None] * copies[2][None], rtol=1e-6)


def test_a_broadcast_single_sample_argument_reaches_f_as_a_fresh_writable_array(rng):
    x = np.broadcast_to(rng.standard_normal(3), (1, 3))  # read-only view, B = 1
    seen = []

    def f(x):
        seen.append(x.flags.writeable and not np.shares_memory(x, base))
        return np.sin(x)

    base = x
    _, (J,) = numerical_value_and_jacobian(f, (x,), 0, "central")
    assert all(seen)
    assert_close(J, np.cos(x)[:, :, None] * np.eye(3), rtol=1e-8)


def test_the_front_door_keeps_the_callers_array(rng):
    x = rng.standard_normal((3, 2))
    before = x.copy()
    J = bj.jacobian(_doubles_in_place, x, method="central")
    assert np.array_equal(x, before)
    assert_close(J, np.broadcast_to(2 * np.eye(2), J.shape), rtol=1e-8)


# --------------------------------------------------------------------------------------
# Functions of other frameworks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_a_torch_function_of_a_torch_tensor_works(method, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 4))
    W = torch.from_numpy(rng.standard_normal((3, 4)))
    received = set()

    def f(t):
        received.add(type(t))
        return torch.tanh(t @ W.T.to(t.dtype)) * t[:, :3]  # torch only; complex-safe: W follows t

    value, (J,) = numerical_value_and_jacobian(f, (torch.from_numpy(x.copy()),), 0, method)
    assert received == {torch.Tensor}
    assert isinstance(J, np.ndarray) and isinstance(value, np.ndarray)
    t = np.tanh(x @ W.numpy().T)
    expected = (1 - t**2)[:, :, None] * W.numpy()[None] * x[:, :3, None]
    expected[:, np.arange(3), np.arange(3)] += t
    assert_close(J, expected, rtol={"complex-step": 1e-12, "central": 1e-8, "forward": 1e-5}[method])


def test_a_torch_function_that_refuses_complex_input_is_not_complex_safe(rng):
    torch = pytest.importorskip("torch")
    W = torch.from_numpy(rng.standard_normal((3, 4)))
    x = torch.from_numpy(rng.standard_normal((2, 4)))
    f = lambda t: t @ W.T  # noqa: E731 - torch will not multiply complex by real
    with pytest.raises(NotComplexSafeError, match=r"f does not accept complex input: RuntimeError"):
        numerical_value_and_jacobian(f, (x,), 0, "complex-step")
    _, (J,) = numerical_value_and_jacobian(f, (x,), 0, "central")
    assert_close(J, np.broadcast_to(W.numpy(), (2, 3, 4)), rtol=1e-8)


def test_a_torch_tensor_that_requires_grad_is_detached_and_accepted(rng):
    torch = pytest.importorskip("torch")
    x = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    _, (J,) = numerical_value_and_jacobian(lambda t: torch.sin(t), (x,), 0, "central")
    assert_close(J, np.cos(x.detach().numpy())[:, :, None] * np.eye(2), rtol=1e-8)
    assert x.grad is None and x.requires_grad  # the caller's tensor is as it was
    J = bj.jacobian(bj.sin, x)  # the front door takes it too (detached, documented)
    assert_close(J, np.cos(x.detach().numpy())[:, :, None] * np.eye(2), rtol=1e-12)


def test_f_framework_names_the_framework_for_numpy_inputs(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3))
    _, (J,) = numerical_value_and_jacobian(torch.exp, (x,), 0, "complex-step", f_framework="torch")
    assert_close(J, np.exp(x)[:, :, None] * np.eye(3))
    with pytest.raises(
        ValueError, match=r"f_framework: expected one of 'numpy', 'cupy', 'torch', 'jax', got 'tf'"
    ):
        numerical_value_and_jacobian(np.exp, (x,), 0, "central", f_framework="tf")


def test_a_jax_function_of_a_jax_array_works(rng):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x = rng.standard_normal((4, 3)).astype(np.float32)
    _, (J,) = numerical_value_and_jacobian(lambda t: jnp.sin(t) * t, (jnp.asarray(x),), 0, "complex-step")
    x64 = x.astype(np.float64)
    assert_close(J, (np.cos(x64) * x64 + np.sin(x64))[:, :, None] * np.eye(3), rtol=2e-5)
    if not jax.config.jax_enable_x64:
        with pytest.raises(TypeError, match=r"JAX turned float64 into float32.*jax_enable_x64"):
            numerical_value_and_jacobian(jnp.sin, (x.astype(np.float64),), 0, "central", f_framework="jax")


def test_a_numpy_function_returning_a_torch_tensor_is_taken_back(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 2))
    _, (J,) = numerical_value_and_jacobian(lambda a: torch.from_numpy(np.sin(a)), (x,), 0, "central")
    assert_close(J, np.cos(x)[:, :, None] * np.eye(2), rtol=1e-8)
