"""How a call picks its backend, and which implementation serves each primitive.

Selection, first match wins:

1. the ``backend=`` keyword of the call;
2. the innermost ``with bj.use_backend(name):`` block;
3. the ``BATCHJAC_BACKEND`` environment variable;
4. the device of the inputs: NumPy arrays go to ``"numpy"``; GPU arrays go, primitive by
   primitive, to the first GPU backend of :func:`gpu_preference` that is available and
   implements it: the fastest measured on this GPU, else the order of :data:`GPU_PREFERENCE`.

A named backend must be known and available, and must live on the inputs' device: data
is never copied between devices behind the caller's back.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from batchjac.backends.interface import PRIMITIVES, Array
from batchjac.core.arrays import _INSTALL_GPU, CPU, GPU, common_device, cupy_problem
from batchjac.core.errors import BackendUnavailableError, DeviceMismatchError


@dataclass(frozen=True)
class BackendSpec:
    name: str
    device: str
    summary: str


BACKENDS: dict[str, BackendSpec] = {
    "numpy": BackendSpec("numpy", CPU, "NumPy on the CPU; always available"),
    "cupy": BackendSpec("cupy", GPU, "CuPy kernels and cuBLAS/cuSOLVER on an NVIDIA GPU"),
    "numba": BackendSpec("numba", GPU, "numba-CUDA kernels on an NVIDIA GPU (or its simulator)"),
}

# Which module serves each primitive on each backend: the one table of the dispatch.
# xp_ops is written against the array namespace and serves CuPy arrays too (cuBLAS GEMMs
# through cupy.matmul, cuSOLVER's batched LU through cupy.linalg.slogdet); cupy_ops holds
# CuPy's own kernels, numba_ops the numba-CUDA ones. None would mean "not implemented":
# the default GPU dispatch then takes the next backend that has one.
TABLE: dict[str, dict[str, str | None]] = {
    "elementwise":         {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "scale_rows":          {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "scale_cols":          {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "batched_matmul":      {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
    "shared_matmul":       {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
    "matmul_shared":       {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
    "diag_to_dense":       {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "add_diagonal":        {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "matvec":              {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "vecmat":              {"numpy": "xp_ops", "cupy": "cupy_ops", "numba": "numba_ops"},
    "slogdet":             {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
    "csr_matvec":          {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
    "difference_columns":  {"numpy": "xp_ops", "cupy": "xp_ops", "numba": "numba_ops"},
}  # fmt: skip

# The default order of the GPU backends per primitive, used where nothing was measured;
# where several GPU backends implement a primitive, gpu_preference() orders them by the
# speed measured on this GPU (batchjac.backends.autotune).
DEFAULT_GPU_ORDER: tuple[str, ...] = ("cupy", "numba")
GPU_PREFERENCE: dict[str, tuple[str, ...]] = {prim: DEFAULT_GPU_ORDER for prim in TABLE}

ENV_VAR = "BATCHJAC_BACKEND"

assert set(TABLE) == set(PRIMITIVES), "the dispatch table must cover the backend interface"


# --------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------


def _probe_numpy() -> str | None:
    return None


def _probe_numba() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return f"numba-cuda is not installed ({_INSTALL_GPU}, or pip install numba-cuda)"
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return None
    try:
        if cuda.is_available():
            return None
    except Exception as err:
        return f"numba-cuda is installed but the CUDA driver fails: {err}"
    return (
        "numba-cuda is installed but no CUDA device or driver is present "
        "(NUMBA_ENABLE_CUDASIM=1 runs its kernels on the CUDA simulator)"
    )


_PROBES: dict[str, Callable[[], str | None]] = {
    "numpy": _probe_numpy,
    "cupy": cupy_problem,
    "numba": _probe_numba,
}
_problems: dict[str, str | None] = {}  # probe results, cached for the process


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can."""
    check_known(name)
    if name not in _problems:
        _problems[name] = _PROBES[name]()
    return _problems[name]


def available_backends() -> list[str]:
    """The backends that work on this machine, e.g. ``["numpy", "numba", "cupy"]``.

    >>> import batchjac as bj
    >>> "numpy" in bj.available_backends()
    True
    """
    return [name for name in BACKENDS if backend_problem(name) is None]


def check_known(name: object) -> None:
    if name not in BACKENDS:
        raise ValueError(
            f"backend: unknown backend {name!r}; known: {', '.join(BACKENDS)}; "
            f"available here: {', '.join(available_backends())}"
        )


def check_available(name: str) -> None:
    problem = backend_problem(name)
    if problem is not None:
        raise BackendUnavailableError(
            f"backend {name!r} is not available here: {problem}; available: {', '.join(available_backends())}"
        )


# --------------------------------------------------------------------------------------
# Backend objects: the table's implementations bound under the primitives' names
# --------------------------------------------------------------------------------------


class Backend:
    """A backend as the code above the interface sees it: ``ops.scale_rows(d, a)`` etc."""

    # The primitives (batchjac.backends.interface), bound per instance by __init__; a
    # primitive the backend does not implement is refused by __getattr__.
    elementwise: Callable[..., tuple[Array, ...]]
    scale_rows: Callable[[Array, Array], Array]
    scale_cols: Callable[[Array, Array], Array]
    batched_matmul: Callable[[Array, Array], Array]
    shared_matmul: Callable[[Array, Array], Array]
    matmul_shared: Callable[[Array, Array], Array]
    diag_to_dense: Callable[[Array], Array]
    add_diagonal: Callable[[Array, Array], Array]
    matvec: Callable[[Array, Array], Array]
    vecmat: Callable[[Array, Array], Array]
    csr_matvec: Callable[[Array, Array, Array, Array], Array]
    slogdet: Callable[[Array], tuple[Array, Array]]
    difference_columns: Callable[[Callable[[Array], Array], Array, Sequence[int], Array, str], Array]

    def __init__(self, name: str, device: str, implementations: dict[str, tuple[str, Callable[..., Any]]]):
        self.name = name
        self.device = device
        self.implementations = implementations  # primitive -> (backend name, function)
        for prim, (_, fn) in implementations.items():
            setattr(self, prim, fn)

    def __getattr__(self, prim: str) -> Any:
        if prim in TABLE:
            serving = [b for b, mod in TABLE[prim].items() if mod is not None and backend_problem(b) is None]
            raise BackendUnavailableError(
                f"primitive {prim!r} has no implementation on backend {self.name!r}; "
                f"available backends implementing it: {', '.join(serving) or 'none'}"
            )
        raise AttributeError(prim)

    def __repr__(self) -> str:
        return f"<batchjac backend {self.name!r} ({self.device})>"


def _implementation(prim: str, backend: str) -> Callable[..., Any] | None:
    module = TABLE[prim][backend]
    if module is None:
        return None
    return getattr(importlib.import_module(f"batchjac.backends.{module}"), prim)


_backends: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The :class:`Backend` called ``name`` (``"numpy"``, ``"cupy"``, ``"numba"``, or
    ``"gpu"`` for the default GPU choice per primitive); it must be available."""
    if name not in _backends:
        if name == "gpu":
            _backends[name] = _default_gpu_backend()
        else:
            check_known(name)
            check_available(name)
            impls: dict[str, tuple[str, Callable[..., Any]]] = {}
            for prim in TABLE:
                fn = _implementation(prim, name)
                if fn is not None:
                    impls[prim] = (name, fn)
            _backends[name] = Backend(name, BACKENDS[name].device, impls)
    return _backends[name]


def gpu_preference() -> dict[str, tuple[str, ...]]:
    """The GPU backends per primitive, fastest first: measured on this GPU where more than
    one available backend implements the primitive (:mod:`batchjac.backends.autotune`,
    cached on disk), :data:`GPU_PREFERENCE` elsewhere."""
    from batchjac.backends.autotune import measured_preference

    candidates = {
        prim: tuple(name for name in order if backend_problem(name) is None and TABLE[prim][name] is not None)
        for prim, order in GPU_PREFERENCE.items()
    }
    return {**GPU_PREFERENCE, **measured_preference(candidates)}


def _default_gpu_backend() -> Backend:
    impls: dict[str, tuple[str, Callable[..., Any]]] = {}
    for prim, order in gpu_preference().items():
        for name in order:
            implementation = _implementation(prim, name) if backend_problem(name) is None else None
            if implementation is not None:
                impls[prim] = (name, implementation)
                break
    if not impls:
        raise BackendUnavailableError(
            f"backend 'gpu' (the fastest GPU backend per primitive) is not available here: {_no_gpu()}"
        )
    if "elementwise" in impls and impls["elementwise"][0] != "numba" and backend_problem("numba") is None:
        impls["elementwise"] = (impls["elementwise"][0], _user_rules_on_numba(impls["elementwise"][1]))
    return Backend("gpu", GPU, impls)


def _user_rules_on_numba(elementwise: Callable[..., Any]) -> Callable[..., Any]:
    """``elementwise`` of the preferred GPU backend, except for rules registered by
    ``bj.register_elementwise``: their scalar Python functions compile with numba only, so the
    default GPU dispatch sends them to the numba backend (as it would any primitive another
    backend does not implement)."""
    from batchjac.core.elementwise_rules import rule

    def dispatch(name: str, *args: Any, **params: Any) -> Any:
        if rule(name).functions is not None:
            return get_backend("numba").elementwise(name, *args, **params)
        return elementwise(name, *args, **params)

    return dispatch


def _no_gpu() -> str:
    """Why no GPU backend can run, backend by backend."""
    return f"no GPU backend is available: cupy: {backend_problem('cupy')}; numba: {backend_problem('numba')}"


_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("batchjac_backend", default=None)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Run the enclosed calls on backend ``name`` unless a call names its own.

    >>> import numpy as np, batchjac as bj
    >>> with bj.use_backend("numpy"):
    ...     y, D = bj.elementwise("exp", np.zeros((2, 3)))
    >>> D.diagonal().tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    check_known(name)
    check_available(name)
    token = _context.set(name)
    try:
        yield get_backend(name)
    finally:
        _context.reset(token)


@contextlib.contextmanager
def call_backend(backend: str | None = None) -> Iterator[None]:
    """Resolve the requested backend (keyword, context, environment) once for the length of a
    call: inside, :func:`requested_backend` answers from the context, without reading the
    environment at every product (a call makes hundreds). A named backend must be known and
    available, as for :func:`use_backend`."""
    name = requested_backend(backend)
    if name is not None:
        check_known(name)
        check_available(name)
    token = _context.set(name or _NONE_REQUESTED)
    try:
        yield
    finally:
        _context.reset(token)


_NONE_REQUESTED = ""  # in the context: resolved, and no backend was asked for


def requested_backend(backend: str | None = None) -> str | None:
    """The backend asked for by keyword, context or environment, in that order, or None."""
    if backend is not None:
        return backend
    name = _context.get()
    if name is not None:
        return name or None  # _NONE_REQUESTED: resolved by call_backend
    return os.environ.get(ENV_VAR) or None


def select_backend(
    *arrays: Any, backend: str | None = None, names: Sequence[str] | Callable[[], Sequence[str]] | None = None
) -> Backend:
    """The backend serving a call on ``arrays``, by the rules in this module's docstring.

    ``names`` labels the arrays in error messages (``"x"``, ``"factor 2"``), or is a function
    returning the labels (built only off the common path).
    """
    name = requested_backend(backend)
    if name is None and all(type(a) is np.ndarray for a in arrays):
        return _backends.get("numpy") or get_backend("numpy")  # the common case, without the checks
    if callable(names):
        names = names()
    device = common_device(*arrays, names=names)
    if name is None:
        if device == CPU:
            return get_backend("numpy")
        try:
            return get_backend("gpu")
        except BackendUnavailableError:
            raise BackendUnavailableError(f"the inputs are GPU arrays but {_no_gpu()}") from None
    chosen = get_backend(name)
    has_arrays = any(a is not None and hasattr(a, "shape") for a in arrays)
    if has_arrays and chosen.device != device:
        where = "the CPU" if device == CPU else "the GPU"
        raise DeviceMismatchError(
            f"backend {name!r} runs on the {chosen.device.upper()} but the inputs are on {where}; "
            f"move them with bj.to_device(x, {chosen.device!r}) or choose another backend"
        )
    return chosen
