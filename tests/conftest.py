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


from helpers import DIFFERENCES, TOL, assert_close, black_box_jacobian, complex_step_jacobian, to_numpy  # noqa: E402,F401 - re-exported


@pytest.fixture(scope="module")
def cp():
    """The cupy module, where a CUDA GPU with CuPy works (else the test skips)."""
    problem = backend_problem("cupy")
    if problem is not None:
        pytest.skip(f"needs a CUDA GPU with CuPy: {problem}")
    import cupy

    return cupy
