"""Interop with PyTorch and JAX: tensors in without a copy, results back in the caller's
framework without a copy (DLPack), on the CPU here; the GPU variants are marked ``gpu``."""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj
from batchjac.backends.dispatch import backend_problem
from batchjac.core.arrays import as_array
from batchjac.integrations import interop

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def aligned(shape, dtype, alignment=64):
    """A NumPy array whose data starts on an ``alignment``-byte boundary (JAX shares only those)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def f(x):
    return bj.tanh(x) * 2.0


# --------------------------------------------------------------------------------------
# In: tensors become NumPy views
# --------------------------------------------------------------------------------------


def test_a_torch_cpu_tensor_is_taken_without_a_copy():
    t = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    a = as_array(t)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())


def test_a_jax_cpu_array_is_taken_without_a_copy():
    j = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    a = as_array(j)
    assert isinstance(a, np.ndarray) and a.ctypes.data == j.unsafe_buffer_pointer()


def test_a_torch_tensor_that_requires_grad_is_detached_and_accepted():
    # issue 20: batchjac reads the values; nothing is recorded on PyTorch's tape
    t = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    J = bj.jacobian(f, t)
    assert J.shape == (2, 3, 3) and t.grad is None and t.requires_grad


# --------------------------------------------------------------------------------------
# Out: results in the caller's framework, sharing memory
# --------------------------------------------------------------------------------------


def test_the_jacobian_of_a_torch_input_comes_back_as_a_torch_view():
    t = torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)
    J = bj.jacobian(f, t)
    out = interop.like(J, t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and tuple(out.shape) == (2, 3, 3)
    assert np.shares_memory(J, out.numpy())
    x = t.numpy()
    np.testing.assert_allclose(out.numpy(), np.stack([np.diag(2 / np.cosh(r) ** 2) for r in x]))


def test_value_and_jacobian_come_back_as_a_tuple_of_torch_views():
    t = torch.ones(4, 2, dtype=torch.float32)
    y, J = bj.value_and_jacobian(f, t)
    ty, tJ = interop.to_framework((y, J), "torch")
    assert np.shares_memory(y, ty.numpy()) and np.shares_memory(J, tJ.numpy())
    assert ty.dtype == torch.float32 and tuple(tJ.shape) == (4, 2, 2)


def test_argnums_tuples_come_back_as_tuples():
    x, w = torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    Js = bj.jacobian(lambda x, w: x * w, x, w, argnums=(0, 1))
    out = interop.like(Js, x)
    assert isinstance(out, tuple) and all(isinstance(o, torch.Tensor) for o in out)


def test_views_keep_their_strides_in_torch():
    J = np.arange(24.0).reshape(2, 3, 4)
    out = interop.to_framework(J.transpose(0, 2, 1), "torch")
    assert out.stride() == (12, 1, 4) and np.shares_memory(J, out.numpy())


def test_an_aligned_result_comes_back_as_a_jax_array_in_place():
    J = aligned((2, 3, 3), np.float32)
    J[...] = np.arange(18).reshape(2, 3, 3)
    out = interop.like(J, jnp.ones((2, 3)))
    assert out.unsafe_buffer_pointer() == J.ctypes.data
    np.testing.assert_array_equal(np.asarray(out), J)


def test_the_jacobian_of_a_jax_input_comes_back_as_a_jax_array():
    x = jnp.linspace(-1, 1, 6, dtype=jnp.float32).reshape(2, 3)
    J = bj.jacobian(f, x)
    out = interop.like(J, x)
    assert interop.framework_of(out) == "jax" and out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), J)


@pytest.mark.skipif(jax.config.jax_enable_x64, reason="JAX keeps float64 when x64 is enabled")
def test_jax_without_x64_cannot_take_float64_and_says_so():
    with pytest.raises(ValueError, match=r"JAX turned float64 into float32; enable 64-bit types"):
        interop.to_framework(aligned((2, 2), np.float64), "jax")


def test_to_numpy_from_a_torch_tensor_is_a_view():
    t = torch.ones(2, 3)
    assert np.shares_memory(interop.to_framework(t, "numpy"), t.numpy())


def test_framework_of_names_each_framework():
    assert interop.framework_of(np.ones(1)) == "numpy"
    assert interop.framework_of(torch.ones(1)) == "torch"
    assert interop.framework_of(jnp.ones(1)) == "jax"
    with pytest.raises(
        TypeError, match=r"reference: expected a NumPy, CuPy, PyTorch or JAX array, got builtins.list"
    ):
        interop.framework_of([1.0])


def test_no_device_copy_is_made_behind_the_callers_back():
    with pytest.raises(
        ValueError, match=r"cannot become a CuPy array without a copy to the GPU; use bj.to_device"
    ):
        interop.to_framework(np.ones(2), "cupy")


def test_structured_jacobians_and_unknown_frameworks_are_refused():
    with pytest.raises(
        TypeError, match=r"Diagonal is a structured batchjac Jacobian; convert J.to_dense\(\)"
    ):
        interop.to_framework(bj.Diagonal(np.ones((1, 2))), "torch")
    with pytest.raises(
        ValueError, match=r"framework: expected one of 'numpy', 'cupy', 'torch', 'jax', got 'tf'"
    ):
        interop.to_framework(np.ones(2), "tf")
    with pytest.raises(TypeError, match=r"to_framework: expected an array, got str"):
        interop.to_framework("J", "torch")


# --------------------------------------------------------------------------------------
# GPU: CUDA tensors in and out without a copy
# --------------------------------------------------------------------------------------


@pytest.fixture
def cupy():
    problem = backend_problem("cupy")
    if problem is not None:
        pytest.skip(f"needs a CUDA GPU with CuPy: {problem}")
    import cupy

    return cupy


@pytest.mark.gpu
def test_a_torch_cuda_tensor_round_trips_without_a_copy(cupy):
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    t = torch.linspace(-1, 1, 6, dtype=torch.float64, device="cuda").reshape(2, 3)
    x = as_array(t)
    assert isinstance(x, cupy.ndarray) and x.data.ptr == t.data_ptr()
    J = bj.jacobian(f, t)
    out = interop.like(J, t)
    assert out.is_cuda and out.data_ptr() == J.data.ptr


@pytest.mark.gpu
def test_a_jax_gpu_array_round_trips_without_a_copy(cupy):
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this JAX has no GPU")
    x = jax.device_put(jnp.linspace(-1, 1, 6, dtype=jnp.float32).reshape(2, 3), jax.devices("gpu")[0])
    a = as_array(x)
    assert isinstance(a, cupy.ndarray) and a.data.ptr == x.unsafe_buffer_pointer()
    J = bj.jacobian(f, x)
    out = interop.like(J, x)
    assert out.unsafe_buffer_pointer() == J.data.ptr


@pytest.mark.gpu
def test_a_gpu_result_refuses_to_become_numpy(cupy):
    with pytest.raises(ValueError, match=r"without a copy to the host; use bj.to_device"):
        interop.to_framework(cupy.ones(2), "numpy")


def test_front_door_returns_results_in_the_requested_framework():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64).reshape(2, 3)
    y, J = bj.value_and_jacobian(bj.tanh, x, framework="input")
    assert isinstance(y, torch.Tensor) and isinstance(J, torch.Tensor)
    expected = np.einsum("bi,ij->bij", 1 - np.tanh(x.numpy()) ** 2, np.eye(3))
    np.testing.assert_allclose(J.numpy(), expected, rtol=1e-15)
    assert isinstance(bj.jacobian(bj.tanh, x.numpy(), framework="torch"), torch.Tensor)


def test_front_door_framework_errors():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="framework: expected 'input' or one of"):
        bj.jacobian(bj.tanh, x, framework="tensorflow")
    with pytest.raises(ValueError, match="structured=True returns a bj.Jacobian"):
        bj.jacobian(bj.tanh, x, framework="numpy", structured=True)
