"""Building the structured local Jacobians the primitives' rules return.

One place decides which structured type represents each kind of local Jacobian, so that
the rules say *what* their Jacobian is (a move of entries, a reduction, a Kronecker
product) and not how it is stored; none of them ever builds a 0/1 or Kronecker matrix:

- :func:`selection`: rows that pick one input each (a ``Gather``), or nothing (a zero row:
  a ``Sparse`` with one entry per nonzero row);
- :func:`broadcast`: the map that broadcasts an operand (``Gather``), optionally scaled per
  row (a ``Sparse`` with per-sample values);
- :func:`reduction`: each output sums a set of inputs, weights shared or per sample (``Sparse``);
- :func:`kronecker`: ``L ⊗ R`` per sample, factors identity / shared / per sample;
- :func:`blocks`: a block-diagonal of per-sample blocks (``BlockDiagonal``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from batchjac.structured.types import BlockDiagonal, Dense, Gather, Jacobian, Kronecker, Shared, Sparse


@functools.lru_cache(maxsize=512)
def broadcast_index(small_shape: tuple[int, ...], big_shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """The flat input position of every entry of an operand of ``small_shape`` broadcast
    to ``big_shape`` (per sample, NumPy's right-aligned rule)."""
    n_small = int(np.prod(small_shape, dtype=np.int64))
    source = np.broadcast_to(np.arange(n_small, dtype=np.int64).reshape(small_shape), big_shape).ravel()
    source = np.ascontiguousarray(source)
    source.setflags(write=False)
    return source


def selection(
    index: np.ndarray, in_size: int, batch: int, dtype: Any, xp: Any, *, scale: float = 1.0
) -> Gather | Sparse:
    """Row ``r`` picks input ``index[r]`` (times ``scale``), or is zero where ``index[r] < 0``."""
    index = np.asarray(index, dtype=np.int64).ravel()
    valid = index >= 0
    if valid.all():
        injective = np.unique(index).size == index.size
        return Gather(xp.asarray(index), in_size, batch, scale, injective=injective, dtype=dtype)
    indptr = np.zeros(index.size + 1, dtype=np.int64)
    np.cumsum(valid, out=indptr[1:])
    values = xp.full(int(indptr[-1]), scale, dtype=dtype)
    return Sparse(xp.asarray(indptr), xp.asarray(index[valid]), values, in_size=in_size, batch=batch)


def broadcast(
    small_shape: tuple[int, ...],
    big_shape: tuple[int, ...],
    batch: int,
    dtype: Any,
    xp: Any,
    *,
    scale: float = 1.0,
    rows: Any = None,
) -> Gather | Sparse:
    """The Jacobian of broadcasting an operand of per-sample ``small_shape`` to ``big_shape``,
    times ``scale``, or with its row ``r`` scaled by ``rows[:, r]`` (``rows``: ``(B, m)``)."""
    index = broadcast_index(tuple(small_shape), tuple(big_shape))
    n_small = int(np.prod(small_shape, dtype=np.int64))
    if rows is None:
        return Gather(xp.asarray(index), n_small, batch, scale, injective=False, dtype=dtype)
    indptr = xp.arange(index.size + 1, dtype=np.int64)
    return Sparse(indptr, xp.asarray(index), rows, in_size=n_small)


def reduction(
    indptr: np.ndarray,
    indices: np.ndarray,
    in_size: int,
    batch: int,
    dtype: Any,
    xp: Any,
    values: Any = None,
) -> Sparse:
    """Output ``r`` sums inputs ``indices[indptr[r]:indptr[r+1]]``, each weighted by
    ``values`` (None: 1; ``(nnz,)``: shared weights; ``(B, nnz)``: per-sample weights)."""
    if values is None:
        values = xp.ones(int(indptr[-1]), dtype=dtype)
    shared = values.ndim == 1
    return Sparse(
        xp.asarray(indptr), xp.asarray(indices), values, in_size=in_size, batch=batch if shared else None
    )


def kronecker(left: Any, right: Any, batch: int, dtype: Any, xp: Any) -> Jacobian:
    """``L ⊗ R`` per sample, row-major: each factor an int (an identity of that size), a
    shared matrix ``(p, q)`` or a per-sample matrix ``(B, p, q)``; ``I_1 ⊗ R`` is ``R`` itself
    (``Shared`` or ``Dense``)."""
    for one, other in ((left, right), (right, left)):
        if isinstance(one, int) and one == 1 and not isinstance(other, int):
            other = other.astype(dtype, copy=False)
            return Shared(other, batch) if other.ndim == 2 else Dense(other)
    return Kronecker(left, right, batch=batch)


def blocks(block_array: Any, batch: int, dtype: Any, xp: Any) -> Dense | BlockDiagonal:
    """The block-diagonal Jacobian of per-sample blocks ``(B, S, p, q)``."""
    if block_array.shape[1] == 1:
        return Dense(block_array[:, 0])
    return BlockDiagonal(block_array)
