"""The numba-CUDA kernels (``kernels/numba_*.py``) through the numba backend, against NumPy.

Every primitive of :mod:`batchjac.backends.numba_ops` is compared with the NumPy backend
(:mod:`batchjac.backends.xp_ops`) evaluated in float64 on the very same values, in float32
and float64, at sizes small enough for the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
where CI runs them: ``pytest -k numba``); sizes are not multiples of the simulator's
block and tile sizes, so every grid-stride loop and tile edge is exercised. Without a GPU
or the simulator the module skips, saying why. ``gpu``-marked tests need a real GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import DIFFERENCES, assert_close, black_box_jacobian

from batchjac.backends import interface, xp_ops
from batchjac.backends.dispatch import backend_problem

pytestmark = [
    pytest.mark.numba,
    pytest.mark.skipif(
        backend_problem("numba") is not None, reason=f"numba backend unavailable: {backend_problem('numba')}"
    ),
]

if backend_problem("numba") is None:
    from batchjac.kernels.numba_launch import simulated
    from batchjac.kernels.numba_slogdet import MAX_N
    from numba import cuda

    import batchjac as bj
    from batchjac.backends import numba_ops
    from batchjac.core.elementwise_rules import BINARY, UNARY
    from batchjac.numerical.device_jacobian import device_jacobian

    BUILTIN_UNARY = sorted(name for name, r in UNARY.items() if not r.user)
    BUILTIN_BINARY = sorted(BINARY)
else:
    BUILTIN_UNARY = BUILTIN_BINARY = []

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
B, M, K, N = 3, 5, 6, 3  # none a multiple of the simulator's 4 x 4 tiles or 16-thread grids
POSITIVE_ONLY = {"log", "log1p", "sqrt", "power", "pow"}
PARAMS = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7}, "power": {"p": 3.0}}


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def on_gpu(a):
    """A NumPy array on the device, as the numba backend takes it (CuPy where usable)."""
    cp = numba_ops.cupy_or_none()
    return cp.asarray(a) if cp is not None else cuda.to_device(np.ascontiguousarray(a))


def host(a):
    """A CuPy array or numba device array, back on the host."""
    return a.get() if hasattr(a, "get") else a.copy_to_host()


def draw(rng, dtype, *shape, positive=False):
    """``(array on the device, float64 copy of its values)``, every |value| in [0.3, 1.3)."""
    a = rng.uniform(0.3, 1.3, shape) * (1 if positive else rng.choice([-1.0, 1.0], shape))
    a = a.astype(dtype)
    return on_gpu(a), a.astype(np.float64)


def check(result, expected, dtype):
    assert result.dtype == dtype
    assert_close(host(result), expected)


def test_numba_every_primitive_of_the_interface_has_a_test_here():
    tests = [name for name in globals() if name.startswith("test_numba_")]
    for prim in interface.PRIMITIVES:
        assert any(name.startswith(f"test_numba_{prim}") for name in tests), prim


# --------------------------------------------------------------------------------------
# elementwise: one fused kernel per rule, generated from the rule's scalar form
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BUILTIN_UNARY)
def test_numba_elementwise_unary_rule_matches_numpy(rng, dtype, name):
    x, x64 = draw(rng, dtype, B, 2, 3, positive=name in POSITIVE_ONLY)
    params = PARAMS.get(name, {})
    y, dy = numba_ops.elementwise(name, x, **params)
    ref_y, ref_dy = xp_ops.elementwise(name, x64, **params)
    assert y.shape == dy.shape == (B, 2, 3)
    check(y, ref_y, dtype)
    check(dy, ref_dy, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BUILTIN_BINARY)
def test_numba_elementwise_binary_rule_matches_numpy(rng, dtype, name):
    u, u64 = draw(rng, dtype, B, N, positive=name in POSITIVE_ONLY)
    v, v64 = draw(rng, dtype, B, N)
    results = numba_ops.elementwise(name, u, v)
    for result, expected in zip(results, xp_ops.elementwise(name, u64, v64)):
        check(result, expected, dtype)


@pytest.mark.parametrize("batch", [0, 1])
def test_numba_elementwise_on_empty_and_single_batches(rng, batch):
    x, x64 = draw(rng, np.float64, batch, N)
    y, dy = numba_ops.elementwise("sigmoid", x)
    assert y.shape == dy.shape == (batch, N)
    check(dy, xp_ops.elementwise("sigmoid", x64)[1], np.float64)


def test_numba_elementwise_binary_operands_of_two_shapes_is_value_error(rng):
    u, _ = draw(rng, np.float64, B, N)
    v, _ = draw(rng, np.float64, B, 1)
    with pytest.raises(ValueError, match=r"u and v of one shape"):
        numba_ops.elementwise("mul", u, v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_elementwise_of_a_registered_function_runs_one_fused_kernel(rng, dtype):
    bj.register_elementwise(
        "swish_numba",
        lambda x: x / (1.0 + math.exp(-x)),
        lambda x: (1.0 + math.exp(-x) + x * math.exp(-x)) / (1.0 + math.exp(-x)) ** 2,
    )
    x, x64 = draw(rng, dtype, B, N)
    y, dy = numba_ops.elementwise("swish_numba", x)
    s = 1 / (1 + np.exp(-x64))
    check(y, x64 * s, dtype)
    check(dy, s + x64 * s * (1 - s), dtype)


# --------------------------------------------------------------------------------------
# scalings, diagonals, products: batched (B, m, n) and shared (m, n) factors
# --------------------------------------------------------------------------------------

LAYOUTS = ["batched", "shared"]


def matrix(rng, dtype, layout, m, n, batch=B):
    return draw(rng, dtype, *((m, n) if layout == "shared" else (batch, m, n)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_scale_rows(rng, dtype, layout, batch):
    d, d64 = draw(rng, dtype, batch, M)
    a, a64 = matrix(rng, dtype, layout, M, N, batch)
    check(numba_ops.scale_rows(d, a), xp_ops.scale_rows(d64, a64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_scale_cols(rng, dtype, layout, batch):
    a, a64 = matrix(rng, dtype, layout, M, N, batch)
    d, d64 = draw(rng, dtype, batch, N)
    check(numba_ops.scale_cols(a, d), xp_ops.scale_cols(a64, d64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_diag_to_dense(rng, dtype, batch):
    d, d64 = draw(rng, dtype, batch, N)
    check(numba_ops.diag_to_dense(d), xp_ops.diag_to_dense(d64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_numba_add_diagonal_leaves_its_input_untouched(rng, dtype, layout):
    a, a64 = matrix(rng, dtype, layout, N, N)
    d, d64 = draw(rng, dtype, B, N)
    before = host(a).copy()
    check(numba_ops.add_diagonal(a, d), xp_ops.add_diagonal(np.broadcast_to(a64, (B, N, N)), d64), dtype)
    np.testing.assert_array_equal(host(a), before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_batched_matmul(rng, dtype, batch):
    a, a64 = draw(rng, dtype, batch, M, K)
    b, b64 = draw(rng, dtype, batch, K, N)
    check(numba_ops.batched_matmul(a, b), xp_ops.batched_matmul(a64, b64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_shared_matmul(rng, dtype, batch):
    A, A64 = draw(rng, dtype, M, K)
    b, b64 = draw(rng, dtype, batch, K, N)
    check(numba_ops.shared_matmul(A, b), xp_ops.shared_matmul(A64, b64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_matmul_shared(rng, dtype, batch):
    a, a64 = draw(rng, dtype, batch, M, K)
    A, A64 = draw(rng, dtype, K, N)
    check(numba_ops.matmul_shared(a, A), xp_ops.matmul_shared(a64, A64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [0, B])
def test_numba_matvec(rng, dtype, layout, batch):
    a, a64 = matrix(rng, dtype, layout, M, N, batch)
    v, v64 = draw(rng, dtype, batch, N)
    check(numba_ops.matvec(a, v), xp_ops.matvec(a64, v64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [0, B])
def test_numba_vecmat(rng, dtype, layout, batch):
    u, u64 = draw(rng, dtype, batch, M)
    a, a64 = matrix(rng, dtype, layout, M, N, batch)
    check(numba_ops.vecmat(u, a), xp_ops.vecmat(u64, a64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [0, B])
def test_numba_csr_matvec(rng, dtype, layout, batch):
    """More cases (matrices, long rows): tests/structured/test_sparse_kernels.py."""
    indptr, indices = np.array([0, 2, 2, 5]), np.array([1, 0, 0, 2, 1])  # an empty row, a repeat
    values, v64 = draw(rng, dtype, *((5,) if layout == "shared" else (batch, 5)))
    x, x64 = draw(rng, dtype, batch, N)
    result = numba_ops.csr_matvec(on_gpu(indptr), on_gpu(indices), values, x)
    check(result, xp_ops.csr_matvec(indptr, indices, v64, x64), dtype)


# --------------------------------------------------------------------------------------
# slogdet: LU with partial pivoting, one sample per block
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_slogdet_with_singular_and_negative_determinant_samples(rng, dtype):
    a = rng.standard_normal((4, 5, 5))
    a[0, 1] = 0.0  # singular: a zero row
    a[1] = np.diag([2.0, -1.0, 3.0, 0.5, 1.5])  # negative determinant, no row swap
    a[2] = a[2][[1, 0, 2, 3, 4]] * 1e-30  # tiny entries: |det| underflows, log|det| does not
    a = a.astype(dtype)
    sign, logabsdet = numba_ops.slogdet(on_gpu(a))
    ref_sign, ref_logabsdet = xp_ops.slogdet(a.astype(np.float64))
    assert sign.dtype == logabsdet.dtype == dtype
    np.testing.assert_array_equal(host(sign), ref_sign)
    assert ref_sign[0] == 0 and ref_sign[1] == -1
    assert np.isneginf(host(logabsdet)[0])
    assert_close(host(logabsdet)[1:], ref_logabsdet[1:], rtol=1e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("batch", [0, 1, B])
def test_numba_slogdet_small_sizes_and_batches(rng, n, batch):
    a = rng.standard_normal((batch, n, n))
    sign, logabsdet = numba_ops.slogdet(on_gpu(a))
    ref_sign, ref_logabsdet = np.linalg.slogdet(a)
    np.testing.assert_array_equal(host(sign), ref_sign)
    assert_close(host(logabsdet), ref_logabsdet)


def test_numba_slogdet_above_the_shared_memory_limit_without_cupy_is_value_error():
    if numba_ops.cupy_or_none() is not None:
        pytest.skip("CuPy is usable here: large matrices go to cuSOLVER")
    with pytest.raises(
        ValueError, match=rf"slogdet: the numba LU kernel takes n <= {MAX_N}.*got n = {MAX_N + 1}"
    ):
        numba_ops.slogdet(on_gpu(np.eye(MAX_N + 1)[None]))


# --------------------------------------------------------------------------------------
# difference_columns: stacked perturbations of a batched black box
# --------------------------------------------------------------------------------------


def black_box(z):
    """f: (N, 3) -> (N, 2), f(x) = [sin(x0) x1, exp(x1) + x0 x2^2], evaluated where ``z`` lives."""
    cp = numba_ops.cupy_or_none()
    xp = cp if cp is not None else np
    values = z if cp is not None else z.copy_to_host()
    x0, x1, x2 = values[:, 0], values[:, 1], values[:, 2]
    out = xp.stack([xp.sin(x0) * x1, xp.exp(x1) + x0 * x2**2], axis=1)
    return out if cp is not None else cuda.to_device(out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, B])
@pytest.mark.parametrize("method", list(DIFFERENCES))
def test_numba_difference_columns_match_the_analytic_jacobian(rng, dtype, method, batch):
    x = rng.uniform(-1.5, 1.5, (batch, 3)).astype(dtype)
    columns = [2, 0]  # a subset, out of order
    (step32, step64), (tol32, tol64) = DIFFERENCES[method]
    steps = ((step32 if dtype == np.float32 else step64) * np.maximum(1.0, np.abs(x[:, columns]))).astype(
        dtype
    )
    result = numba_ops.difference_columns(black_box, on_gpu(x), columns, on_gpu(steps), method)
    assert result.dtype == dtype
    expected = black_box_jacobian(x.astype(np.float64))[:, :, columns]
    assert_close(host(result), expected, rtol=tol32 if dtype == np.float32 else tol64)


def test_numba_difference_columns_unknown_method_is_value_error():
    x = on_gpu(np.ones((2, 3)))
    with pytest.raises(
        ValueError, match=r"method: expected 'complex-step', 'central' or 'forward', got 'backward'"
    ):
        numba_ops.difference_columns(black_box, x, [0], on_gpu(np.full((2, 1), 1e-6)), "backward")


# --------------------------------------------------------------------------------------
# device_jacobian: one thread per (sample, column) over a one-sample device function
# --------------------------------------------------------------------------------------


def rational(x, out):
    """R^3 -> R^2: [x0 x1^2, x0^3 - x1 x2 + x2 / (1 + x0^2)]; arithmetic only, complex-safe."""
    out[0] = x[0] * x[1] * x[1]
    out[1] = x[0] * x[0] * x[0] - x[1] * x[2] + x[2] / (1.0 + x[0] * x[0])


def rational_jacobian(x):
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    q = 1 + x0**2
    return np.stack([
        np.stack([x1**2, 2 * x0 * x1, np.zeros_like(x0)], axis=1),
        np.stack([3 * x0**2 - 2 * x0 * x2 / q**2, -x2, -x1 + 1 / q], axis=1),
    ], axis=1)  # fmt: skip


def kinked(x, out):
    """R^2 -> R^1: |x0| x1, not complex-safe (abs drops the imaginary part)."""
    out[0] = abs(x[0]) * x[1]


@pytest.fixture(scope="module")
def device_functions():
    return cuda.jit(device=True)(rational), cuda.jit(device=True)(kinked)


# method -> tolerance for float32, for float64
DEVICE_METHODS = {"complex-step": (2e-5, 1e-12), "central": (1e-3, 1e-8)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, B + 2])
@pytest.mark.parametrize("method", list(DEVICE_METHODS))
def test_numba_device_jacobian_matches_the_closed_form(rng, device_functions, dtype, method, batch):
    x = rng.uniform(-1.5, 1.5, (batch, 3)).astype(dtype)
    J = device_jacobian(device_functions[0], on_gpu(x), 2, method=method)
    assert J.shape == (batch, 2, 3) and J.dtype == dtype
    tol32, tol64 = DEVICE_METHODS[method]
    assert_close(
        host(J), rational_jacobian(x.astype(np.float64)), rtol=tol32 if dtype == np.float32 else tol64
    )


def test_numba_device_jacobian_central_serves_functions_that_are_not_complex_safe(rng, device_functions):
    x = rng.uniform(0.5, 1.5, (B, 2)) * np.array([1.0, -1.0])  # x0 > 0: away from the kink
    J = host(device_jacobian(device_functions[1], on_gpu(x), 1, method="central"))
    expected = np.stack([np.sign(x[:, 0]) * x[:, 1], np.abs(x[:, 0])], axis=1)[:, None, :]
    assert_close(J, expected, rtol=1e-8)


def test_numba_device_jacobian_unknown_method_is_value_error(device_functions):
    with pytest.raises(ValueError, match=r"method: expected 'complex-step' or 'central', got 'forward'"):
        device_jacobian(device_functions[0], on_gpu(np.ones((2, 3))), 2, method="forward")


def test_numba_device_jacobian_of_a_matrix_is_value_error(device_functions):
    with pytest.raises(ValueError, match=r"x: expected a batch of vectors \(B, n\), got shape \(2, 3, 1\)"):
        device_jacobian(device_functions[0], on_gpu(np.ones((2, 3, 1))), 2)


# --------------------------------------------------------------------------------------
# On a real GPU: sizes past one wave of blocks, the device-property launch configuration
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_gpu_large_batches_match_numpy(rng, dtype):
    if simulated():
        pytest.skip("needs a real GPU: the simulator runs one Python thread per CUDA thread")
    batch, n = 200_000, 16
    x, x64 = draw(rng, dtype, batch, n)
    y, dy = numba_ops.elementwise("gelu", x)
    ref_y, ref_dy = xp_ops.elementwise("gelu", x64)
    check(y, ref_y, dtype)
    check(dy, ref_dy, dtype)
    a, a64 = draw(rng, dtype, batch // 100, n, n)
    d, d64 = draw(rng, dtype, batch // 100, n)
    check(numba_ops.scale_rows(d, a), xp_ops.scale_rows(d64, a64), dtype)
    sign, logabsdet = numba_ops.slogdet(a)
    ref_sign, ref_logabsdet = np.linalg.slogdet(a64)
    np.testing.assert_array_equal(host(sign), ref_sign)
    assert_close(host(logabsdet), ref_logabsdet, rtol=1e-3 if dtype == np.float32 else 1e-10)
