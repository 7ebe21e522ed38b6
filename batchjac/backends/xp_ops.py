"""The primitives written against an array namespace: NumPy on the CPU, CuPy on the GPU.

Each function takes the namespace from its inputs, so the same code serves NumPy arrays
(the NumPy backend) and CuPy arrays (the CuPy backend, until a primitive gets a kernel
of its own in :mod:`batchjac.backends.cupy_ops`). Shapes follow
:mod:`batchjac.backends.interface`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from batchjac.backends.interface import Array
from batchjac.core.arrays import namespace
from batchjac.core.elementwise_rules import rule


def elementwise(name: str, *args: Array, **params: Any) -> tuple[Array, ...]:
    found = rule(name)
    if len(args) != found.arity:
        raise TypeError(f"elementwise {name!r}: expected {found.arity} array(s), got {len(args)}")
    return found.value_and_derivatives(namespace(*args), *args, **params)


def scale_rows(d: Array, a: Array) -> Array:
    return d[:, :, None] * a


def scale_cols(a: Array, d: Array) -> Array:
    return a * d[:, None, :]


def batched_matmul(a: Array, b: Array) -> Array:
    return namespace(a, b).matmul(a, b)


def shared_matmul(A: Array, b: Array) -> Array:
    batch, k, n = b.shape
    flat = b.transpose(1, 0, 2).reshape(k, batch * n)  # (k, B*n): one GEMM for the batch
    return (A @ flat).reshape(A.shape[0], batch, n).transpose(1, 0, 2)


def matmul_shared(a: Array, A: Array) -> Array:
    batch, m, k = a.shape
    return (a.reshape(batch * m, k) @ A).reshape(batch, m, A.shape[1])


def diag_to_dense(d: Array) -> Array:
    xp = namespace(d)
    batch, n = d.shape
    out = xp.zeros((batch, n, n), dtype=d.dtype)
    out.reshape(batch, n * n)[:, :: n + 1] = d
    return out


def add_diagonal(a: Array, d: Array) -> Array:
    xp = namespace(a, d)
    batch, n = d.shape
    out = xp.empty((batch, n, n), dtype=xp.result_type(a.dtype, d.dtype))
    out[...] = a
    out.reshape(batch, n * n)[:, :: n + 1] += d
    return out


def matvec(a: Array, v: Array) -> Array:
    if a.ndim == 2:
        return v @ a.T
    return namespace(a, v).matmul(a, v[:, :, None])[:, :, 0]


def vecmat(u: Array, a: Array) -> Array:
    if a.ndim == 2:
        return u @ a
    return namespace(a, u).matmul(u[:, None, :], a)[:, 0, :]


def csr_matvec(indptr: Array, indices: Array, values: Array, x: Array) -> Array:
    xp = namespace(indptr, indices, values, x)
    m, nnz = indptr.shape[0] - 1, indices.shape[0]
    if values.ndim == 2:  # per-sample values broadcast over the middle axes of x
        values = values.reshape(values.shape[0], *(1,) * (x.ndim - 2), nnz)
    products = xp.take(x, indices, axis=-1)  # gathered along the pattern: (B, ..., nnz), our own copy
    if products.dtype == xp.result_type(products, values):
        xp.multiply(products, values, out=products)
    else:
        products = products * values
    if nnz == 0:
        return xp.zeros((*products.shape[:-1], m), dtype=products.dtype)
    if xp is np:
        # reduceat sums each row's run of entries; an empty row has no run (reduceat would
        # return the entry at its start), so only the rows with entries are reduced.
        rows = np.flatnonzero(indptr[1:] > indptr[:-1])
        if nnz == m == rows.shape[0]:
            return products  # one entry per row: the gathered products are the result
        if rows.shape[0] == m:
            return np.add.reduceat(products, indptr[:-1], axis=-1)
        out = np.zeros((*products.shape[:-1], m), dtype=products.dtype)
        out[..., rows] = np.add.reduceat(products, indptr[rows], axis=-1)
        return out
    import cupyx  # on the GPU, an atomic scatter-add (no host round trip for the empty rows)

    out = xp.zeros((*products.shape[:-1], m), dtype=products.dtype)
    row_of_entry = xp.searchsorted(indptr[1:], xp.arange(nnz), side="right")
    cupyx.scatter_add(out, (Ellipsis, row_of_entry), products)
    return out


def slogdet(a: Array) -> tuple[Array, Array]:
    sign, logabsdet = namespace(a).linalg.slogdet(a)
    return sign, logabsdet


def difference_columns(
    f: Callable[[Array], Array], x: Array, columns: Sequence[int], steps: Array, method: str
) -> Array:
    xp = namespace(x)
    batch, n = x.shape
    k = len(columns)
    cols = xp.asarray(columns)
    which = xp.arange(k)
    steps_t = steps.T  # (k, B)
    if method == "complex-step":
        # The narrowest complex type holding x: complex64 for float16 and float32.
        stacked = xp.empty((k, batch, n), dtype=xp.result_type(x.dtype, xp.complex64))
        stacked[...] = x
        stacked[which, :, cols] += 1j * steps_t
        y = f(stacked.reshape(k * batch, n))
        return (y.imag.reshape(k, batch, y.shape[-1]) / steps_t[:, :, None]).transpose(1, 2, 0)
    if method == "central":
        stacked = xp.empty((2, k, batch, n), dtype=x.dtype)
        stacked[...] = x
        stacked[0, which, :, cols] += steps_t
        stacked[1, which, :, cols] -= steps_t
        y = f(stacked.reshape(2 * k * batch, n))
        y = y.reshape(2, k, batch, y.shape[-1])  # m explicit: -1 is ambiguous when B = 0
        return ((y[0] - y[1]) / (2 * steps_t[:, :, None])).transpose(1, 2, 0)
    if method == "forward":
        stacked = xp.empty((k + 1, batch, n), dtype=x.dtype)
        stacked[...] = x
        stacked[1 + which, :, cols] += steps_t
        y = f(stacked.reshape((k + 1) * batch, n))
        y = y.reshape(k + 1, batch, y.shape[-1])
        return ((y[1:] - y[0]) / steps_t[:, :, None]).transpose(1, 2, 0)
    raise ValueError(f"method: expected 'complex-step', 'central' or 'forward', got {method!r}")
