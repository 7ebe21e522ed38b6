"""Arrays and devices: where an array lives, its namespace, and the checks on its data.

Everything that asks "is this on the CPU or the GPU?" lives here, so that the rest of the
library is written once against the array namespace (``numpy`` or ``cupy``) of its inputs.
Nothing in this module copies data between devices except :func:`to_device`, which is the
explicit, public way to do it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from batchjac.core.errors import BackendUnavailableError, DeviceMismatchError, TraceError

CPU = "cpu"
GPU = "gpu"
DEVICES = (CPU, GPU)

# DLPack device types (dlpack.h, DLDeviceType).
_DLPACK_CPU = 1
_DLPACK_CUDA = 2
_DLPACK_CUDA_HOST = 3
_DLPACK_CUDA_MANAGED = 13


_INSTALL_GPU = "pip install 'batchjac[cuda12]' (or 'batchjac[cuda13]' for CUDA 13)"


def cupy_module() -> Any:
    """The cupy module if it imports, else None (no device needed). The one place that
    imports CuPy."""
    if "cupy" in sys.modules:
        return sys.modules["cupy"]
    if importlib.util.find_spec("cupy") is None:
        return None
    try:
        import cupy
    except Exception:
        return None
    return cupy


_cupy = cupy_module


@functools.cache
def cupy_problem() -> str | None:
    """Why CuPy cannot run here (not installed, no device), or None when it can."""
    if importlib.util.find_spec("cupy") is None:
        return f"CuPy is not installed ({_INSTALL_GPU})"
    cupy = cupy_module()
    if cupy is None:
        return "CuPy is installed but fails to import (is the CUDA toolkit it was built for present?)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return f"CuPy is installed but no CUDA device is usable: {err}"
    if count == 0:
        return "CuPy is installed but no CUDA device is present"
    return None


def is_gpu_array(a: Any) -> bool:
    """True for CuPy arrays and anything else that exposes ``__cuda_array_interface__``."""
    return hasattr(a, "__cuda_array_interface__")


def device_of(a: Any) -> str:
    """``"cpu"`` or ``"gpu"``: the device an array (or array-like) lives on."""
    if isinstance(a, np.ndarray) or np.isscalar(a):
        return CPU
    if is_gpu_array(a):
        return GPU
    dev = getattr(a, "__dlpack_device__", None)
    if dev is not None:
        kind = dev()[0]
        return GPU if kind in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED) else CPU
    return CPU


def namespace(*arrays: Any) -> Any:
    """The array namespace (``numpy`` or ``cupy``) serving these arrays.

    Raises :class:`DeviceMismatchError` if they live on different devices.
    """
    if all(type(a) is np.ndarray for a in arrays):
        return np  # the common case, without the device checks
    device = common_device(*arrays)
    if device == GPU:
        return _cupy()
    return np


def common_device(*arrays: Any, names: Sequence[str] | None = None) -> str:
    """The one device of all ``arrays`` (None entries and Python scalars are ignored).

    ``names`` labels the arrays in the error raised for mixed devices.
    """
    seen: dict[str, str] = {}
    for i, a in enumerate(arrays):
        if a is None or isinstance(a, (int, float, complex, np.generic)):
            continue
        label = names[i] if names is not None else f"argument {i}"
        seen.setdefault(device_of(a), label)
    if len(seen) > 1:
        raise DeviceMismatchError(
            f"inputs live on different devices: {seen[CPU]} is on the CPU but {seen[GPU]} is on "
            "the GPU; batchjac never copies between devices silently, move one with "
            "bj.to_device(x, 'cpu' | 'gpu')"
        )
    return next(iter(seen), CPU)


# The top-level module of an array type -> the framework it belongs to.
_FRAMEWORK_MODULES = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "jax": "jax", "jaxlib": "jax"}


def framework_of(a: Any) -> str | None:
    """``"numpy"``, ``"cupy"``, ``"torch"`` or ``"jax"``: the framework of array ``a``, or
    None for anything else (lists, scalars, other libraries' objects).

    >>> import numpy as np
    >>> framework_of(np.zeros(2)), framework_of([1.0])
    ('numpy', None)
    """
    return _FRAMEWORK_MODULES.get(type(a).__module__.split(".")[0])


def _refuse_subclass(a: Any, name: str) -> None:
    """NumPy subclasses whose semantics batchjac cannot keep are refused, saying what to do.

    ``np.matrix`` makes ``*`` a matrix product and keeps every result 2-D, so ``f`` would
    compute something else on it than on the samples; a masked array's mask means "no value
    here", which no derivative can honour. Other subclasses are taken as plain ndarrays.
    """
    if isinstance(a, np.matrix):
        raise TypeError(
            f"{name}: np.matrix is not supported (its * is a matrix product and its results stay "
            f"2-D, so f would not see a batch of samples); pass np.asarray({name})"
        )
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: a masked array is not supported (a derivative cannot honour its mask); "
            f"decide what the masked entries are and pass {name}.filled(value) (or {name}.data)"
        )


def as_array(a: Any, name: str = "x") -> Any:
    """Take ``a`` as a NumPy or CuPy array without copying where the device allows.

    NumPy and CuPy arrays pass through; other ndarray subclasses become plain ndarray
    views, except ``np.matrix`` and masked arrays, which are a ``TypeError`` saying what to
    pass instead. Objects exposing ``__cuda_array_interface__`` (numba device arrays,
    PyTorch CUDA tensors) become CuPy views; objects exposing ``__dlpack__`` become NumPy
    or CuPy views according to their device. A PyTorch tensor that requires grad is
    detached first: batchjac reads its values and records nothing on PyTorch's tape. Lists
    and scalars become NumPy arrays.

    >>> import numpy as np
    >>> as_array(np.matrix([[1.0, 2.0]]))
    Traceback (most recent call last):
    ...
    TypeError: x: np.matrix is not supported (its * is a matrix product and its results stay 2-D, so f would not see a batch of samples); pass np.asarray(x)
    """
    if type(a) is np.ndarray:
        return a
    if isinstance(a, np.ndarray):
        _refuse_subclass(a, name)
        return np.asarray(a)
    cp = sys.modules.get("cupy")
    if cp is not None and isinstance(a, cp.ndarray):
        return a
    if framework_of(a) == "torch" and getattr(a, "requires_grad", False):
        a = a.detach()
    if is_gpu_array(a) or device_of(a) == GPU:
        cp = _cupy()
        if cp is None:
            raise TypeError(
                f"{name}: a GPU array ({type(a).__name__}) needs CuPy to be used by batchjac; "
                "install the GPU extras: pip install 'batchjac[cuda12]' (or [cuda13])"
            )
        if hasattr(a, "__cuda_array_interface__"):
            return cp.asarray(a)
        return cp.from_dlpack(a)
    if hasattr(a, "__dlpack__"):
        return np.from_dlpack(a)
    try:
        return np.asarray(a)
    except TraceError:  # a traced array inside f: not an array yet (method="auto" falls back)
        raise
    except Exception as err:  # ragged lists, objects numpy cannot take
        raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from err


def float_dtype(dtype: DTypeLike, name: str = "x") -> np.dtype[Any]:
    """The floating dtype an array of ``dtype`` is computed in.

    Real floating types are kept; integers are promoted to float64; anything else
    (bool, complex, strings, objects) is a ``TypeError`` naming ``name``.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    raise TypeError(f"{name}: expected real floating-point (or integer) data, got dtype {dtype}")


def as_float_array(a: Any, name: str = "x") -> Any:
    """:func:`as_array`, then integer data promoted to float64; non-float data is a TypeError."""
    if type(a) is np.ndarray and a.dtype.kind == "f":
        return a  # the common case
    a = as_array(a, name)
    dtype = float_dtype(a.dtype, name)
    return a if a.dtype == dtype else a.astype(dtype)


def common_batch(arrays: Sequence[Any], names: Sequence[str]) -> int:
    """The batch size ``B`` shared by ``arrays`` (axis 0 of each); errors name the arrays."""
    batch: int | None = None
    first: str | None = None
    for a, name in zip(arrays, names):
        if a.ndim == 0:
            raise ValueError(f"{name}: expected a batch (B, ...), got a 0-d array")
        if batch is None:
            batch, first = a.shape[0], name
        elif a.shape[0] != batch:
            raise ValueError(f"{name}: batch size {a.shape[0]} differs from {first}'s {batch}")
    if batch is None:
        raise ValueError("common_batch: expected at least one batched array, got none")
    return int(batch)


def flatten_samples(a: Any) -> Any:
    """``(B, ...) -> (B, size)`` with ``size`` the per-sample size; also for ``B = 0``."""
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def to_device(x: Any, device: str) -> Any:
    """Copy ``x`` to ``device`` (``"cpu"`` or ``"gpu"``); the explicit way to move data.

    Returns a NumPy array for ``"cpu"`` and a CuPy array for ``"gpu"``. An array already
    on that device is returned as it is (no copy).

    >>> import numpy as np, batchjac as bj
    >>> bj.to_device(np.ones(3), "cpu")
    array([1., 1., 1.])
    """
    if device not in DEVICES:
        raise ValueError(f"device: expected 'cpu' or 'gpu', got {device!r}")
    if device == CPU:
        if device_of(x) == CPU:
            return as_array(x)
        x = as_array(x)
        return x.get()
    problem = cupy_problem()
    if problem is not None:
        raise BackendUnavailableError(f"to_device(x, 'gpu'): no GPU array library is usable here: {problem}")
    cp = _cupy()
    if device_of(x) == GPU:
        return as_array(x)
    return cp.asarray(as_array(x))
