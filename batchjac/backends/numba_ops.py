"""The numba-CUDA backend: every primitive of :mod:`batchjac.backends.interface` as a kernel launch.

Same names, arguments and shapes as :mod:`batchjac.backends.xp_ops`; the kernels live in
``kernels/numba_*.py`` (``batchjac.kernels``). Inputs are CuPy arrays or anything else with
``__cuda_array_interface__``, taken without copying (``numba.cuda.as_cuda_array``); under
the CUDA simulator, its device arrays and NumPy arrays. Outputs are allocated by CuPy
where CuPy is usable (so its memory pool serves them) and returned as CuPy arrays, else
as numba device arrays. Kernels run on the default stream, the one CuPy uses unless told
otherwise, so a CuPy operation on a result is ordered after the kernel.

Matrix products go to cuBLAS through CuPy when CuPy is usable, else to a tiled
shared-memory GEMM kernel. ``slogdet`` runs its LU kernel for ``n <= 32`` and
cuSOLVER (through CuPy) above; without CuPy, larger ``n`` is a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import cuda

from batchjac.backends import xp_ops
from batchjac.backends.dispatch import backend_problem
from batchjac.backends.interface import Array
from batchjac.core.arrays import cupy_module
from batchjac.core.elementwise_rules import rule
from batchjac.kernels import (
    numba_elementwise,
    numba_numerical,
    numba_products,
    numba_scaling,
    numba_slogdet,
    numba_sparse,
)
from batchjac.kernels.numba_launch import blocks_per_sample, gemm_tile, grid_1d, grid_tiles, simulated


def cupy_or_none() -> Any:
    """The cupy module when CuPy can run here (a driver and a device), else None."""
    return cupy_module() if backend_problem("cupy") is None else None


def device_view(a: Array, name: str = "x") -> Any:
    """``a`` as a numba device array sharing its memory (no copy)."""
    if simulated():
        # The simulator's device arrays wrap NumPy arrays; a NumPy input is moved explicitly.
        return cuda.to_device(a) if isinstance(a, np.ndarray) else a
    if cuda.is_cuda_array(a):
        return cuda.as_cuda_array(a)
    raise TypeError(
        f"{name}: the numba backend expects a GPU array (CuPy, or anything with "
        f"__cuda_array_interface__), got {type(a).__name__}"
    )


def empty(shape: tuple[int, ...], dtype: Any) -> Array:
    """A new uninitialised GPU array: CuPy's when usable (its memory pool), else numba's."""
    cp = cupy_or_none()
    if cp is not None:
        return cp.empty(shape, dtype=dtype)
    return cuda.device_array(shape, dtype=dtype)


def _flat(a: Array, name: str) -> Any:
    """``a`` as a 1-D numba view; element-wise kernels need C order to index flat."""
    view = device_view(a, name)
    if not view.is_c_contiguous():
        cp = cupy_or_none()
        if cp is None:
            raise ValueError(f"{name}: the numba element-wise kernels need a C-contiguous array without CuPy")
        view = device_view(cp.ascontiguousarray(cp.asarray(a)), name)
    return view.reshape(view.size)


# The simulator's shapes take no negative indices.
def _rows(a: Array) -> int:
    return a.shape[a.ndim - 2]


def _cols(a: Array) -> int:
    return a.shape[a.ndim - 1]


def _result_dtype(*arrays: Array) -> np.dtype[Any]:
    return np.result_type(*(a.dtype for a in arrays))


def _launch_1d(kernel: Any, size: int, *args: Any) -> None:
    blocks, threads = grid_1d(size)
    kernel[blocks, threads](*args)


# --------------------------------------------------------------------------------------
# Element-wise value and derivative(s)
# --------------------------------------------------------------------------------------


def elementwise(name: str, *args: Array, **params: Any) -> tuple[Array, ...]:
    found = rule(name)
    if len(args) != found.arity:
        raise TypeError(f"elementwise {name!r}: expected {found.arity} array(s), got {len(args)}")
    if found.functions is not None:
        return user_elementwise(*found.functions, *args)
    if found.arity == 2 and args[0].shape != args[1].shape:
        raise ValueError(
            f"elementwise {name!r}: the numba kernels take u and v of one shape, got {args[0].shape} and {args[1].shape}"
        )
    dtype = _result_dtype(*args)
    kernel = numba_elementwise.rule_kernel(dtype, name, found.scalar, found.arity, tuple(found.params))
    flats = [_flat(a, n) for a, n in zip(args, ("x",) if found.arity == 1 else ("u", "v"))]
    outputs = [empty(args[0].shape, dtype) for _ in range(1 + found.arity)]
    out_flats = [device_view(o).reshape(o.size) for o in outputs]
    if found.arity == 1:
        values = tuple(dtype.type(params.get(p, default)) for p, default in found.params.items())
        _launch_1d(kernel, args[0].size, *flats, *out_flats, values)
    else:
        _launch_1d(kernel, args[0].size, *flats, *out_flats)
    return tuple(outputs)


def user_elementwise(
    f: Callable[[float], float], df: Callable[[float], float], x: Array
) -> tuple[Array, Array]:
    """``(f(x), df(x))`` of scalar Python functions over a GPU array, by one fused kernel."""
    dtype = np.dtype(x.dtype)
    kernel = numba_elementwise.user_kernel(dtype, f, df)
    y, dy = empty(x.shape, dtype), empty(x.shape, dtype)
    _launch_1d(
        kernel, x.size, _flat(x, "x"), device_view(y).reshape(y.size), device_view(dy).reshape(dy.size), ()
    )
    return y, dy


# --------------------------------------------------------------------------------------
# Scalings and diagonals
# --------------------------------------------------------------------------------------


def scale_rows(d: Array, a: Array) -> Array:
    batch, m = d.shape
    out = empty((batch, m, _cols(a)), _result_dtype(d, a))
    kernel = numba_scaling.scale_rows_kernel(a.ndim == 2)
    _launch_1d(kernel, out.size, device_view(d, "d"), device_view(a, "a"), device_view(out))
    return out


def scale_cols(a: Array, d: Array) -> Array:
    batch, n = d.shape
    out = empty((batch, _rows(a), n), _result_dtype(a, d))
    kernel = numba_scaling.scale_cols_kernel(a.ndim == 2)
    _launch_1d(kernel, out.size, device_view(a, "a"), device_view(d, "d"), device_view(out))
    return out


def diag_to_dense(d: Array) -> Array:
    batch, n = d.shape
    out = empty((batch, n, n), d.dtype)
    _launch_1d(numba_scaling.diag_to_dense_kernel(), out.size, device_view(d, "d"), device_view(out))
    return out


def add_diagonal(a: Array, d: Array) -> Array:
    batch, n = d.shape
    out = empty((batch, n, n), _result_dtype(a, d))
    kernel = numba_scaling.add_diagonal_kernel(a.ndim == 2)
    _launch_1d(kernel, out.size, device_view(a, "a"), device_view(d, "d"), device_view(out))
    return out


# --------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------


def _tiled_matmul(a: Array, b: Array, batch: int) -> Array:
    m, n = _rows(a), _cols(b)
    dtype = _result_dtype(a, b)
    out = empty((batch, m, n), dtype)
    tile = gemm_tile()
    kernel = numba_products.tiled_matmul_kernel(dtype, a.ndim == 2, b.ndim == 2)
    grid = grid_tiles(-(-m // tile), -(-n // tile), batch)
    kernel[grid, (tile, tile)](device_view(a, "a"), device_view(b, "b"), device_view(out))
    return out


def batched_matmul(a: Array, b: Array) -> Array:
    cp = cupy_or_none()
    if cp is not None:
        return cp.matmul(cp.asarray(a), cp.asarray(b))
    return _tiled_matmul(a, b, a.shape[0])


def shared_matmul(A: Array, b: Array) -> Array:
    cp = cupy_or_none()
    if cp is not None:
        return xp_ops.shared_matmul(cp.asarray(A), cp.asarray(b))  # one flattened cuBLAS GEMM
    return _tiled_matmul(A, b, b.shape[0])


def matmul_shared(a: Array, A: Array) -> Array:
    cp = cupy_or_none()
    if cp is not None:
        return xp_ops.matmul_shared(cp.asarray(a), cp.asarray(A))
    return _tiled_matmul(a, A, a.shape[0])


def matvec(a: Array, v: Array) -> Array:
    batch = v.shape[0]
    dtype = _result_dtype(a, v)
    out = empty((batch, _rows(a)), dtype)
    kernel = numba_products.matvec_kernel(dtype, a.ndim == 2)
    _launch_1d(kernel, out.size, device_view(a, "a"), device_view(v, "v"), device_view(out))
    return out


def vecmat(u: Array, a: Array) -> Array:
    batch = u.shape[0]
    dtype = _result_dtype(u, a)
    out = empty((batch, _cols(a)), dtype)
    kernel = numba_products.vecmat_kernel(dtype, a.ndim == 2)
    _launch_1d(kernel, out.size, device_view(u, "u"), device_view(a, "a"), device_view(out))
    return out


def csr_matvec(indptr: Array, indices: Array, values: Array, x: Array) -> Array:
    batch, n = x.shape[0], x.shape[x.ndim - 1]
    columns = 1 if x.ndim == 2 else x.shape[1]
    m = indptr.shape[0] - 1
    dtype = _result_dtype(values, x)
    out = empty((batch, columns, m), dtype)
    x_view = device_view(x, "x")
    if x.ndim == 2:
        x_view = x_view.reshape(batch, 1, n)
    kernel = numba_sparse.csr_matvec_kernel(dtype, values.ndim == 1)
    _launch_1d(
        kernel,
        out.size,
        device_view(indptr, "indptr"),
        device_view(indices, "indices"),
        device_view(values, "values"),
        x_view,
        device_view(out),
    )
    return out.reshape(batch, m) if x.ndim == 2 else out


# --------------------------------------------------------------------------------------
# slogdet
# --------------------------------------------------------------------------------------


def slogdet(a: Array) -> tuple[Array, Array]:
    batch, n, _ = a.shape
    if n > numba_slogdet.MAX_N:
        cp = cupy_or_none()
        if cp is None:
            raise ValueError(
                f"slogdet: the numba LU kernel takes n <= {numba_slogdet.MAX_N} (one shared-memory "
                f"tile per sample), got n = {n}; install CuPy for cuSOLVER on larger matrices"
            )
        sign, logabsdet = cp.linalg.slogdet(cp.asarray(a))
        return sign, logabsdet
    dtype = np.dtype(a.dtype)
    sign, logabsdet = empty((batch,), dtype), empty((batch,), dtype)
    blocks, threads = blocks_per_sample(batch, threads=32 if n <= 8 else 128)
    numba_slogdet.lu_slogdet_kernel(dtype)[blocks, threads](
        device_view(a, "a"), device_view(sign), device_view(logabsdet)
    )
    return sign, logabsdet


# --------------------------------------------------------------------------------------
# Numerical columns of a batched black box
# --------------------------------------------------------------------------------------

_PERTURB: dict[str, Callable[[np.dtype[Any]], Any]] = {
    "complex-step": lambda dtype: numba_numerical.perturb_complex_kernel(dtype),
    "central": lambda dtype: numba_numerical.perturb_central_kernel(),
    "forward": lambda dtype: numba_numerical.perturb_forward_kernel(),
}
_QUOTIENT: dict[str, Callable[[], Any]] = {
    "complex-step": numba_numerical.complex_step_quotient_kernel,
    "central": numba_numerical.central_quotient_kernel,
    "forward": numba_numerical.forward_quotient_kernel,
}


def _stack_shape(method: str, k: int, batch: int, n: int) -> tuple[int, ...]:
    return {"complex-step": (k, batch, n), "central": (2, k, batch, n), "forward": (k + 1, batch, n)}[method]


def difference_columns(
    f: Callable[[Array], Array], x: Array, columns: Sequence[int], steps: Array, method: str
) -> Array:
    if method not in _PERTURB:
        raise ValueError(f"method: expected 'complex-step', 'central' or 'forward', got {method!r}")
    dtype = np.dtype(x.dtype)
    batch, n = x.shape
    k = len(columns)
    stack_dtype = np.result_type(dtype, np.complex64) if method == "complex-step" else dtype
    stacked = empty(_stack_shape(method, k, batch, n), stack_dtype)
    cp = cupy_or_none()
    cols = (
        cp.asarray(columns, dtype=np.int64)
        if cp is not None
        else cuda.to_device(np.asarray(columns, np.int64))
    )
    x_view, steps_view = device_view(x, "x"), device_view(steps, "steps")
    _launch_1d(
        _PERTURB[method](dtype), stacked.size, x_view, device_view(cols), steps_view, device_view(stacked)
    )
    rows = int(np.prod(stacked.shape[:-1]))
    y = f(stacked.reshape(rows, n))  # one evaluation of the black box on every perturbation
    m = _cols(y)
    y_view = device_view(y, "f's output").reshape((*stacked.shape[:-1], m))
    out = empty((batch, m, k), dtype)
    _launch_1d(_QUOTIENT[method](), out.size, y_view, steps_view, device_view(out))
    return out
