"""Shared test fixtures: every backend-level test runs once per backend.

``backend`` is parametrised over all backends; GPU backends carry the ``gpu`` marker (and
numba the ``numba`` marker) and skip cleanly where they cannot run. API-level tests on a
GPU backend need CuPy arrays, so they skip under the CUDA simulator too; the numba kernels
are tested directly there (``tests/test_numba_*.py``, selected by ``-k numba``).
"""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj
from batchjac.backends.dispatch import BACKENDS, TABLE, backend_problem


def _param(name):
    marks = []
    if BACKENDS[name].device == "gpu":
        marks.append(pytest.mark.gpu)
    if name == "numba":
        marks.append(pytest.mark.numba)
    return pytest.param(name, marks=marks, id=name)


BACKEND_PARAMS = [_param(name) for name in BACKENDS]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """The name of a backend that runs here (others skip, saying why)."""
    name = request.param
    problem = backend_problem(name)
    if problem is not None:
        pytest.skip(f"backend {name!r} unavailable: {problem}")
    missing = [prim for prim, row in TABLE.items() if row[name] is None]
    if missing:
        pytest.skip(
            f"backend {name!r} implements no {', '.join(missing[:3])}... yet (see the dispatch table)"
        )
    if BACKENDS[name].device == "gpu":
        cupy_problem = backend_problem("cupy")
        if cupy_problem is not None:
            pytest.skip(f"API tests on {name!r} need CuPy GPU arrays: {cupy_problem}")
    return name


@pytest.fixture
def xp(backend):
    """The array namespace of ``backend``'s device."""
    if BACKENDS[backend].device == "gpu":
        import cupy

        return cupy
    return np


@pytest.fixture
def on_device(backend):
    """Put a NumPy array on ``backend``'s device (explicitly, as a user would)."""
    device = BACKENDS[backend].device
    return lambda a: bj.to_device(np.asarray(a), device)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def to_numpy(a):
    """Any array (NumPy, CuPy) as a NumPy array, for comparison with references."""
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, rtol=None, atol=None):
    """Compare with a float64 reference, relative to the reference's scale."""
    actual = to_numpy(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    rtol = TOL.get(actual.dtype, 1e-12) if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    atol = rtol * scale if atol is None else atol
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def complex_step_jacobian(f, *args, argnum=0, h=1e-30):
    """Independent float64 reference: the batched Jacobian of a complex-safe NumPy ``f``.

    Perturbs one flattened input entry at a time (a plain loop, no library code):
    returns ``(B, *out_shape, *in_shape)`` in numerator layout.
    """
    args = [np.asarray(a, dtype=np.float64) if i == argnum else a for i, a in enumerate(args)]
    x = args[argnum]
    batch, in_shape = x.shape[0], x.shape[1:]
    out = np.asarray(f(*args))
    columns = []
    for j in range(int(np.prod(in_shape, dtype=int))):
        xc = x.astype(np.complex128).reshape(batch, int(np.prod(in_shape, dtype=int)))
        xc[:, j] += 1j * h
        perturbed = list(args)
        perturbed[argnum] = xc.reshape(x.shape)
        columns.append(np.imag(f(*perturbed)).reshape(batch, int(np.prod(out.shape[1:], dtype=int))) / h)
    J = (
        np.stack(columns, axis=-1)
        if columns
        else np.zeros((batch, int(np.prod(out.shape[1:], dtype=int)), 0))
    )
    return J.reshape(batch, *out.shape[1:], *in_shape)


def black_box_jacobian(x):
    """Closed-form Jacobian ``(B, 2, 3)`` of ``[sin(x0) x1, exp(x1) + x0 x2^2]``, the black
    box the numerical-column tests differentiate."""
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    zero = np.zeros_like(x0)
    return np.stack([
        np.stack([np.cos(x0) * x1, np.sin(x0), zero], axis=1),
        np.stack([x2**2, np.exp(x1), 2 * x0 * x2], axis=1),
    ], axis=1)  # fmt: skip


# method -> (relative step for float32, for float64; tolerance for float32, for float64)
DIFFERENCES = {
    "complex-step": ((1e-20, 1e-20), (2e-5, 1e-12)),
    "central": ((5e-3, 6e-6), (1e-3, 1e-8)),
    "forward": ((4e-4, 1.5e-8), (1e-2, 1e-6)),
}


@pytest.fixture(scope="module")
def cp():
    """The cupy module, where a CUDA GPU with CuPy works (else the test skips)."""
    problem = backend_problem("cupy")
    if problem is not None:
        pytest.skip(f"needs a CUDA GPU with CuPy: {problem}")
    import cupy

    return cupy
