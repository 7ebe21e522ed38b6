"""The dispatch layer: which backend serves a call, and the errors when none can.

Availability of the GPU backends is faked where a test needs them "available" on a
machine without a GPU: the probe cache ``dispatch._problems`` and the backend cache
``dispatch._backends`` are swapped for fresh dicts with ``monkeypatch`` (restored after).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util

import numpy as np
import pytest

import batchjac as bj
from batchjac.backends import dispatch, interface
from batchjac.backends.dispatch import BackendUnavailableError, DeviceMismatchError
from batchjac.core import arrays as _arrays

NO_CUPY = pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")

# The primitives the backend interface promises (style.md), written out independently.
EXPECTED_PRIMITIVES = {
    "elementwise", "scale_rows", "scale_cols", "batched_matmul", "shared_matmul",
    "matmul_shared", "diag_to_dense", "add_diagonal", "matvec", "vecmat", "slogdet",
    "difference_columns", "csr_matvec",
}  # fmt: skip


class FakeCudaArray:
    """A GPU array as numba or PyTorch expose it: ``__cuda_array_interface__``."""

    shape = (2, 3)
    dtype = np.dtype(np.float64)
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f8", "data": (0, False), "version": 3}


class FakeDLPack:
    """An array that only speaks DLPack; ``device`` is its ``__dlpack_device__``."""

    def __init__(self, array, device=(1, 0)):
        self._array = array
        self._device = device
        self.shape = array.shape

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


@pytest.fixture
def fake(monkeypatch):
    """Fake the availability of backends: ``fake(numba=None, cupy="why not")``.

    Available backends get a :class:`dispatch.Backend` with no implementations (or the
    given ones); the probe and backend caches are restored after the test.
    """
    monkeypatch.setattr(dispatch, "_problems", {"numpy": None})
    monkeypatch.setattr(dispatch, "_backends", {})
    monkeypatch.setenv("BATCHJAC_AUTOTUNE", "0")  # fixed preference order, no timing

    def make(**problems):
        dispatch._problems.update(problems)
        for name, problem in problems.items():
            if problem is None:
                dispatch._backends[name] = dispatch.Backend(name, dispatch.BACKENDS[name].device, {})
        return dispatch._backends

    return make


@pytest.fixture(autouse=True)
def no_env_backend(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


# --------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------


def test_available_backends_are_numpy_and_those_whose_probe_succeeds():
    available = bj.available_backends()
    assert "numpy" in available
    for name in dispatch.BACKENDS:
        problem = dispatch.backend_problem(name)
        assert (name in available) == (problem is None)
        assert problem is None or (isinstance(problem, str) and problem)


def test_available_backends_follow_the_probes(monkeypatch):
    monkeypatch.setattr(dispatch, "_problems", {})
    probes = {"numpy": lambda: None, "cupy": lambda: "CuPy is not installed", "numba": lambda: None}
    monkeypatch.setattr(dispatch, "_PROBES", probes)
    assert bj.available_backends() == ["numpy", "numba"]
    probes["numba"] = lambda: "gone"
    assert bj.available_backends() == ["numpy", "numba"]  # probe results are cached
    dispatch._problems.clear()
    assert bj.available_backends() == ["numpy"]


UNKNOWN = r"unknown backend 'tensorflow'; known: numpy, cupy, numba; available here: numpy"
REQUESTS = {
    "keyword": lambda: dispatch.select_backend(np.ones(2), backend="tensorflow"),
    "context": lambda: bj.use_backend("tensorflow").__enter__(),
    "get_backend": lambda: dispatch.get_backend("tensorflow"),
}


@pytest.mark.parametrize("request_by", list(REQUESTS))
def test_unknown_backend_is_value_error_listing_known_and_available(request_by, fake):
    fake(cupy="no CuPy", numba="no numba-cuda")
    with pytest.raises(ValueError, match=UNKNOWN):
        REQUESTS[request_by]()


def test_unknown_backend_in_environment_is_value_error(fake, monkeypatch):
    fake(cupy="no CuPy", numba="no numba-cuda")
    monkeypatch.setenv(dispatch.ENV_VAR, "tensorflow")
    with pytest.raises(ValueError, match=UNKNOWN):
        dispatch.select_backend(np.ones(2))
    with pytest.raises(ValueError, match=UNKNOWN):  # and through the public API
        bj.Dense(np.ones((1, 2, 2))).jvp(np.ones((1, 2)))


@NO_CUPY
@pytest.mark.parametrize("request_by", ["keyword", "context", "environment"])
@NO_CUPY
def test_unavailable_cupy_says_cupy_is_not_installed(request_by, monkeypatch):
    calls = {
        "keyword": lambda: dispatch.select_backend(backend="cupy"),
        "context": lambda: bj.use_backend("cupy").__enter__(),
        "environment": lambda: dispatch.select_backend(),
    }
    if request_by == "environment":
        monkeypatch.setenv(dispatch.ENV_VAR, "cupy")
    message = (
        r"backend 'cupy' is not available here: CuPy is not installed \(pip install 'batchjac\[cuda12\]'"
    )
    with pytest.raises(BackendUnavailableError, match=message):
        calls[request_by]()


def test_unavailable_backend_message_carries_the_probe_and_the_available_ones(fake):
    fake(cupy=None, numba="numba-cuda is installed but no CUDA device or driver is present")
    message = (
        r"'numba' is not available here: numba-cuda is installed but no CUDA device.*; available: numpy, cupy"
    )
    with pytest.raises(BackendUnavailableError, match=message):
        dispatch.get_backend("numba")


# --------------------------------------------------------------------------------------
# Selection: keyword, then context, then environment, then device
# --------------------------------------------------------------------------------------

PRECEDENCE = [
    # keyword, context, environment -> chosen
    ("numba", "cupy", "numpy", "numba"),
    ("numpy", "numba", "cupy", "numpy"),
    (None, "cupy", "numba", "cupy"),
    (None, None, "numba", "numba"),
    (None, None, "", None),
    (None, None, None, None),
]


@pytest.mark.parametrize("keyword,context,environment,chosen", PRECEDENCE)
def test_keyword_beats_context_beats_environment_beats_device(
    keyword, context, environment, chosen, fake, monkeypatch
):
    backends = fake(cupy=None, numba=None)
    if environment is not None:
        monkeypatch.setenv(dispatch.ENV_VAR, environment)
    with bj.use_backend(context) if context else contextlib.nullcontext():
        assert dispatch.requested_backend(keyword) == chosen
        selected = dispatch.select_backend(backend=keyword)  # no arrays: no device check
        assert selected is (dispatch.get_backend(chosen) if chosen else dispatch.get_backend("numpy"))
        if chosen in backends:
            assert selected is backends[chosen]


def test_device_decides_without_a_request(fake):
    backends = fake(cupy=None, numba=None)
    assert dispatch.select_backend(np.ones(3)).name == "numpy"
    backends["gpu"] = gpu = dispatch.Backend("gpu", _arrays.GPU, {})
    assert dispatch.select_backend(FakeCudaArray()) is gpu


def test_use_backend_nesting_restores_the_outer_choice_also_after_an_exception(fake):
    fake(cupy=None, numba=None)
    with bj.use_backend("numba") as outer:
        assert outer is dispatch.get_backend("numba")
        with bj.use_backend("cupy"):
            assert dispatch.requested_backend() == "cupy"
        assert dispatch.requested_backend() == "numba"
        with pytest.raises(KeyError):
            with bj.use_backend("numpy"):
                assert dispatch.requested_backend() == "numpy"
                raise KeyError("inside")
        assert dispatch.requested_backend() == "numba"
    assert dispatch.requested_backend() is None


def test_use_backend_yields_the_cached_backend_object():
    with bj.use_backend("numpy") as ops:
        assert ops is dispatch.get_backend("numpy") is dispatch.get_backend("numpy")
        assert ops.name == "numpy" and ops.device == "cpu"


# --------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------

GPU_LOOKALIKES = {
    "cuda_array_interface": FakeCudaArray,
    "dlpack_cuda": lambda: FakeDLPack(np.ones((2, 3)), device=(2, 0)),
    "dlpack_cuda_managed": lambda: FakeDLPack(np.ones((2, 3)), device=(13, 0)),
}


@pytest.mark.parametrize("lookalike", list(GPU_LOOKALIKES))
def test_mixed_cpu_and_gpu_inputs_raise_device_mismatch_naming_both(lookalike):
    gpu = GPU_LOOKALIKES[lookalike]()
    assert _arrays.device_of(gpu) == "gpu"
    with pytest.raises(DeviceMismatchError, match=r"x is on the CPU but w is on the GPU"):
        dispatch.select_backend(np.ones(3), gpu, names=("x", "w"))
    with pytest.raises(DeviceMismatchError, match=r"argument 0 is on the CPU but argument 1 is on the GPU"):
        _arrays.common_device(np.ones(3), gpu)


def test_device_mismatch_is_a_value_error():
    assert issubclass(DeviceMismatchError, ValueError)


def test_python_scalars_and_none_do_not_count_as_cpu_inputs():
    assert _arrays.common_device(FakeCudaArray(), 2.0, None, np.float64(1.0)) == "gpu"


@pytest.mark.parametrize("name", ["cupy", "numba"])
def test_named_gpu_backend_with_cpu_inputs_raises_device_mismatch(name, fake):
    fake(cupy=None, numba=None)
    message = rf"backend '{name}' runs on the GPU but the inputs are on the CPU"
    with pytest.raises(DeviceMismatchError, match=message):
        dispatch.select_backend(np.ones(3), backend=name)
    with bj.use_backend(name), pytest.raises(DeviceMismatchError, match=message):
        bj.Dense(np.ones((1, 2, 2))).jvp(np.ones((1, 2)))


def test_numpy_backend_with_gpu_inputs_raises_device_mismatch():
    with pytest.raises(
        DeviceMismatchError, match=r"backend 'numpy' runs on the CPU but the inputs are on the GPU"
    ):
        dispatch.select_backend(FakeCudaArray(), backend="numpy")


@NO_CUPY
@pytest.mark.parametrize("lookalike", list(GPU_LOOKALIKES))
def test_gpu_array_without_cupy_is_type_error_saying_what_to_install(lookalike):
    with pytest.raises(TypeError, match=r"^a: a GPU array .* needs CuPy .*pip install 'batchjac\[cuda12\]'"):
        bj.Dense(GPU_LOOKALIKES[lookalike]())


def test_cpu_dlpack_objects_are_taken_without_copy():
    base = np.arange(24.0).reshape(2, 3, 4)
    wrapped = FakeDLPack(base)
    assert _arrays.device_of(wrapped) == "cpu"
    for taken in (_arrays.as_array(wrapped), bj.Dense(wrapped).a, bj.to_device(wrapped, "cpu")):
        assert isinstance(taken, np.ndarray)
        assert np.shares_memory(taken, base)
        np.testing.assert_array_equal(taken, base)


def test_to_device_cpu_returns_the_same_array():
    x = np.arange(6.0).reshape(2, 3)[:, ::2]
    assert bj.to_device(x, "cpu") is x


@NO_CUPY
def test_to_device_gpu_without_cupy_says_cupy_is_missing():
    with pytest.raises(BackendUnavailableError, match=r"to_device\(x, 'gpu'\): .*CuPy is not installed"):
        bj.to_device(np.ones(3), "gpu")


@pytest.mark.parametrize("device", ["tpu", "GPU", "cuda", None, 0])
def test_to_device_with_an_unknown_device_is_value_error(device):
    with pytest.raises(ValueError, match=rf"device: expected 'cpu' or 'gpu', got {device!r}"):
        bj.to_device(np.ones(3), device)


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------


def test_interface_lists_the_expected_primitives():
    assert set(interface.PRIMITIVES) == EXPECTED_PRIMITIVES
    assert len(interface.PRIMITIVES) == len(EXPECTED_PRIMITIVES)


def test_table_covers_exactly_the_interface_for_every_backend():
    assert set(dispatch.TABLE) == set(interface.PRIMITIVES)
    assert set(dispatch.GPU_PREFERENCE) == set(interface.PRIMITIVES)
    for prim, row in dispatch.TABLE.items():
        assert set(row) == set(dispatch.BACKENDS), prim
        assert row["numpy"] is not None, f"the NumPy backend must implement {prim}"
        assert set(dispatch.GPU_PREFERENCE[prim]) <= {
            n for n, b in dispatch.BACKENDS.items() if b.device == "gpu"
        }


@pytest.mark.parametrize("prim,backend", [
    (prim, name) for prim, row in dispatch.TABLE.items() for name, module in row.items() if module is not None
])  # fmt: skip
def test_every_table_entry_names_a_function_of_that_module(prim, backend):
    module = importlib.import_module(f"batchjac.backends.{dispatch.TABLE[prim][backend]}")
    assert callable(getattr(module, prim))


def test_numpy_backend_binds_every_primitive_from_the_table():
    ops = dispatch.get_backend("numpy")
    for prim in interface.PRIMITIVES:
        module = importlib.import_module(f"batchjac.backends.{dispatch.TABLE[prim]['numpy']}")
        assert ops.implementations[prim] == ("numpy", getattr(module, prim))


def test_backend_missing_a_primitive_names_it_and_where_it_is_implemented(monkeypatch):
    monkeypatch.setitem(dispatch.TABLE["scale_rows"], "cupy", None)
    ops = dispatch.Backend("numba", "gpu", {})
    message = r"primitive 'scale_rows' has no implementation on backend 'numba'; available backends implementing it: numpy$"
    with pytest.raises(BackendUnavailableError, match=message):
        ops.scale_rows(np.ones((1, 2)), np.ones((1, 2, 2)))
    with pytest.raises(AttributeError):
        ops.not_a_primitive  # noqa: B018


def test_default_gpu_backend_follows_gpu_preference_among_implementations(fake, monkeypatch):
    fake(cupy=None, numba=None)
    monkeypatch.setitem(dispatch.TABLE["scale_rows"], "numba", "xp_ops")
    monkeypatch.setitem(dispatch.TABLE["scale_cols"], "numba", "xp_ops")
    monkeypatch.setitem(dispatch.TABLE["slogdet"], "cupy", None)
    monkeypatch.setitem(dispatch.TABLE["slogdet"], "numba", "xp_ops")
    monkeypatch.setitem(dispatch.GPU_PREFERENCE, "scale_cols", ("numba", "cupy"))
    served_by = {prim: backend for prim, (backend, _) in dispatch.get_backend("gpu").implementations.items()}
    assert served_by == {
        **{prim: "cupy" for prim in interface.PRIMITIVES},
        "scale_cols": "numba",  # preferred and implemented
        "slogdet": "numba",  # cupy preferred but does not implement it
    }


def test_default_gpu_backend_skips_unavailable_backends(fake, monkeypatch):
    fake(cupy="no CuPy", numba=None)
    for prim in dispatch.TABLE:
        monkeypatch.setitem(dispatch.TABLE[prim], "numba", "xp_ops" if prim == "matvec" else None)
    gpu = dispatch.get_backend("gpu")
    assert gpu.implementations == {"matvec": ("numba", dispatch._implementation("matvec", "numba"))}
    with pytest.raises(BackendUnavailableError, match=r"'vecmat' has no implementation on backend 'gpu'"):
        gpu.vecmat(np.ones((1, 2)), np.ones((1, 2, 2)))


def test_no_gpu_backend_available_says_why_for_each(fake):
    fake(cupy="CuPy is not installed", numba="numba-cuda is not installed")
    message = r"no GPU backend is available: cupy: CuPy is not installed; numba: numba-cuda is not installed"
    with pytest.raises(BackendUnavailableError, match=message):
        dispatch.get_backend("gpu")


# --------------------------------------------------------------------------------------
# Issue 13: the words of the GPU errors; the keyword wins in every floor
# --------------------------------------------------------------------------------------


def test_backend_gpu_with_cpu_inputs_says_what_is_wrong(fake):
    fake(cupy="CuPy is not installed", numba="numba-cuda is not installed")
    with pytest.raises(BackendUnavailableError) as err:
        dispatch.select_backend(np.ones(3), backend="gpu")
    assert "the inputs are GPU arrays" not in str(err.value)
    assert str(err.value).startswith(
        "backend 'gpu' (the fastest GPU backend per primitive) is not available here"
    )
    fake(cupy=None, numba=None)  # with a GPU backend: the device is what is wrong
    with pytest.raises(
        DeviceMismatchError, match=r"backend 'gpu' runs on the GPU but the inputs are on the CPU"
    ):
        dispatch.select_backend(np.ones(3), backend="gpu")


def test_gpu_inputs_without_a_gpu_backend_say_so(fake):
    fake(cupy="CuPy is not installed", numba="numba-cuda is not installed")
    message = (
        r"^the inputs are GPU arrays but no GPU backend is available: cupy: CuPy is not installed; "
        r"numba: numba-cuda is not installed$"
    )
    with pytest.raises(BackendUnavailableError, match=message):
        dispatch.select_backend(FakeCudaArray())


@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_the_keyword_wins_over_the_environment_in_numerical_assembly(method, fake, monkeypatch, rng):
    from batchjac.numerical.differences import numerical_value_and_jacobian

    fake(cupy=None, numba=None)
    monkeypatch.setenv(dispatch.ENV_VAR, "numba")  # a GPU backend: CPU inputs would be refused
    x = rng.standard_normal((3, 4))
    with pytest.raises(DeviceMismatchError, match=r"backend 'numba' runs on the GPU"):
        numerical_value_and_jacobian(np.sin, (x,), 0, method)
    _, (J,) = numerical_value_and_jacobian(np.sin, (x,), 0, method, backend="numpy")
    np.testing.assert_allclose(J, np.cos(x)[:, :, None] * np.eye(4), rtol=1e-4, atol=1e-6)
    with bj.use_backend("numba"):  # and over the context
        _, (J,) = numerical_value_and_jacobian(np.sin, (x,), 0, method, backend="numpy")
    np.testing.assert_allclose(J, np.cos(x)[:, :, None] * np.eye(4), rtol=1e-4, atol=1e-6)
