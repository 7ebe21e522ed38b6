"""``device_jacobian`` (issue 13, items 3 and 16): complex safety, unwritten outputs, its
docstring example, and its arguments. Runs where numba-CUDA runs: on a GPU or under the
simulator (``NUMBA_ENABLE_CUDASIM=1 pytest -k numba``). References are float64 closed
forms computed with NumPy on the host.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from helpers import assert_close

from batchjac.backends.dispatch import backend_problem
from batchjac.core.errors import NotComplexSafeError

pytestmark = [
    pytest.mark.numba,
    pytest.mark.skipif(
        backend_problem("numba") is not None, reason=f"numba backend unavailable: {backend_problem('numba')}"
    ),
]

if backend_problem("numba") is None:
    import cmath

    from numba import cuda

    from batchjac.backends import numba_ops
    from batchjac.numerical import device_jacobian as module
    from batchjac.numerical.device_jacobian import device_jacobian

    @cuda.jit(device=True)
    def product_and_sine(x, out):  # complex-safe: arithmetic and cmath
        out[0] = x[0] * x[1]
        out[1] = cmath.sin(x[0])

    @cuda.jit(device=True)
    def product_and_math_sine(x, out):  # math.sin drops the imaginary part
        out[0] = x[0] * x[1]
        out[1] = math.sin(x[0].real)

    @cuda.jit(device=True)
    def kinked(x, out):  # abs drops the imaginary part
        out[0] = abs(x[0]) * x[1]

    @cuda.jit(device=True)
    def writes_only_the_first(x, out):
        out[0] = x[0] * x[1]


def on_gpu(a):
    cp = numba_ops.cupy_or_none()
    return cp.asarray(a) if cp is not None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    return a.get() if hasattr(a, "get") else a.copy_to_host()


def product_and_sine_jacobian(x):
    zero = np.zeros_like(x[:, 0])
    return np.stack([np.stack([x[:, 1], x[:, 0]], 1), np.stack([np.cos(x[:, 0]), zero], 1)], 1)


DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, 5])
def test_numba_device_jacobian_of_a_complex_safe_function(dtype, batch, rng):
    x = rng.uniform(-1.5, 1.5, (batch, 2)).astype(dtype)
    J = device_jacobian(product_and_sine, on_gpu(x), 2)  # verified against central differences
    assert J.shape == (batch, 2, 2) and J.dtype == dtype
    assert_close(
        host(J), product_and_sine_jacobian(x.astype(np.float64)), rtol=2e-6 if dtype == np.float32 else 1e-13
    )
    # central differences on real input (cmath returns complex there: a real-valued f)
    J = host(device_jacobian(writes_only_the_first, on_gpu(x), 1, method="central"))
    x64 = x.astype(np.float64)
    assert_close(
        J, np.stack([x64[:, 1], x64[:, 0]], axis=1)[:, None, :], rtol=2e-3 if dtype == np.float32 else 1e-8
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_device_jacobian_refuses_functions_that_drop_imaginary_parts(dtype, rng):
    x = (rng.uniform(0.5, 1.5, (4, 2)) * np.array([1.0, -1.0])).astype(dtype)
    for f, out_size in ((product_and_math_sine, 2), (kinked, 1)):
        with pytest.raises(NotComplexSafeError, match=r"f is not complex-safe.*use method='central'"):
            device_jacobian(f, on_gpu(x), out_size)
    # central differences serve them, and verify=False skips the check (at the caller's risk)
    J = host(device_jacobian(kinked, on_gpu(x), 1, method="central"))
    x64 = x.astype(np.float64)
    expected = np.stack([np.sign(x64[:, 0]) * x64[:, 1], np.abs(x64[:, 0])], axis=1)[:, None, :]
    assert_close(J, expected, rtol=2e-3 if dtype == np.float32 else 1e-8)
    wrong = host(device_jacobian(kinked, on_gpu(x), 1, verify=False))
    assert np.all(wrong[:, 0, 0] == 0)  # what the check protects against


def test_numba_device_jacobian_outputs_f_does_not_write_are_zero(rng):
    x = rng.standard_normal((3, 2))
    for method in ("complex-step", "central"):  # 0, not leftover memory, for outputs 1 and 2
        J = host(device_jacobian(writes_only_the_first, on_gpu(x), 3, method=method))
        expected = np.zeros((3, 3, 2))
        expected[:, 0] = np.stack([x[:, 1], x[:, 0]], axis=1)
        assert_close(J, expected, rtol=1e-8)


def test_numba_device_jacobian_docstring_example_runs():
    # The example is skipped by the plain doctest run (it needs numba-CUDA); run it here.
    test = doctest.DocTestFinder().find(module.device_jacobian, "device_jacobian")[0]
    for example in test.examples:
        example.options.clear()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=lambda s: None)
    assert result.attempted == len(test.examples) and result.failed == 0


@pytest.mark.parametrize(
    "keywords,error,message",
    [
        (dict(out_size=2.0), TypeError, r"out_size: expected an integer >= 0, got 2.0 \(float\)"),
        (dict(out_size=-1), ValueError, r"out_size: expected an integer >= 0, got -1"),
        (dict(step=0), ValueError, r"step: expected a finite real number > 0, got 0.0"),
        (dict(step=-1e-3), ValueError, r"step: expected a finite real number > 0, got -0.001"),
        (dict(step="1e-6"), TypeError, r"step: expected a real number, got '1e-6'"),
        (dict(method="forward"), ValueError, r"method: expected 'complex-step' or 'central', got 'forward'"),
        (dict(verify="yes"), TypeError, r"verify: expected True or False, got 'yes'"),
    ],
)
def test_numba_device_jacobian_bad_arguments_are_named(keywords, error, message):
    keywords = {"out_size": 2, **keywords}
    with pytest.raises(error, match=message):
        device_jacobian(product_and_sine, on_gpu(np.ones((2, 2))), **keywords)


def test_numba_device_jacobian_takes_numpy_integers_and_refuses_lists():
    x = np.array([[1.0, 2.0]])
    J = host(device_jacobian(product_and_sine, on_gpu(x), np.int64(2)))
    assert_close(J, product_and_sine_jacobian(x))
    with pytest.raises(TypeError, match=r"x: expected a GPU array \(B, n\) .*got list"):
        device_jacobian(product_and_sine, [[1.0, 2.0]], 2)
