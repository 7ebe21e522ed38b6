"""The fused CUDA kernels (``@cuda.jit``, one sample or entry per thread) against the
structured chain, for every supported primitive. They run on numba's CUDA simulator in CI
(``NUMBA_ENABLE_CUDASIM=1 python -m pytest -k numba``) on NumPy arrays, or on a GPU with
CuPy arrays; elsewhere they skip. Sizes stay tiny: every simulated thread is Python."""

from __future__ import annotations

import numpy as np
import pytest
from cases import BY_NAME, CASES, Case, fused_and_chain, relative_error, sample

pytestmark = pytest.mark.numba

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-4}


def _where():
    """``(array converter, None)`` where the CUDA kernels can run, else ``(None, reason)``."""
    from batchjac.kernels.numba_launch import simulated

    if simulated():
        return (lambda a: a), None
    from batchjac.core.arrays import cupy_problem

    problem = cupy_problem()
    if problem is not None:
        return None, f"no GPU and not on the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): {problem}"
    import cupy

    return cupy.asarray, None


@pytest.fixture(scope="module")
def to_device():
    convert, reason = _where()
    if convert is None:
        pytest.skip(reason)
    return convert


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cuda_kernel_equals_chain(case: Case, dtype, to_device):
    for batch in (0, 2):
        x = sample(case, batch, dtype, seed=batch + 10)
        value, (J,), chain_value, (chain_J,), decision = fused_and_chain(
            case.f, (to_device(x),), per_sample=case.per_sample, backend="cuda"
        )
        assert decision.device == "gpu" and decision.fusable
        assert value.shape == chain_value.shape and J.shape == chain_J.shape and J.dtype == chain_J.dtype
        assert relative_error(value, chain_value) <= TOLERANCE[dtype]
        assert relative_error(J, chain_J) <= TOLERANCE[dtype]


def test_cuda_kinematics_with_a_shared_parameter(to_device):
    """A shared differentiated parameter and a per-sample constant on the GPU path."""
    W = to_device(np.random.default_rng(1).standard_normal((3, 4)))
    x = to_device(np.random.default_rng(2).standard_normal((3, 4)))
    value, (J,), chain_value, (chain_J,), _ = fused_and_chain(
        lambda W, x: np.tanh(W @ x), (W, x), per_sample=True, in_axes=(None, 0), backend="cuda"
    )
    assert J.shape == (3, 3, 12) and relative_error(J, chain_J) <= 1e-12
    assert relative_error(value, chain_value) <= 1e-12


def test_cuda_elementwise_result_is_diagonal(to_device):
    case = BY_NAME["element-wise chain (W1)"]
    x = to_device(sample(case, 3, np.float32))
    _, (J,), _, (chain_J,), decision = fused_and_chain(case.f, (x,), backend="cuda")
    assert decision.mode == "elementwise" and relative_error(J, chain_J) <= 1e-6
