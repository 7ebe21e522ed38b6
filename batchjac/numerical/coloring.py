"""Sparse numerical Jacobians of black boxes by column colouring (issue 19).

Two columns of a per-sample Jacobian ``(m, n)`` are *structurally orthogonal* when no row
has an entry in both. Perturbing all the columns of such a group at once, each by its own
step, moves every output through at most one of them, so one evaluation of ``f`` recovers
the whole group: entry ``(i, j)`` is the difference of output ``i`` divided by the step of
column ``j``. :func:`color_columns` splits the columns into such groups (colours) greedily,
largest first; :func:`sparse_value_and_jacobian` (what ``bj.jacobian(f, x,
method=..., sparsity=P)`` runs) evaluates ``f`` once per colour instead of once per column.

Evaluations of ``f`` on the whole batch, for ``c`` colours: central differences ``2c``
(``+h`` and ``-h``), forward differences ``c + 1`` (the base point is the returned value),
complex step ``c``. Each is exactly what the dense path (:mod:`.differences`) computes for
the same column, with the same per-sample steps (``x + h`` exact), so where the pattern is
structural (``f_i`` does not read ``x_j`` off the pattern) the entries are the dense
path's bit for bit. Beside them every call pays what the dense path pays: ``f`` on the
first ``HEAD_SAMPLES`` samples (the output shape), on the batch for the value, on ``2B``
samples for the check that samples do not mix, and for complex step ``12B`` real samples
for the complex-safety check (run on the sparse Jacobian, never densified); a failure raises
:class:`NotComplexSafeError`. The returned :class:`~batchjac.Sparse` carries ``colors``
(the number of colours), ``evaluations`` (the count above, 0 when the batch or the pattern
is empty) and ``coloring`` (the :class:`Coloring`).

A pattern that misses an entry ``(i, j)`` gives wrong values, silently: ``J_ij h_j`` is
added to the entry of row ``i`` that shares ``j``'s colour. A superset is always safe (it
only costs colours). ``bj.sparsity(f, x)`` gives a structural pattern for functions that
trace; ``"auto"`` detects one by probing (:func:`probe_pattern` says how reliable that is).

Chunks and memory: ``chunk_size`` is the number of colours per call of ``f`` (``None``: as
many as fit in half the free memory, :func:`.differences.memory_estimate` with the
Jacobian's ``nnz`` entries per sample); one colour that does not fit raises
``MemoryError`` before anything is allocated. Results are identical for every
``chunk_size`` (the same arithmetic per colour), given an ``f`` that computes each sample
the same way whatever the batch size.

Devices: the pattern and its colouring are host (NumPy) objects; a pattern given on the
GPU is read back once to colour it, and the index arrays of the colouring go to the inputs'
device once per call (``O(nnz + n)`` integers). Perturbation, evaluation and decompression
(a gather of the compressed differences at ``(colour of column j, row i)`` divided by
``h_j``) run on the inputs' device, written against the array namespace (NumPy or CuPy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable

import numba
import numpy as np
import numpy.typing as npt
import scipy.sparse

from batchjac.core.arrays import GPU, device_of, namespace
from batchjac.core.validation import check_chunk_size, check_progress
from batchjac.numerical.differences import (
    _BLOCKS,
    _SEED,
    FALLBACK_BUDGET,
    MEMORY_FRACTION,
    BlackBox,
    Plan,
    _by_sample_blocks,
    _eps,
    _progress_bar,
    _random,
    _size,
    black_box,
    check_complex_safe,
    check_samples_independent,
    free_memory,
    memory_estimate,
    steps,
)
from batchjac.structured.sparse import Sparse

PROBE_SAMPLES = 2  # samples of the batch probed by sparsity="auto" ...
PROBE_POINTS = 3  # ... each at itself and at PROBE_POINTS - 1 random points near it
PROBE_SPREAD = 0.01  # the random points: x + PROBE_SPREAD * U(-1, 1) * max(1, |x|)
PROBE_ROUNDING = 4.0  # an entry is kept beyond this many rounding errors of its difference
INDEX = np.int64


# --------------------------------------------------------------------------------------
# Colouring
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Coloring:
    """A partition of the columns of an ``(m, n)`` pattern into structurally orthogonal groups.

    ``colors`` ``(n,)`` int64: the colour of each column, ``0 .. count - 1``, or ``-1`` for a
    column without entries (nothing reads it, so it is never perturbed). No two columns of one
    colour have an entry in the same row. ``indptr`` ``(m + 1,)`` and ``indices`` ``(nnz,)``
    are the pattern in canonical CSR form (columns sorted within rows, no repeats); ``shape``
    is ``(m, n)``. A ``Coloring`` serves as ``sparsity=`` itself, which skips colouring again.
    """

    colors: np.ndarray
    count: int
    indptr: np.ndarray
    indices: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def __repr__(self) -> str:
        return f"Coloring(shape={self.shape}, nnz={self.nnz}, count={self.count})"


def color_columns(pattern: Any) -> Coloring:
    """Greedy largest-first colouring of the structurally orthogonal columns of ``pattern``.

    ``pattern`` is the per-sample pattern ``(m, n)``: a boolean NumPy array (True where an
    entry may be nonzero; integer 0/1 arrays are accepted), a SciPy sparse matrix or array
    (its stored nonzero entries), a :class:`~batchjac.Sparse` (its pattern) or a
    :class:`Coloring` (returned as it is). Columns are taken in decreasing order of their
    degree in the column intersection graph (the number of other columns they share a row
    with; ties by index) and each gets the smallest colour none of its neighbours has. The
    count is at most the largest degree plus one, and at least the longest row.

    Cost, compiled by numba: the degrees take ``O(sum over rows of (entries in the row)^2)``
    time (the size of the intersection graph), the greedy pass ``O(nnz count / 64)`` (a bit
    set of the colours taken in each row), memory ``O(nnz + n + m count / 64)``. Measured
    (``benchmarks/bench_sparse.py``): a banded pattern with ``n = 10^5`` in milliseconds.

    >>> import numpy as np
    >>> P = np.eye(5, dtype=bool) | np.eye(5, k=1, dtype=bool) | np.eye(5, k=-1, dtype=bool)
    >>> c = color_columns(P)  # tridiagonal: columns j and j + 3 never share a row
    >>> c.count, c.colors.tolist()
    (3, [2, 1, 0, 2, 1])
    """
    if isinstance(pattern, Coloring):
        return pattern
    return _coloring(_csr_pattern(pattern, "pattern"))


def _coloring(P: scipy.sparse.csr_array) -> Coloring:
    m, n = P.shape
    indptr, indices = P.indptr.astype(INDEX), P.indices.astype(INDEX)
    C = P.tocsc()  # the rows of each column
    col_ptr, col_rows = C.indptr.astype(INDEX), C.indices.astype(INDEX)
    degrees = _degrees(indptr, indices, col_ptr, col_rows)
    order = np.argsort(-degrees, kind="stable")
    colors = _greedy(indptr, indices, col_ptr, col_rows, order)
    count = int(colors.max()) + 1 if n else 0
    return Coloring(colors=colors, count=max(count, 0), indptr=indptr, indices=indices, shape=(m, n))


@numba.njit(cache=True, nogil=True)
def _degrees(
    indptr: Any, indices: Any, col_ptr: Any, col_rows: Any
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """The number of other columns each column shares a row with, ``(n,)``."""
    n = col_ptr.shape[0] - 1
    seen = np.full(n, -1, dtype=np.int64)  # seen[k] == j: column k already counted for j
    degrees = np.zeros(n, dtype=np.int64)
    for j in range(n):
        seen[j] = j
        for p in range(col_ptr[j], col_ptr[j + 1]):
            r = col_rows[p]
            for q in range(indptr[r], indptr[r + 1]):
                k = indices[q]
                if seen[k] != j:
                    seen[k] = j
                    degrees[j] += 1
    return degrees


@numba.njit(cache=True, nogil=True)
def _greedy(
    indptr: Any, indices: Any, col_ptr: Any, col_rows: Any, order: Any
) -> npt.NDArray[np.int64]:  # pragma: no cover - compiled
    """The smallest colour free of every neighbour's, column by column in ``order``.

    The colours taken in each row are kept as a bit set (``words`` 64-bit words per row,
    doubled when a colour beyond them is needed), so a column costs its rows times the words,
    not the entries of its rows: ``O(nnz count / 64)`` in all.
    """
    m, n = indptr.shape[0] - 1, order.shape[0]
    colors = np.full(n, -1, dtype=np.int64)
    words = 1
    used = np.zeros((m, words), dtype=np.uint64)  # bit c of row r: a column of colour c is in row r
    forbidden = np.zeros(words, dtype=np.uint64)
    one = np.uint64(1)
    for j in order:
        if col_ptr[j] == col_ptr[j + 1]:
            continue  # no entries: never perturbed
        forbidden[:] = 0
        for p in range(col_ptr[j], col_ptr[j + 1]):
            for w in range(words):
                forbidden[w] |= used[col_rows[p], w]
        c = words * 64
        for w in range(words):
            free = ~forbidden[w]
            if free != 0:
                bit = 0
                while (free >> np.uint64(bit)) & one == 0:
                    bit += 1
                c = w * 64 + bit
                break
        if c >= words * 64:
            grown = np.zeros((m, 2 * words), dtype=np.uint64)
            grown[:, :words] = used
            used, words = grown, 2 * words
            forbidden = np.zeros(words, dtype=np.uint64)
        colors[j] = c
        for p in range(col_ptr[j], col_ptr[j + 1]):
            used[col_rows[p], c // 64] |= one << np.uint64(c % 64)
    return colors


def _host(a: Any) -> np.ndarray:
    """A GPU array read back to the host (the pattern only: colouring is a host algorithm)."""
    return a.get() if device_of(a) == GPU else np.asarray(a)


_EXPECTED = "a boolean array (m, n), a SciPy sparse matrix, a bj.Sparse, a Coloring or 'auto'"


def _csr_pattern(pattern: Any, name: str) -> scipy.sparse.csr_array:
    """``pattern`` as a canonical boolean CSR array (sorted, no repeats, no stored zeros)."""
    if isinstance(pattern, Sparse):
        m, n = pattern.shape[1:]
        ones = np.ones(pattern.nnz, dtype=bool)
        P = scipy.sparse.csr_array((ones, _host(pattern.indices), _host(pattern.indptr)), shape=(m, n))
    elif scipy.sparse.issparse(pattern):
        if pattern.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D pattern (m, n), got shape {pattern.shape}")
        if pattern.dtype.kind not in "biufc":
            raise TypeError(f"{name}: expected a numeric or boolean SciPy matrix, got dtype {pattern.dtype}")
        entries = pattern.copy()
        if entries.format in ("coo", "csr", "csc", "bsr"):  # before a conversion sums repeats
            entries.data = entries.data != 0  # repeated positions are or-ed, never cancelled
        P = scipy.sparse.csr_array(entries)
        P.data = P.data != 0  # stored zeros are not entries
    elif (
        isinstance(pattern, str)
        or pattern is None
        or not hasattr(pattern, "__len__")
        and not hasattr(pattern, "shape")
    ):
        raise TypeError(f"{name}: expected {_EXPECTED}, got {pattern!r} ({type(pattern).__name__})")
    else:
        dense = _host(pattern) if hasattr(pattern, "shape") else np.asarray(pattern)
        if dense.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D pattern (m, n), got shape {tuple(dense.shape)}")
        if dense.dtype.kind in "iu" and dense.size and not np.isin(dense, (0, 1)).all():
            raise ValueError(
                f"{name}: an integer pattern must hold only 0 and 1, got values {np.unique(dense)[:5]}"
            )
        if dense.dtype.kind not in "biu":
            raise TypeError(
                f"{name}: expected booleans (True where an entry may be nonzero), got dtype {dense.dtype}; "
                "pass pattern != 0"
            )
        P = scipy.sparse.csr_array(dense.astype(bool))
    P.eliminate_zeros()
    P.sum_duplicates()
    P.sort_indices()
    return P


# --------------------------------------------------------------------------------------
# Coloured differences
# --------------------------------------------------------------------------------------


def sparse_value_and_jacobian(
    f: Callable[..., Any],
    args: Sequence[Any],
    argnums: Any,
    method: str,
    *,
    pattern: Any,
    backend: str | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    f_framework: str | None = None,
) -> tuple[Any, tuple[Any, ...]]:
    """``f(*args)`` and its sparse batched Jacobians, one evaluation of ``f`` per colour.

    Arguments as for :func:`.differences.numerical_value_and_jacobian` (``f`` maps a batch
    ``(B, *in_shape_i)`` of ``args[i]``, ``i in argnums``, to ``(B, *out_shape)``), except
    ``chunk_size``, which counts colours per call of ``f``. ``pattern`` is the per-sample
    pattern ``(m, n_i)`` with ``m = prod(out_shape)``, ``n_i = prod(in_shape_i)`` (flattened,
    row-major): anything :func:`color_columns` takes, or ``"auto"`` (detected by
    :func:`probe_pattern`, with a warning). Several ``argnums`` need one pattern each, a
    tuple in the order of ``argnums`` (``"auto"`` alone serves them all).

    Returns ``(value, jacobians)``: ``value`` ``(B, *out_shape)`` and one
    :class:`~batchjac.Sparse` ``(B, m, n_i)`` per argument, values ``(B, nnz)`` of dtype
    ``result_type(value, args[i])`` and the pattern on the inputs' device, with the
    attributes ``colors``, ``evaluations`` and ``coloring`` (the module docstring says what
    they count). Raises as the dense path does, and ``ValueError``/``TypeError`` naming
    ``sparsity`` for a pattern of the wrong shape or kind.

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> y, (S,) = sparse_value_and_jacobian(lambda x: x**2, (x,), 0, "complex-step",
    ...                                     pattern=np.eye(3, dtype=bool))
    >>> S.colors, S.evaluations, S.values.tolist()
    (1, 1, [[2.0, 4.0, 6.0]])
    """
    chunk_size, progress = check_chunk_size(chunk_size), check_progress(progress)
    box, argnums, method, ops = black_box(f, args, argnums, method, backend=backend, f_framework=f_framework)
    patterns = _patterns_per_argument(pattern, argnums)
    m = box.out_size
    colorings = {}
    for i, p in zip(argnums, patterns):
        n = _size(box.args[i].shape[1:])
        if isinstance(p, str) and p == "auto":
            p = probe_pattern(box, i, method, ops)
        colorings[i] = _coloring_for(p, i, (m, n))
    plans = [_plan(box, i, argnums, method, chunk_size, colorings) for i in argnums]
    value = box.value()
    passes = sum(-(-colorings[i].count // plan.columns) for i, plan in zip(argnums, plans))
    with _progress_bar(passes, progress) as bar:
        jacobians = tuple(
            _coloured_jacobian(box, i, method, colorings[i], plan, ops, value, bar)
            for i, plan in zip(argnums, plans)
        )
    return value, jacobians


def _patterns_per_argument(pattern: Any, argnums: tuple[int, ...]) -> tuple[Any, ...]:
    if isinstance(pattern, str):
        if pattern != "auto":
            raise ValueError(f"sparsity: expected {_EXPECTED}, got {pattern!r}")
        return (pattern,) * len(argnums)
    if len(argnums) == 1:
        return (pattern,)
    if not isinstance(pattern, tuple) or len(pattern) != len(argnums):
        got = f"a tuple of {len(pattern)}" if isinstance(pattern, tuple) else type(pattern).__name__
        raise ValueError(
            f"sparsity: {len(argnums)} arrays are differentiated (argnums {argnums}): give one pattern per "
            f"array, a tuple of {len(argnums)} in the order of argnums (or 'auto'), got {got}"
        )
    return pattern


def _coloring_for(pattern: Any, argnum: int, shape: tuple[int, int]) -> Coloring:
    """The colouring of ``pattern`` if it is ``(m, n)`` for ``args[argnum]``, else a ``ValueError``."""
    P = pattern if isinstance(pattern, Coloring) else _csr_pattern(pattern, "sparsity")
    if tuple(P.shape) != shape:
        raise ValueError(
            f"sparsity: the pattern for argument {argnum} must be (m, n) = {shape} (the flattened output "
            f"entries of one sample by the flattened entries of argument {argnum}), got {tuple(P.shape)}"
        )
    return P if isinstance(P, Coloring) else _coloring(P)


def _plan(
    box: BlackBox,
    argnum: int,
    argnums: tuple[int, ...],
    method: str,
    chunk_size: int | None,
    colorings: dict[int, Coloring],
) -> Plan:
    """Colours per pass and samples per check block; ``MemoryError`` before allocating when
    one colour at a time (or ``chunk_size`` of them) does not fit."""
    x, coloring = box.args[argnum], colorings[argnum]
    stored = {i: c.nnz for i, c in colorings.items()}
    estimate = memory_estimate(box, argnum, argnums, method, stored=stored)
    # the colouring on the device: pattern, rows and colour of each entry, order by colour
    indexing = INDEX().itemsize * (5 * coloring.nnz + 2 * coloring.shape[1] + coloring.shape[0] + 1)
    count = coloring.count
    colours = 1 if chunk_size is None else max(1, min(chunk_size, max(count, 1)))
    needed = estimate.bytes(colours) + indexing
    free = free_memory(x)
    if free is not None and needed > free:
        asked = "even one colour at a time" if chunk_size is None else f"with chunk_size={chunk_size} colours"
        raise MemoryError(
            f"the sparse {method} Jacobian with respect to argument {argnum} needs {needed:,} bytes {asked}: "
            f"{estimate.jacobians:,} for the values (B, nnz) = ({box.batch}, {coloring.nnz}) of every Jacobian, "
            f"{indexing:,} for the colouring and {needed - estimate.jacobians - indexing:,} for the value, the "
            f"steps and one pass of f (see batchjac.numerical.differences.MemoryEstimate); only {free:,} bytes "
            f"are free on the {device_of(x)}"
        )
    budget = FALLBACK_BUDGET if free is None else int(MEMORY_FRACTION * free)
    if chunk_size is None:
        fits = (budget - estimate.bytes(0) - indexing) // max(estimate.per_column, 1)
        colours = int(min(max(count, 1), max(fits, 1)))
    room = max(budget, needed) - estimate.jacobians - estimate.workspace - indexing
    samples = room // max(estimate.per_check_sample, 1)
    return Plan(columns=colours, check_samples=int(min(max(box.batch, 1), max(samples, 1))))


class _ColourOrder:
    """The colouring on the device, in colour order: the columns of each colour and the
    entries of each colour (their row, column and position in the pattern), with the host
    bounds of each colour's run."""

    def __init__(self, coloring: Coloring, xp: Any):
        m, _ = coloring.shape
        colors = coloring.colors
        columns = np.argsort(colors, kind="stable")
        columns = columns[colors[columns] >= 0]
        entry_colors = colors[coloring.indices]
        entries = np.argsort(entry_colors, kind="stable")
        runs = np.arange(coloring.count + 1)
        self.column_bounds = np.searchsorted(colors[columns], runs).tolist()
        self.entry_bounds = np.searchsorted(entry_colors[entries], runs).tolist()
        rows = np.repeat(np.arange(m, dtype=INDEX), np.diff(coloring.indptr))
        self.columns = xp.asarray(columns.astype(INDEX))
        self.column_colors = xp.asarray(colors[columns])
        self.entries = xp.asarray(entries.astype(INDEX))
        self.entry_colors = xp.asarray(entry_colors[entries])
        self.entry_rows = xp.asarray(rows[entries])
        self.entry_columns = xp.asarray(coloring.indices[entries])


def _coloured_jacobian(box: BlackBox, argnum: int, method: str, coloring: Coloring, plan: Plan, ops: Any,
                       value: Any, bar: Any) -> Sparse:  # fmt: skip
    """The :class:`Sparse` Jacobian of ``box`` with respect to ``args[argnum]``."""
    x = box.args[argnum]
    xp = namespace(x)
    n, m, batch = _size(x.shape[1:]), box.out_size, box.batch
    indptr, indices = xp.asarray(coloring.indptr), xp.asarray(coloring.indices)
    values = xp.zeros((batch, coloring.nnz), dtype=np.result_type(box.out_dtype, x.dtype))
    evaluations = 0
    if batch and coloring.nnz:
        flat, y = x.reshape(batch, n), value.reshape(batch, m)
        _by_sample_blocks(check_samples_independent, box, argnum, flat, y, None, plan.check_samples)
        h = steps(flat, method)
        g = box.of_argument(argnum)
        order = _ColourOrder(coloring, xp)
        for start in range(0, coloring.count, plan.columns):
            stop = min(start + plan.columns, coloring.count)
            c0, c1 = order.column_bounds[start], order.column_bounds[stop]
            e0, e1 = order.entry_bounds[start], order.entry_bounds[stop]
            values[:, order.entries[e0:e1]] = _colour_differences(
                g, flat, y, h, method, stop - start,
                order.columns[c0:c1], order.column_colors[c0:c1] - start,
                order.entry_colors[e0:e1] - start, order.entry_rows[e0:e1], order.entry_columns[e0:e1],
            )  # fmt: skip
            bar.update()
        a, b = _BLOCKS[method]
        evaluations = a * coloring.count + b
        if method == "complex-step":
            J = _SparseSamples(indptr, indices, values, ops)
            _by_sample_blocks(check_complex_safe, box, argnum, flat, y, J, plan.check_samples,
                              real=g.real_for_complex)  # fmt: skip
    S = Sparse(indptr, indices, values, in_size=n)
    S.coloring, S.colors, S.evaluations = coloring, coloring.count, evaluations
    return S


def _colour_differences(
    g: Any,
    x: Any,
    y: Any,
    h: Any,
    method: str,
    k: Any,
    columns: Any,
    which: Any,
    entry_colors: Any,
    entry_rows: Any,
    entry_columns: Any,
) -> Any:
    """``(B, L)``: the entries of ``k`` colours from one call of ``g`` on the stacked batch.

    ``columns`` are the columns of these colours and ``which`` their colour within the pass;
    ``entry_*`` the colour, row and column of each entry of these colours. Each column moves
    by its own step (``h`` ``(B, n)``) in its colour's copy of the batch; entry ``(i, j)`` of
    colour ``c`` is the difference of output ``i`` in copy ``c``, divided by ``h_j`` as the
    dense path divides it.
    """
    xp = namespace(x)
    batch, n = x.shape
    step = h[:, columns].T  # (columns, B)
    divisor = h[:, entry_columns]  # (B, L)
    if method == "complex-step":
        stacked = xp.empty((k, batch, n), dtype=xp.result_type(x.dtype, xp.complex64))
        stacked[...] = x
        stacked[which, :, columns] += 1j * step
        out = g(stacked.reshape(k * batch, n))
        out = out.reshape(k, batch, out.shape[-1])
        return out.imag[entry_colors, :, entry_rows].T / divisor
    if method == "central":
        stacked = xp.empty((2, k, batch, n), dtype=x.dtype)
        stacked[...] = x
        stacked[0, which, :, columns] += step
        stacked[1, which, :, columns] -= step
        out = g(stacked.reshape(2 * k * batch, n))
        out = out.reshape(2, k, batch, out.shape[-1])
        return (out[0][entry_colors, :, entry_rows] - out[1][entry_colors, :, entry_rows]).T / (2 * divisor)
    stacked = xp.empty((k, batch, n), dtype=x.dtype)
    stacked[...] = x
    stacked[which, :, columns] += step
    out = g(stacked.reshape(k * batch, n))
    out = out.reshape(k, batch, out.shape[-1])
    return (out[entry_colors, :, entry_rows].T - y[:, entry_rows]) / divisor


class _SparseSamples:
    """Sparse Jacobians of some samples as the complex-safety check reads them (``J[samples]``,
    ``J u``, ``|J| v``), through the backend's CSR product: the ``(m, n)`` matrices are never
    built."""

    def __init__(self, indptr: Any, indices: Any, values: Any, ops: Any):
        self.indptr, self.indices, self.values, self.ops = indptr, indices, values, ops

    def __getitem__(self, samples: Any) -> _SparseSamples:
        return _SparseSamples(self.indptr, self.indices, self.values[samples], self.ops)

    def times(self, u: Any) -> Any:
        """``(d, P, n) -> (d, P, m)``."""
        xp = namespace(u)
        product = self.ops.csr_matvec(self.indptr, self.indices, self.values, xp.moveaxis(u, 0, 1))
        return xp.moveaxis(product, 1, 0)

    def abs_times(self, v: Any) -> Any:
        """``(P, n) -> (P, m)``."""
        return self.ops.csr_matvec(self.indptr, self.indices, namespace(v).abs(self.values), v)


# --------------------------------------------------------------------------------------
# Detection: sparsity="auto"
# --------------------------------------------------------------------------------------


def probe_pattern(box: BlackBox, argnum: int, method: str, ops: Any) -> scipy.sparse.csr_array:
    """The pattern ``(m, n)`` of the Jacobian of ``box`` with respect to ``args[argnum]``,
    detected from dense numerical Jacobians at a few probes, with a warning saying the cost.

    Probes: ``PROBE_SAMPLES`` samples of the batch (random, reproducible), each at itself
    and at ``PROBE_POINTS - 1`` random points ``x + 0.01 U(-1, 1) max(1, |x|)`` (so that an
    entry that vanishes at the data, ``x_i x_j`` at ``x_j = 0``, is seen). At each probe the
    Jacobian is taken by ``method`` column by column (``n`` columns: central ``2n``
    evaluations of ``f`` per probe, forward ``n`` plus one per pass, complex step ``n``; in
    chunks that fit in memory). Entry ``(i, j)`` is in the pattern when at some probe whose
    output ``i`` is finite its magnitude exceeds ``4`` rounding errors of that difference,
    ``eps (|f_i| + sum_k |J_ik| |x_k|) / h_j`` (complex step: ``eps sum_k |J_ik| |x_k| /
    max(1, |x_j|)``), or is not finite; an output that is finite at no probe keeps every
    column.

    How reliable: an entry is missed when it is zero, or below that tolerance, at every
    probe. Below the tolerance it adds at most about ``4`` rounding errors of the method to
    the entry sharing its row and colour, an error of the size the method makes anyway.
    Exactly zero at every probe is the real risk: functions that are piecewise (``relu``,
    ``abs``, ``maximum``, ``where``, clipping: an entry of a branch no probe takes),
    dependence switched on by data (an index or a condition computed from ``x``), or
    cancellation at the probed points. Those entries are silently wrong in the result: where
    the structure is known, pass it (``bj.sparsity(f, x)`` for functions that trace). Extra
    entries (numerical noise of a dependence that cancels mathematically) only cost colours.
    """
    x = box.args[argnum]
    xp = namespace(x)
    batch, n, m = box.batch, _size(x.shape[1:]), box.out_size
    chosen = np.sort(np.random.default_rng(_SEED).permutation(batch)[:PROBE_SAMPLES])
    probes = np.repeat(chosen, PROBE_POINTS)
    count = probes.shape[0]
    if not count or not m * n:
        warnings.warn(
            f"sparsity='auto' found no sample to probe for argument {argnum} (batch {batch}, Jacobian "
            f"{m} x {n}): the pattern is empty",
            UserWarning,
            stacklevel=4,
        )
        return scipy.sparse.csr_array((m, n), dtype=bool)
    take = xp.asarray(probes)
    flat = x.reshape(batch, n)[take]
    offset = 2 * _random(xp, _SEED + 10, (count, n), x.dtype) - 1
    offset[::PROBE_POINTS] = 0  # each sample itself first
    points = flat + x.dtype.type(PROBE_SPREAD) * offset * xp.maximum(xp.abs(flat), 1)
    probed = box.take(take)
    probed = replace(probed, args=tuple(points.reshape(count, *x.shape[1:]) if i == argnum else a
                                        for i, a in enumerate(probed.args)))  # fmt: skip
    y = _host(probed.value()).reshape(count, m)
    h = steps(points, method)
    g = probed.of_argument(argnum)
    per_column = memory_estimate(probed, argnum, (argnum,), method, stored={argnum: 0}).per_column
    free = free_memory(x)
    budget = FALLBACK_BUDGET if free is None else int(MEMORY_FRACTION * free)
    # beside each column's pass: the nonzero entries' coordinates and values, 4 words each
    width = int(min(n, max(1, budget // max(per_column + 32 * count * m, 1))))
    found = []  # (probe, row, column, value) of the nonzero entries, on the host
    for start in range(0, n, width):
        stop = min(start + width, n)
        J = ops.difference_columns(g, points, range(start, stop), h[:, start:stop], method)  # (P, m, k)
        p, i, j = xp.nonzero(J != 0)  # NaN != 0: kept
        found.append((_host(p), _host(i), _host(j) + start, _host(J[p, i, j])))
    p, i, j, v = (np.concatenate(parts) for parts in zip(*found))
    a, b = _BLOCKS[method]
    evaluated = count * (1 + a * n + b * -(-n // width))
    points, h = _host(points), _host(h)
    magnitude = np.abs(v)
    finite = np.isfinite(magnitude)
    spread = np.zeros((count, m))
    np.add.at(spread, (p[finite], i[finite]), magnitude[finite] * np.abs(points[p[finite], j[finite]]))
    eps = _eps(x.dtype, box.out_dtype)
    if method == "complex-step":
        tolerance = PROBE_ROUNDING * eps * spread[p, i] / np.maximum(np.abs(points[p, j]), 1)
    else:
        tolerance = PROBE_ROUNDING * eps * (np.abs(y[p, i]) + spread[p, i]) / h[p, j]
    informative = np.isfinite(y)  # (P, m): an output that is not finite at a probe says nothing
    keep = informative[p, i] & (~finite | (magnitude > tolerance))
    kept_rows, kept_columns = [i[keep]], [j[keep]]
    blind = np.flatnonzero(~informative.any(axis=0))
    if blind.size:  # finite at no probe: every column, conservatively
        kept_rows.append(np.repeat(blind, n))
        kept_columns.append(np.tile(np.arange(n), blind.size))
    rows, columns = np.concatenate(kept_rows), np.concatenate(kept_columns)
    P = scipy.sparse.csr_array((np.ones(rows.shape[0], dtype=bool), (rows, columns)), shape=(m, n))
    P.sum_duplicates()
    warnings.warn(
        f"sparsity='auto' detected the pattern of argument {argnum} ({m} x {n}, {P.nnz} entries) from "
        f"{count} probes ({chosen.size} samples, {PROBE_POINTS} points each) with {method} differences: "
        f"{evaluated:,} evaluations of f on one sample ({evaluated / batch:.3g} evaluations of the batch of "
        f"{batch}); entries that vanish at every probe (a branch of a piecewise f no probe takes) are "
        "missed and their values silently wrong: pass the pattern where it is known (bj.sparsity for f that "
        "trace)",
        UserWarning,
        stacklevel=4,
    )
    return P
