"""The CuPy backend: the primitives of :mod:`batchjac.backends.interface` on CUDA kernels.

Each function checks its inputs, picks the kernel and launches it; the kernels are built
in :mod:`batchjac.backends.cupy_kernels` (generated from the element-wise rules, or read
from ``kernels/structured.cu``). Every result is a new C-contiguous CuPy array on the
current device; inputs are read in place through their strides (views and broadcasts
included), nothing is synchronised with the host and nothing leaves the device.

Fusions (each saves a full pass over the result):

- ``scale_rows`` / ``scale_cols`` of a shared ``(m, n)`` matrix read it with a zero batch
  stride and write the ``(B, m, n)`` product once: the shared matrix is never broadcast
  into memory first;
- ``diag_to_dense`` writes every entry once (no zero fill followed by a scatter), and
  ``add_diagonal`` writes ``a + diag(d)`` in one pass (no copy followed by an update);
- ``elementwise`` computes the value and every derivative in one kernel.

The matrix products (``batched_matmul``, ``shared_matmul``, ``matmul_shared``), the JVP
and VJP of a shared matrix, ``slogdet`` and ``difference_columns`` are the CuPy-generic
code of :mod:`batchjac.backends.xp_ops`: cuBLAS GEMMs through ``cupy.matmul`` (``Shared``
times a batched matrix is one flattened GEMM), cuBLAS batched LU through
``cupy.linalg.slogdet``, and ``f`` evaluated once on the stacked perturbations.
Data types other than float32 and float64 (float16) take that code too.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from batchjac.backends import cupy_kernels, xp_ops
from batchjac.backends.interface import Array
from batchjac.core.elementwise_rules import rule
from batchjac.core.errors import BackendUnavailableError

_BLOCK = 256  # threads per block, a multiple of the warp size
_BLOCKS_PER_MULTIPROCESSOR = 32  # grid-stride loops: enough blocks to fill the device


def _cupy() -> Any:
    import cupy

    return cupy


def _common_dtype(*arrays: Array) -> np.dtype[Any] | None:
    """The floating dtype of the result, or None when the kernels have no instance for it."""
    dtype = np.result_type(*(a.dtype for a in arrays))
    return dtype if dtype in cupy_kernels.CTYPES else None


def _strided(a: Array, dtype: np.dtype[Any], batched_ndim: int) -> tuple[Array, tuple[np.int64, ...]]:
    """``(a, strides)``: ``a`` in ``dtype`` and its strides in elements, batch first.

    ``a`` with ``batched_ndim - 1`` axes is shared by the batch: its batch stride is 0.
    """
    a = a.astype(dtype, copy=False)
    if any(s % a.itemsize for s in a.strides):  # a byte-offset view: no element strides
        a = _cupy().ascontiguousarray(a)
    strides = tuple(np.int64(s // a.itemsize) for s in a.strides)
    if a.ndim == batched_ndim - 1:
        strides = (np.int64(0), *strides)
    return a, strides


def _launch(kernel: Any, threads: int, args: tuple[Any, ...]) -> None:
    """Run ``kernel`` with at least ``threads`` threads (grid-stride beyond a full device)."""
    if threads == 0:
        return
    cp = _cupy()
    cap = _BLOCKS_PER_MULTIPROCESSOR * cupy_kernels.multiprocessors(cp.cuda.runtime.getDevice())
    blocks = min(-(-threads // _BLOCK), cap)
    kernel((blocks,), (_BLOCK,), args)


def _sizes(*sizes: int) -> tuple[np.int64, ...]:
    return tuple(np.int64(s) for s in sizes)


# --------------------------------------------------------------------------------------
# Element-wise rules
# --------------------------------------------------------------------------------------


def elementwise(name: str, *args: Array, **params: Any) -> tuple[Array, ...]:
    """Value and derivative(s) of rule ``name`` in one kernel, of the broadcast shape of
    the arguments (Python numbers among them broadcast too).

    float16 data take the rule's namespace form (:func:`xp_ops.elementwise`). A rule
    registered by ``bj.register_elementwise`` (scalar Python functions that only numba
    compiles) is refused: the default GPU dispatch sends it to the numba backend.
    """
    found = rule(name)
    if found.functions is not None:
        raise BackendUnavailableError(
            f"elementwise {name!r}: a rule registered with bj.register_elementwise compiles with numba, not CuPy; "
            "use backend='numba' (or no backend: the default GPU dispatch picks numba for it)"
        )
    if len(args) != found.arity:
        raise TypeError(f"elementwise {name!r}: expected {found.arity} array(s), got {len(args)}")
    unknown = set(params) - set(found.params)
    if unknown:
        raise TypeError(f"elementwise {name!r}: unknown parameter(s) {sorted(unknown)}")
    dtype = _common_dtype(*(a for a in args if not isinstance(a, numbers.Number)))
    if found.scalar is None or dtype is None:
        return xp_ops.elementwise(name, *args, **params)
    # A Python number goes in as a scalar of the arrays' dtype (NumPy keeps it weak too).
    operands = [dtype.type(a) if isinstance(a, numbers.Number) else a.astype(dtype, copy=False) for a in args]
    values = {**found.params, **params}
    return cupy_kernels.elementwise_kernel(name)(*operands, *(dtype.type(values[p]) for p in found.params))


# --------------------------------------------------------------------------------------
# Scalings and diagonals
# --------------------------------------------------------------------------------------


def scale_rows(d: Array, a: Array) -> Array:
    """``diag(d) @ a``: d ``(B, m)``; a ``(B, m, n)`` or shared ``(m, n)`` -> ``(B, m, n)``."""
    dtype = _common_dtype(d, a)
    if dtype is None:
        return xp_ops.scale_rows(d, a)
    (batch, m), n = d.shape, a.shape[-1]
    d, (d_sb, d_si) = _strided(d, dtype, 2)
    a, (a_sb, a_si, a_sj) = _strided(a, dtype, 3)
    out = _cupy().empty((batch, m, n), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("scale_rows", dtype)
    _launch(kernel, out.size, (d, d_sb, d_si, a, a_sb, a_si, a_sj, out, *_sizes(batch, m, n)))
    return out


def scale_cols(a: Array, d: Array) -> Array:
    """``a @ diag(d)``: a ``(B, m, n)`` or shared ``(m, n)``; d ``(B, n)`` -> ``(B, m, n)``."""
    dtype = _common_dtype(a, d)
    if dtype is None:
        return xp_ops.scale_cols(a, d)
    (batch, n), m = d.shape, a.shape[-2]
    a, (a_sb, a_si, a_sj) = _strided(a, dtype, 3)
    d, (d_sb, d_sj) = _strided(d, dtype, 2)
    out = _cupy().empty((batch, m, n), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("scale_cols", dtype)
    _launch(kernel, out.size, (a, a_sb, a_si, a_sj, d, d_sb, d_sj, out, *_sizes(batch, m, n)))
    return out


def diag_to_dense(d: Array) -> Array:
    """``(B, n) -> (B, n, n)`` with ``d`` on the diagonal, every entry written once."""
    dtype = _common_dtype(d)
    if dtype is None:
        return xp_ops.diag_to_dense(d)
    batch, n = d.shape
    d, (d_sb, d_si) = _strided(d, dtype, 2)
    out = _cupy().empty((batch, n, n), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("diag_to_dense", dtype)
    _launch(kernel, out.size, (d, d_sb, d_si, out, *_sizes(batch, n)))
    return out


def add_diagonal(a: Array, d: Array) -> Array:
    """``a + diag(d)`` as a new array in one pass: a ``(B, n, n)`` or shared ``(n, n)``;
    d ``(B, n)`` -> ``(B, n, n)``."""
    dtype = _common_dtype(a, d)
    if dtype is None:
        return xp_ops.add_diagonal(a, d)
    batch, n = d.shape
    a, (a_sb, a_si, a_sj) = _strided(a, dtype, 3)
    d, (d_sb, d_si) = _strided(d, dtype, 2)
    out = _cupy().empty((batch, n, n), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("add_diagonal", dtype)
    _launch(kernel, out.size, (a, a_sb, a_si, a_sj, d, d_sb, d_si, out, *_sizes(batch, n)))
    return out


# --------------------------------------------------------------------------------------
# Jacobian-vector and vector-Jacobian products
# --------------------------------------------------------------------------------------


def matvec(a: Array, v: Array) -> Array:
    """JVP: a ``(B, m, n)`` or shared ``(m, n)``; v ``(B, n)`` -> ``(B, m)``.

    A shared matrix is one GEMM ``v @ a.T`` for the whole batch; a batched one is a
    kernel with one warp per output entry.
    """
    dtype = _common_dtype(a, v)
    if a.ndim == 2 or dtype is None:
        return xp_ops.matvec(a, v)
    batch, m, n = a.shape
    a, (a_sb, a_si, a_sj) = _strided(a, dtype, 3)
    v, (v_sb, v_sj) = _strided(v, dtype, 2)
    out = _cupy().empty((batch, m), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("batched_matvec", dtype)
    _launch(kernel, 32 * out.size, (a, a_sb, a_si, a_sj, v, v_sb, v_sj, out, *_sizes(batch, m, n)))
    return out


def vecmat(u: Array, a: Array) -> Array:
    """VJP: u ``(B, m)``; a ``(B, m, n)`` or shared ``(m, n)`` -> ``(B, n)``.

    A shared matrix is one GEMM ``u @ a`` for the whole batch; a batched one is a kernel
    with one thread per output entry.
    """
    dtype = _common_dtype(u, a)
    if a.ndim == 2 or dtype is None:
        return xp_ops.vecmat(u, a)
    batch, m, n = a.shape
    u, (u_sb, u_si) = _strided(u, dtype, 2)
    a, (a_sb, a_si, a_sj) = _strided(a, dtype, 3)
    out = _cupy().empty((batch, n), dtype=dtype)
    kernel = cupy_kernels.structured_kernel("batched_vecmat", dtype)
    _launch(kernel, out.size, (u, u_sb, u_si, a, a_sb, a_si, a_sj, out, *_sizes(batch, m, n)))
    return out
