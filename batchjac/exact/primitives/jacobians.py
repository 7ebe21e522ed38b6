"""Building the structured local Jacobians the primitives' rules return.

One place decides which structured type represents each kind of local Jacobian, so that
the rules say *what* their Jacobian is (a move of entries, a reduction, a Kronecker
product) and not how it is stored:

- :func:`selection`: rows that pick one input each, or nothing (a zero row);
- :func:`broadcast`: the map that broadcasts an operand, optionally scaled per row;
- :func:`reduction`: each output sums a set of inputs (weights shared or per sample);
- :func:`kronecker`: ``L ⊗ R`` per sample, factors identity / shared / per sample;
- :func:`blocks`: a block-diagonal of per-sample blocks.
"""

from __future__ import annotations

import functools

import numpy as np

import batchjac.structured.types as structured
from batchjac.structured.types import Dense, Diagonal, Gather, Shared


def _type(name):
    return getattr(structured, name, None)


@functools.lru_cache(maxsize=512)
def broadcast_index(small_shape: tuple, big_shape: tuple) -> np.ndarray:
    """The flat input position of every entry of an operand of ``small_shape`` broadcast
    to ``big_shape`` (per sample, NumPy's right-aligned rule)."""
    n_small = int(np.prod(small_shape, dtype=np.int64))
    source = np.broadcast_to(np.arange(n_small, dtype=np.int64).reshape(small_shape), big_shape).ravel()
    source = np.ascontiguousarray(source)
    source.setflags(write=False)
    return source


def selection(index: np.ndarray, in_size: int, batch: int, dtype, xp, *, scale: float = 1.0):
    """Row ``r`` picks input ``index[r]`` (times ``scale``), or is zero where ``index[r] < 0``."""
    index = np.asarray(index, dtype=np.int64).ravel()
    if (index >= 0).all():
        injective = np.unique(index).size == index.size
        return Gather(xp.asarray(index), in_size, batch, scale, injective=injective, dtype=dtype)
    rows = np.flatnonzero(index >= 0)
    Sparse = _type("Sparse")
    if Sparse is not None:
        indptr = np.zeros(index.size + 1, dtype=np.int64)
        np.cumsum(index >= 0, out=indptr[1:])
        values = xp.full(rows.size, scale, dtype=dtype)
        return Sparse(xp.asarray(indptr), xp.asarray(index[rows]), values, in_size=in_size, batch=batch)
    matrix = np.zeros((index.size, in_size), dtype=dtype)
    matrix[rows, index[rows]] = scale
    return Shared(xp.asarray(matrix), batch)


def broadcast(small_shape, big_shape, batch: int, dtype, xp, *, scale: float = 1.0, rows=None):
    """The Jacobian of broadcasting an operand of per-sample ``small_shape`` to ``big_shape``,
    times ``scale``, or with its row ``r`` scaled by ``rows[:, r]`` (``rows``: ``(B, m)``)."""
    index = broadcast_index(tuple(small_shape), tuple(big_shape))
    n_small = int(np.prod(small_shape, dtype=np.int64))
    if rows is None:
        return Gather(xp.asarray(index), n_small, batch, scale, injective=False, dtype=dtype)
    Sparse = _type("Sparse")
    if Sparse is not None:
        indptr = xp.arange(index.size + 1, dtype=np.int64)
        return Sparse(indptr, xp.asarray(index), rows, in_size=n_small)
    return Diagonal(rows) @ Gather(xp.asarray(index), n_small, batch, 1.0, dtype=dtype)


def reduction(indptr: np.ndarray, indices: np.ndarray, in_size: int, batch: int, dtype, xp, values=None):
    """Output ``r`` sums inputs ``indices[indptr[r]:indptr[r+1]]``, each weighted by
    ``values`` (None: 1; ``(nnz,)``: shared weights; ``(B, nnz)``: per-sample weights)."""
    Sparse = _type("Sparse")
    nnz = int(indptr[-1])
    if Sparse is not None:
        if values is None:
            values = xp.ones(nnz, dtype=dtype)
        shared = values.ndim == 1
        return Sparse(
            xp.asarray(indptr), xp.asarray(indices), values, in_size=in_size, batch=batch if shared else None
        )
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    if values is None or values.ndim == 1:
        matrix = np.zeros((len(indptr) - 1, in_size), dtype=dtype)
        np.add.at(matrix, (rows, np.asarray(indices)), 1.0 if values is None else np.asarray(values))
        return Shared(xp.asarray(matrix), batch)
    dense = xp.zeros((batch, len(indptr) - 1, in_size), dtype=dtype)
    if nnz:
        dense[:, xp.asarray(rows), xp.asarray(indices)] = values
    return Dense(dense)


def kronecker(left, right, batch: int, dtype, xp):
    """``L ⊗ R`` per sample, row-major: each factor an int (an identity of that size), a
    shared matrix ``(p, q)`` or a per-sample matrix ``(B, p, q)``."""
    for one, other in ((left, right), (right, left)):
        if isinstance(one, int) and one == 1 and not isinstance(other, int):  # I_1 ⊗ R = R
            other = other.astype(dtype, copy=False)
            return Shared(other, batch) if other.ndim == 2 else Dense(other)
    Kronecker = _type("Kronecker")
    if Kronecker is not None:
        return Kronecker(left, right, batch=batch)

    def as_matrix(f):
        return xp.eye(f, dtype=dtype) if isinstance(f, int) else f

    L, R = as_matrix(left), as_matrix(right)
    if L.ndim == 2 and R.ndim == 2:
        return Shared(xp.kron(L, R).astype(dtype, copy=False), batch)
    L = xp.broadcast_to(L, (batch, *L.shape[-2:])) if L.ndim == 2 else L
    R = xp.broadcast_to(R, (batch, *R.shape[-2:])) if R.ndim == 2 else R
    p, q = L.shape[1:]
    a, b = R.shape[1:]
    K = L[:, :, None, :, None] * R[:, None, :, None, :]
    return Dense(K.reshape(batch, p * a, q * b).astype(dtype, copy=False))


def blocks(block_array, batch: int, dtype, xp):
    """The block-diagonal Jacobian of per-sample blocks ``(B, S, p, q)``."""
    BlockDiagonal = _type("BlockDiagonal")
    S, p, q = block_array.shape[1:]
    if S == 1:
        return Dense(block_array[:, 0])
    if BlockDiagonal is not None:
        return BlockDiagonal(block_array)
    K = xp.eye(S, dtype=dtype)[None, :, None, :, None] * block_array[:, :, :, None, :]
    return Dense(K.reshape(batch, S * p, S * q))
