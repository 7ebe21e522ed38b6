"""Every primitive of the backend interface, on every backend, against float64 NumPy.

The primitives are called on the backend object (``dispatch.get_backend(name)``), as the
code above the interface calls them; inputs are random (fixed seed), cast to the dtype
under test, and the reference is computed in float64 from the very same values.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import DIFFERENCES, assert_close, black_box_jacobian, to_numpy

from batchjac.backends import interface
from batchjac.backends.dispatch import get_backend

DTYPES = (np.float32, np.float64)
B, M, K, N = 5, 3, 4, 6


@pytest.fixture
def ops(backend):
    return get_backend(backend)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def draw(rng, dtype, on_device):
    """``draw(*shape) -> (array on the device, float64 copy of its values)``; with
    ``away_from_zero=True`` every value has magnitude at least 0.5."""

    def make(*shape, away_from_zero=False):
        a = rng.standard_normal(shape)
        if away_from_zero:
            a = np.sign(a) * (0.5 + np.abs(a))
        a = a.astype(dtype)
        return on_device(a), a.astype(np.float64)

    return make


def check(result, expected, dtype):
    assert result.dtype == dtype
    assert_close(result, expected)


def test_every_primitive_of_the_interface_has_a_test_here():
    tests = [name for name in globals() if name.startswith("test_")]
    for prim in interface.PRIMITIVES:
        assert any(name.startswith(f"test_{prim}") for name in tests), prim


# Shared (m, n) matrices are the same for every sample: "shared" draws (m, n), "batched" (B, m, n).
LAYOUTS = ["batched", "shared"]


def matrix(draw, layout, m, n):
    a, a64 = draw(*((m, n) if layout == "shared" else (B, m, n)))
    return a, np.broadcast_to(a64, (B, m, n))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scale_rows(ops, draw, dtype, layout):
    d, d64 = draw(B, M)
    a, a64 = matrix(draw, layout, M, N)
    check(ops.scale_rows(d, a), np.einsum("bi,bij->bij", d64, a64), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_scale_cols(ops, draw, dtype, layout):
    a, a64 = matrix(draw, layout, M, N)
    d, d64 = draw(B, N)
    check(ops.scale_cols(a, d), np.einsum("bij,bj->bij", a64, d64), dtype)


def test_batched_matmul(ops, draw, dtype):
    a, a64 = draw(B, M, K)
    b, b64 = draw(B, K, N)
    check(ops.batched_matmul(a, b), np.matmul(a64, b64), dtype)


@pytest.mark.parametrize("batch", [0, 1, B])
def test_shared_matmul(ops, draw, dtype, batch):
    A, A64 = draw(M, K)
    b, b64 = draw(batch, K, N)
    check(ops.shared_matmul(A, b), np.einsum("ik,bkn->bin", A64, b64), dtype)


@pytest.mark.parametrize("batch", [0, 1, B])
def test_matmul_shared(ops, draw, dtype, batch):
    a, a64 = draw(batch, M, K)
    A, A64 = draw(K, N)
    check(ops.matmul_shared(a, A), np.einsum("bmk,kn->bmn", a64, A64), dtype)


def test_matmul_shared_and_shared_matmul_accept_non_contiguous_inputs(ops, rng, backend):
    if backend != "numpy":
        pytest.skip("strided NumPy views")
    a = rng.standard_normal((B, K, M)).transpose(0, 2, 1)  # (B, M, K), not contiguous
    A = rng.standard_normal((N, 2 * K)).T[::2]  # (K, N), strided and transposed
    b = rng.standard_normal((B, N, 2 * K))[:, :, ::2].transpose(0, 2, 1)  # (B, K, N)
    assert_close(ops.matmul_shared(a, A), np.einsum("bmk,kn->bmn", a, A))
    assert_close(ops.shared_matmul(a[0], b), np.einsum("ik,bkn->bin", a[0], b))


@pytest.mark.parametrize("batch", [0, B])
def test_diag_to_dense(ops, draw, dtype, batch):
    d, d64 = draw(batch, N)
    check(ops.diag_to_dense(d), d64[:, :, None] * np.eye(N), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_add_diagonal(ops, draw, dtype, layout):
    a, a64 = matrix(draw, layout, N, N)
    d, d64 = draw(B, N)
    before = to_numpy(a).copy()
    check(ops.add_diagonal(a, d), a64 + d64[:, :, None] * np.eye(N), dtype)
    np.testing.assert_array_equal(to_numpy(a), before)  # a new array, a untouched


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matvec(ops, draw, dtype, layout):
    a, a64 = matrix(draw, layout, M, N)
    v, v64 = draw(B, N)
    check(ops.matvec(a, v), np.einsum("bij,bj->bi", a64, v64), dtype)


@pytest.mark.parametrize("values_layout", ["per_sample", "shared"])
@pytest.mark.parametrize("columns", [None, 2])
def test_csr_matvec(ops, draw, dtype, values_layout, columns, on_device):
    # a (4, 5) pattern with an empty row and a repeated position (summed)
    indptr, indices = np.array([0, 2, 2, 5, 6]), np.array([1, 4, 0, 3, 0, 2])
    values, v64 = draw(*((B, 6) if values_layout == "per_sample" else (6,)))
    x, x64 = draw(*((B, 5) if columns is None else (B, columns, 5)))
    matrix = np.zeros((B, 4, 5))
    rows = np.repeat(np.arange(4), np.diff(indptr))
    for p in range(6):
        matrix[:, rows[p], indices[p]] += np.broadcast_to(v64, (B, 6))[:, p]
    expected = np.einsum("bij,b...j->b...i", matrix, x64)
    check(ops.csr_matvec(on_device(indptr), on_device(indices), values, x), expected, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vecmat(ops, draw, dtype, layout):
    u, u64 = draw(B, M)
    a, a64 = matrix(draw, layout, M, N)
    check(ops.vecmat(u, a), np.einsum("bi,bij->bj", u64, a64), dtype)


def test_slogdet(ops, rng, dtype, on_device):
    a = rng.standard_normal((B, 4, 4))
    a[0, 1] = 0.0  # singular
    a[1] = np.diag([2.0, -1.0, 3.0, 0.5])  # negative determinant
    a = a.astype(dtype)
    sign, logabsdet = ops.slogdet(on_device(a))
    ref_sign, ref_logabsdet = np.linalg.slogdet(a.astype(np.float64))
    np.testing.assert_array_equal(to_numpy(sign), ref_sign)
    assert ref_sign[0] == 0 and ref_sign[1] == -1
    assert np.isneginf(to_numpy(logabsdet)[0])
    assert_close(to_numpy(logabsdet)[1:], ref_logabsdet[1:])


# --------------------------------------------------------------------------------------
# difference_columns: numerical Jacobian columns of a batched black box
# --------------------------------------------------------------------------------------


def closed_form(xp):
    """f: (N, 3) -> (N, 2), f(x) = [sin(x0) x1, exp(x1) + x0 x2^2], complex-analytic."""

    def f(x):
        x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
        return xp.stack([xp.sin(x0) * x1, xp.exp(x1) + x0 * x2**2], axis=1)

    return f


@pytest.mark.parametrize("batch", [0, B])
@pytest.mark.parametrize("method", list(DIFFERENCES))
def test_difference_columns_match_the_analytic_jacobian(ops, xp, rng, dtype, on_device, method, batch):
    x = rng.uniform(-1.5, 1.5, (batch, 3)).astype(dtype)
    columns = [2, 0]  # a subset, out of order
    (step32, step64), (tol32, tol64) = DIFFERENCES[method]
    step = step32 if dtype == np.float32 else step64
    steps = (step * np.maximum(1.0, np.abs(x[:, columns]))).astype(dtype)
    calls = []

    def f(z):
        calls.append(z.shape)
        return closed_form(xp)(z)

    result = ops.difference_columns(f, on_device(x), columns, on_device(steps), method)
    assert len(calls) == 1, "f is evaluated once on the stacked perturbations"
    assert result.dtype == dtype
    expected = black_box_jacobian(x.astype(np.float64))[:, :, columns]
    assert_close(result, expected, rtol=tol32 if dtype == np.float32 else tol64)


def test_difference_columns_unknown_method_is_value_error(ops, xp, on_device):
    x = on_device(np.ones((2, 3)))
    with pytest.raises(
        ValueError, match=r"method: expected 'complex-step', 'central' or 'forward', got 'backward'"
    ):
        ops.difference_columns(closed_form(xp), x, [0], on_device(np.full((2, 1), 1e-6)), "backward")


# --------------------------------------------------------------------------------------
# elementwise: value and derivative(s) in one call
# --------------------------------------------------------------------------------------


def test_elementwise_unary_tanh(ops, draw, dtype):
    x, x64 = draw(B, N)
    y, dy = ops.elementwise("tanh", x)
    check(y, np.tanh(x64), dtype)
    check(dy, 1 / np.cosh(x64) ** 2, dtype)


def test_elementwise_binary_div(ops, draw, dtype):
    u, u64 = draw(B, N)
    v, v64 = draw(B, N, away_from_zero=True)
    y, du, dv = ops.elementwise("div", u, v)
    check(y, u64 / v64, dtype)
    check(du, 1 / v64, dtype)
    check(dv, -u64 / v64**2, dtype)


def test_elementwise_with_the_wrong_number_of_arrays_is_type_error(ops, draw):
    x, _ = draw(B, N)
    with pytest.raises(TypeError, match=r"elementwise 'mul': expected 2 array\(s\), got 1"):
        ops.elementwise("mul", x)
