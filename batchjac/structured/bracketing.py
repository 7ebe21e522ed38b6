"""The matrix-chain dynamic programme of the chain planner, on plain arrays.

Two functions, :func:`fold` (the tables of every sub-chain) and :func:`bracket` (the
programme), written in the subset of Python that numba compiles: chains
up to :data:`COMPILE_FROM` factors run it as plain Python (no compiler is loaded), longer
chains run it compiled by numba (``cache=True``: compiled once per machine, then loaded from
numba's cache). Its inputs are the tables :mod:`batchjac.structured.chain` builds from the
rules' declarations in :mod:`batchjac.structured.algebra`; the cost arithmetic of a split
lives here only, and serves the optimal, forward and reverse bracketings alike.

Equal sub-chains are solved once: two sub-chains whose factors have equal structures, in
order, have the same cheapest bracketing (the costs depend on structures and sizes only).
Sub-chains are numbered by a trie over the factors' structure ids, so a network of repeated
layers costs ``O(n^2)`` instead of ``O(n^3)``; a chain without repetitions is the plain
``O(n^3)`` programme.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

COMPILE_FROM = 24  # factors; below, plain Python is faster than loading the compiled code

# The columns of the rules' cost coefficients (algebra.COST_TERMS, in that order).
RESULT, CONTRACTION, LEFT, RIGHT, PAIRS, FALLBACK, CONSTANT = range(7)
# The columns of a sub-chain's row in the tables of :func:`fold` and :func:`bracket`.
KIND, STORED, BATCHED, APPLY, ENTRIES, DENSE = range(6)


def poly_value(c: Any, m: float, n: float, nnz: float) -> float:
    """A :class:`~batchjac.structured.algebra.Poly` (coefficients ``const, m, n, mn, nnz``) at
    sizes ``m``, ``n`` and ``nnz`` stored entries."""
    return c[0] + c[1] * m + c[2] * n + c[3] * m * n + c[4] * nnz


def estimated_entries(left: float, right: float, inner: float, m: float, n: float) -> float:
    """The entries of a sparse product ``(m, inner) @ (inner, n)`` whose operands have ``left``
    and ``right`` entries, spread uniformly: ``left * right / inner``, at most ``m n``. Exact
    for a scaling (a diagonal has one entry per row and column)."""
    if inner <= 0:
        return 0.0
    return min(m * n, left * right / inner)


def fold(
    dims: np.ndarray,
    factor: np.ndarray,
    factor_nnz: np.ndarray,
    product: np.ndarray,
    stored_poly: np.ndarray,
    apply_poly: np.ndarray,
    entries_poly: np.ndarray,
    kind_batched: np.ndarray,
    kind_dense: np.ndarray,
    kind_sparse: np.ndarray,
    sub_chain: np.ndarray,
    sub_chain_t: np.ndarray,
    nnz: np.ndarray,
) -> None:
    """Fill the per-sub-chain tables of :func:`bracket` (``sub_chain`` and its transpose) and
    ``nnz``: the kind of the product of every sub-chain ``i..j`` (``product[kind of i..j-1,
    factor[j]]``, the left-to-right fold), its estimated entries when that kind is sparse,
    and its profile's counts (``*_poly[kind]`` at the sub-chain's sizes)."""
    n = dims.shape[0] - 1
    for i in range(n):
        for j in range(i, n):
            if j == i:
                a = factor[i]
                z = factor_nnz[i]
            else:
                previous = int(sub_chain[i, j - 1, KIND])
                a = product[previous, factor[j]]
                z = 0.0
                if kind_sparse[a]:
                    left = poly_value(entries_poly[previous], dims[i], dims[j], nnz[i, j - 1])
                    right = poly_value(entries_poly[factor[j]], dims[j], dims[j + 1], factor_nnz[j])
                    z = estimated_entries(left, right, dims[j], dims[i], dims[j + 1])
            nnz[i, j] = z
            sub_chain[i, j, KIND] = a
            sub_chain[i, j, STORED] = poly_value(stored_poly[a], dims[i], dims[j + 1], z)
            sub_chain[i, j, BATCHED] = kind_batched[a]
            sub_chain[i, j, APPLY] = poly_value(apply_poly[a], dims[i], dims[j + 1], z)
            sub_chain[i, j, ENTRIES] = poly_value(entries_poly[a], dims[i], dims[j + 1], z)
            sub_chain[i, j, DENSE] = kind_dense[a]
            for t in range(6):
                sub_chain_t[j, i, t] = sub_chain[i, j, t]


def _sub_chain_classes(factor: np.ndarray) -> tuple[np.ndarray, int]:
    """``sub[i, j]``: a number for the sub-chain ``i..j``, equal for sub-chains whose factors
    have equal structures (ids ``factor``, sizes included) in order (a trie: ``i..j`` is ``i..j-1`` followed by factor ``j``,
    looked up in one open-addressing hash table per length); and the count of numbers."""
    n = factor.shape[0]
    ids = factor.max() + 1 if n else 1
    sub = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        sub[i, i] = factor[i]
    size = 1
    while size < 2 * n:
        size *= 2
    keys = np.empty(size, dtype=np.int64)
    values = np.empty(size, dtype=np.int64)
    fresh = ids
    for span in range(1, n):
        keys[:] = -1
        for i in range(n - span):
            key = sub[i, i + span - 1] * ids + factor[i + span]
            h = (key * 40503) & (size - 1)
            while keys[h] != -1 and keys[h] != key:
                h = (h + 1) & (size - 1)
            if keys[h] == -1:
                keys[h] = key
                values[h] = fresh
                fresh += 1
            sub[i, i + span] = values[h]
    return sub, fresh


def bracket(
    dims: np.ndarray,
    factor: np.ndarray,
    sub_chain: np.ndarray,
    sub_chain_t: np.ndarray,
    coef: np.ndarray,
    moves: np.ndarray,
    forced: int,
    best: np.ndarray,
    best_t: np.ndarray,
    split: np.ndarray,
) -> None:
    """Fill ``best[i, j]`` (flops per sample, shared flops, numbers moved per sample, shared
    numbers moved) and ``split[i, j]`` for every sub-chain ``i..j`` of an ``n``-factor chain.

    Factor ``i`` is ``dims[i] x dims[i + 1]`` and has structure id ``factor[i]`` (equal ids:
    equal structures, sizes included). ``sub_chain[i, j]`` describes the product of ``i..j``
    (columns :data:`KIND`: its kind id, :data:`STORED`: the numbers it stores per sample, or
    once when not :data:`BATCHED`, :data:`APPLY`: the multiply-adds of applying it to a
    vector, :data:`ENTRIES`: its non-zero entries, :data:`DENSE`: stored as full matrices);
    ``sub_chain_t`` and ``best_t`` hold the same transposed (``[j, i]``), so that the right
    operand of every split is read along a row, as the left one is. ``coef[a, b]`` holds the
    cost terms of the rule for kinds ``a @ b`` and ``moves[a, b]`` whether it moves memory.
    ``forced``: ``0`` searches every split (from the right, keeping the first of equal costs:
    the most reverse-like), ``1`` splits every sub-chain after its first factor (forward
    mode), ``2`` before its last (reverse mode).

    Costs compare lexicographically: what grows with the batch first, then what does not.
    """
    n = dims.shape[0] - 1
    sub, classes = _sub_chain_classes(factor) if forced == 0 else (np.zeros((0, 0), np.int64), np.int64(0))
    solved = np.full(classes, -1, dtype=np.int64)  # per class: a sub-chain that has it solved
    for span in range(1, n):
        for i in range(n - span):
            j = i + span
            if (forced == 1 and j != n - 1) or (forced == 2 and i != 0):
                continue  # not a sub-chain of the forward (reverse) bracketing
            if forced == 0:
                twin = solved[sub[i, j]]
                if twin >= 0:  # an equal sub-chain is solved already
                    for t in range(4):
                        best[i, j, t] = best_t[j, i, t] = best[twin, twin + span, t]
                    split[i, j] = split[twin, twin + span] - twin + i
                    continue
                solved[sub[i, j]] = i
            m = dims[i]
            cols = dims[j + 1]
            result = sub_chain[i, j, STORED]
            result_batched = sub_chain[i, j, BATCHED] > 0
            lo, hi = i, j - 1
            if forced == 1:
                hi = i
            elif forced == 2:
                lo = j - 1
            b0 = b1 = b2 = b3 = np.inf
            chosen = -1
            for k in range(hi, lo - 1, -1):
                # (indexing each cell: a row view would cost a reference count per split)
                a = int(sub_chain[i, k, KIND])
                b = int(sub_chain_t[j, k + 1, KIND])
                inner = dims[k + 1]
                left = sub_chain[i, k, APPLY] * cols
                right = m * sub_chain_t[j, k + 1, APPLY]
                extra = 0.0
                extra_batched = False
                if sub_chain_t[j, k + 1, DENSE] > 0:
                    fallback = left
                elif sub_chain[i, k, DENSE] > 0:
                    fallback = right
                elif cols <= m:
                    fallback = left
                    extra = inner * cols
                    extra_batched = sub_chain_t[j, k + 1, BATCHED] > 0
                else:
                    fallback = right
                    extra = m * inner
                    extra_batched = sub_chain[i, k, BATCHED] > 0
                pairs = 0.0
                if inner > 0:
                    pairs = sub_chain[i, k, ENTRIES] * sub_chain_t[j, k + 1, ENTRIES] / inner
                flops = (
                    coef[a, b, RESULT] * result + coef[a, b, CONTRACTION] * m * inner * cols
                    + coef[a, b, LEFT] * left + coef[a, b, RIGHT] * right + coef[a, b, PAIRS] * pairs
                    + coef[a, b, FALLBACK] * fallback + coef[a, b, CONSTANT]
                )  # fmt: skip
                f0 = best[i, k, 0] + best_t[j, k + 1, 0]
                f1 = best[i, k, 1] + best_t[j, k + 1, 1]
                if result_batched:
                    f0 += flops
                else:
                    f1 += flops
                if f0 > b0 or (f0 == b0 and f1 > b1):
                    continue  # worse in flops: the bytes need not be counted
                m0 = best[i, k, 2] + best_t[j, k + 1, 2]
                m1 = best[i, k, 3] + best_t[j, k + 1, 3]
                if moves[a, b]:
                    if sub_chain[i, k, BATCHED] > 0:
                        m0 += sub_chain[i, k, STORED]
                    else:
                        m1 += sub_chain[i, k, STORED]
                    if sub_chain_t[j, k + 1, BATCHED] > 0:
                        m0 += sub_chain_t[j, k + 1, STORED]
                    else:
                        m1 += sub_chain_t[j, k + 1, STORED]
                    if result_batched:
                        m0 += result
                    else:
                        m1 += result
                    if coef[a, b, FALLBACK] > 0:
                        if extra_batched:
                            m0 += extra
                        else:
                            m1 += extra
                if f0 < b0 or f1 < b1 or m0 < b2 or (m0 == b2 and m1 < b3):
                    b0, b1, b2, b3 = f0, f1, m0, m1
                    chosen = k
            best[i, j, 0] = best_t[j, i, 0] = b0
            best[i, j, 1] = best_t[j, i, 1] = b1
            best[i, j, 2] = best_t[j, i, 2] = b2
            best[i, j, 3] = best_t[j, i, 3] = b3
            split[i, j] = chosen


@functools.cache
def compiled() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """:func:`fold` and :func:`bracket` compiled by numba (imported here, only for long chains)."""
    import numba
    from numba.extending import register_jitable

    for helper in (poly_value, estimated_entries, _sub_chain_classes):
        register_jitable(helper)  # callable from the compiled functions, plain Python elsewhere
    return numba.njit(cache=True, nogil=True)(fold), numba.njit(cache=True, nogil=True)(bracket)
