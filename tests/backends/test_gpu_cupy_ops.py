"""The CuPy backend's kernels against the NumPy reference, on a real GPU (marked ``gpu``).

Every primitive of :mod:`batchjac.backends.cupy_ops` and every element-wise rule, in float32
and float64, for batches of 0, 1 and 5, for batched and shared matrices, contiguous
inputs, views and broadcasts. ``python tests/test_gpu_cupy_ops.py`` runs every kernel
once with CuPy's memory pool off, so that ``compute-sanitizer --tool memcheck`` sees each
allocation at its exact size::

    compute-sanitizer --tool memcheck --leak-check full python tests/test_gpu_cupy_ops.py
"""

from __future__ import annotations

import numpy as np
import pytest

from batchjac.backends import xp_ops
from batchjac.core.elementwise_rules import BINARY, UNARY

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
BATCHES = [0, 1, 5]
M, N = 3, 6
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}

# Inputs per rule that stay inside the rule's domain (log, sqrt of positives; pow of a positive base).
POSITIVE = {"log", "sqrt", "pow", "power", "reciprocal", "log1p", "div"}


@pytest.fixture(scope="module")
def ops(cp):
    from batchjac.backends import cupy_ops

    return cupy_ops


def compare(result, reference, dtype):
    result = result.get()
    reference = np.asarray(reference)
    assert result.dtype == dtype and result.shape == reference.shape
    assert result.flags.c_contiguous
    scale = max(1.0, float(np.max(np.abs(reference)))) if reference.size else 1.0
    np.testing.assert_allclose(
        result, reference, rtol=TOL[np.dtype(dtype)], atol=TOL[np.dtype(dtype)] * scale
    )


def draw(rng, shape, dtype, positive=False):
    a = rng.standard_normal(shape)
    return (np.abs(a) + 0.5 if positive else a).astype(dtype)


def variants(cp, a, batched):
    """``a`` on the GPU as it may arrive: contiguous, a transposed view, a broadcast."""
    g = cp.asarray(a)
    out = {"contiguous": g}
    if a.ndim >= 2:
        out["view"] = cp.ascontiguousarray(cp.swapaxes(g, -1, -2)).swapaxes(-1, -2)
    if batched and a.shape[0] and a.ndim >= 2:
        out["broadcast"] = cp.broadcast_to(g[:1], a.shape)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("layout", ["batched", "shared"])
@pytest.mark.parametrize("prim", ["scale_rows", "scale_cols", "add_diagonal", "matvec", "vecmat"])
def test_matrix_primitives_match_the_reference(cp, ops, rng, prim, layout, batch, dtype):
    square = prim == "add_diagonal"
    m, n = (N, N) if square else (M, N)
    a = draw(rng, (m, n) if layout == "shared" else (batch, m, n), dtype)
    vector = draw(rng, (batch, m if prim in ("scale_rows", "vecmat") else n), dtype)
    a64, v64 = a.astype(np.float64), vector.astype(np.float64)
    for a_name, a_gpu in variants(cp, a, layout == "batched").items():
        for v_name, v_gpu in variants(cp, vector, True).items():
            if v_name == "broadcast":
                v64_case = np.broadcast_to(v64[:1], v64.shape)
            else:
                v64_case = v64
            a64_case = np.broadcast_to(a64[:1], a64.shape) if a_name == "broadcast" else a64
            args_gpu, args_ref = {
                "scale_rows": ((v_gpu, a_gpu), (v64_case, a64_case)),
                "scale_cols": ((a_gpu, v_gpu), (a64_case, v64_case)),
                "add_diagonal": ((a_gpu, v_gpu), (a64_case, v64_case)),
                "matvec": ((a_gpu, v_gpu), (a64_case, v64_case)),
                "vecmat": ((v_gpu, a_gpu), (v64_case, a64_case)),
            }[prim]
            compare(getattr(ops, prim)(*args_gpu), getattr(xp_ops, prim)(*args_ref), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_diag_to_dense_matches_the_reference(cp, ops, rng, batch, dtype):
    d = draw(rng, (batch, N), dtype)
    for g in variants(cp, d, True).values():
        compare(ops.diag_to_dense(g), xp_ops.diag_to_dense(g.get().astype(np.float64)), dtype)


def test_mixed_dtypes_promote_as_numpy_does(cp, ops, rng):
    d = cp.asarray(draw(rng, (2, M), np.float32))
    a = cp.asarray(draw(rng, (2, M, N), np.float64))
    out = ops.scale_rows(d, a)
    assert out.dtype == np.float64
    compare(out, xp_ops.scale_rows(d.get().astype(np.float64), a.get()), np.float64)


def test_float16_takes_the_namespace_reference(cp, ops):
    d = cp.ones((2, 3), dtype=cp.float16)
    assert ops.diag_to_dense(d).dtype == cp.float16


def test_matvec_of_a_long_row_reduces_across_the_warp(cp, ops, rng):
    a = draw(rng, (3, 2, 1000), np.float64)
    v = draw(rng, (3, 1000), np.float64)
    compare(ops.matvec(cp.asarray(a), cp.asarray(v)), np.einsum("bij,bj->bi", a, v), np.float64)


def _rule_inputs(rng, name, arity, shape, dtype):
    positive = name in POSITIVE
    return [draw(rng, shape, dtype, positive=positive or (name == "div" and i == 1)) for i in range(arity)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted({**UNARY, **BINARY}))
def test_every_elementwise_rule_matches_its_namespace_form(cp, ops, rng, name, dtype):
    found = {**UNARY, **BINARY}[name]
    for batch in BATCHES:
        args = _rule_inputs(rng, name, found.arity, (batch, N), dtype)
        got = ops.elementwise(name, *(cp.asarray(a) for a in args))
        expected = found.value_and_derivatives(np, *(a.astype(np.float64) for a in args))
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            compare(g, e, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_rules_broadcast_and_take_python_numbers(cp, ops, rng, dtype):
    u = draw(rng, (4, N), dtype)
    v = draw(rng, (4, 1), dtype, positive=True)
    y, du, dv = ops.elementwise("div", cp.asarray(u), cp.asarray(v))
    ref = xp_ops.elementwise("div", u.astype(np.float64), v.astype(np.float64))
    for g, e in zip((y, du, dv), ref):
        compare(g, e, dtype)
    y, du, dv = ops.elementwise("mul", cp.asarray(u), 2.5)
    compare(y, u.astype(np.float64) * 2.5, dtype)
    compare(dv, u.astype(np.float64), dtype)


def test_parameters_reach_the_kernel(cp, ops, rng):
    x = draw(rng, (3, N), np.float64)
    y, d = ops.elementwise("leaky_relu", cp.asarray(x), alpha=0.2)
    compare(d, np.where(x > 0, 1.0, 0.2), np.float64)
    y, d = ops.elementwise("power", cp.asarray(np.abs(x) + 0.5), p=3.0)
    compare(y, (np.abs(x) + 0.5) ** 3, np.float64)


def test_unknown_parameters_and_wrong_arity_are_errors(cp, ops):
    x = cp.ones((2, 3))
    with pytest.raises(TypeError, match=r"elementwise 'tanh': unknown parameter\(s\) \['alpha'\]"):
        ops.elementwise("tanh", x, alpha=1.0)
    with pytest.raises(TypeError, match=r"elementwise 'mul': expected 2 array\(s\), got 1"):
        ops.elementwise("mul", x)


def test_every_kernel_runs_clean(cp):
    exercise_every_kernel()
    cp.cuda.get_current_stream().synchronize()


def exercise_every_kernel():
    """Launch every structured kernel and every element-wise kernel once, float and double,
    on sizes that are not multiples of the block (the entry point for compute-sanitizer)."""
    import cupy

    from batchjac.backends import cupy_ops

    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        a = cupy.asarray(draw(rng, (3, 37, 37), dtype))
        d = cupy.asarray(draw(rng, (3, 37), dtype))
        cupy_ops.scale_rows(d, a)
        cupy_ops.scale_cols(a, d)
        cupy_ops.scale_rows(d, a[0])
        cupy_ops.diag_to_dense(d)
        cupy_ops.add_diagonal(a, d)
        cupy_ops.matvec(a, d)
        cupy_ops.vecmat(d, a)
        for name, found in {**UNARY, **BINARY}.items():
            args = _rule_inputs(rng, name, found.arity, (3, 37), dtype)
            cupy_ops.elementwise(name, *(cupy.asarray(x) for x in args))


if __name__ == "__main__":
    import cupy

    cupy.cuda.set_allocator(None)  # exact-size allocations: no pool to hide an overrun
    exercise_every_kernel()
    cupy.cuda.get_current_stream().synchronize()
    print("every CuPy kernel of batchjac ran")
