"""``Sparse``: a CSR sparsity pattern shared by the batch, with per-sample or shared values.

Products with dense matrices gather and reduce along the pattern (``csr_matvec`` of the
backend); the transpose, for VJPs and products from the right, is the pattern sorted by
column once (a stable sort, kept with the pattern), so no product ever scatters or builds
the ``(m, n)`` matrix. A pattern may repeat a ``(row, column)`` position: the entries are
summed (as ``scipy.sparse`` does); products and sums return patterns without repeats.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import numpy as np

from batchjac.core.arrays import CPU, as_array, as_float_array, common_device, namespace
from batchjac.structured.algebra import (
    NNZ,
    PAIRS,
    SCALING,
    Kind,
    Profile,
    Structure,
    register_product,
    register_sum,
    result_dtype,
)
from batchjac.structured.base import Jacobian, batch_size
from batchjac.structured.diagonal import Diagonal
from batchjac.structured.identity import Identity

INDEX = np.int64


class SparsityPattern:
    """The CSR pattern of an ``(m, n)`` matrix: ``indptr`` ``(m + 1,)``, ``indices`` ``(nnz,)``.

    Shared by every sample of a ``Sparse`` (and by the Jacobians derived from it with the
    same pattern). Derived index arrays are computed once and kept: the row of each entry,
    the flat position ``row * n + column``, and the transposed pattern with the permutation
    that sorts the entries by column.
    """

    def __init__(self, indptr: Any, indices: Any, shape: tuple[int, int], unique: bool | None = None):
        self.indptr = indptr
        self.indices = indices
        self.out_size, self.in_size = shape
        if unique is not None:
            self.__dict__["unique"] = unique

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def _xp(self) -> Any:
        return namespace(self.indptr, self.indices)

    @functools.cached_property
    def rows(self) -> Any:
        """The row of each entry, ``(nnz,)``."""
        xp = self._xp()
        return xp.searchsorted(self.indptr[1:], xp.arange(self.nnz, dtype=INDEX), side="right").astype(INDEX)

    @functools.cached_property
    def keys(self) -> Any:
        """The flat position ``row * n + column`` of each entry, ``(nnz,)``."""
        return self.rows * self.in_size + self.indices

    @functools.cached_property
    def unique(self) -> bool:
        """True when no ``(row, column)`` position repeats."""
        return int(self._xp().unique(self.keys).shape[0]) == self.nnz

    @functools.cached_property
    def transposed(self) -> tuple["SparsityPattern", Any]:
        """The pattern of the transpose, and the permutation of the entries into it."""
        xp = self._xp()
        perm = xp.argsort(self.indices, kind="stable")
        columns = self.indices[perm]
        indptr = xp.searchsorted(columns, xp.arange(self.in_size + 1, dtype=INDEX), side="left").astype(INDEX)
        T = SparsityPattern(
            indptr, self.rows[perm], (self.in_size, self.out_size), self.__dict__.get("unique")
        )
        return T, perm


def diagonal_pattern(xp: Any, n: int) -> SparsityPattern:
    """The pattern of an ``n x n`` diagonal."""
    return SparsityPattern(xp.arange(n + 1, dtype=INDEX), xp.arange(n, dtype=INDEX), (n, n), unique=True)


def _check_pattern(indptr: np.ndarray, indices: np.ndarray, in_size: int) -> None:
    """The CSR invariants, on host arrays (a GPU pattern is not read back: that would make the
    device wait)."""
    nnz = indices.shape[0]
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(
            f"Sparse: indptr must start at 0 and end at len(indices) = {nnz}, got {int(indptr[0])} ... {int(indptr[-1])}"
        )
    if np.any(indptr[1:] < indptr[:-1]):
        raise ValueError("Sparse: indptr must be non-decreasing (row i holds indptr[i]:indptr[i + 1])")
    if nnz and (indices.min() < 0 or indices.max() >= in_size):
        bad = int(indices.min()) if indices.min() < 0 else int(indices.max())
        raise ValueError(f"Sparse: indices must lie in [0, in_size = {in_size}), got {bad}")


def _index_array(a: Any, name: str) -> Any:
    a = as_array(a, name)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(
            f"Sparse: {name} must be a 1-D integer array, got shape {tuple(a.shape)} of {a.dtype}"
        )
    return a.astype(INDEX, copy=False)


class Sparse(Jacobian):
    """A batch of sparse Jacobians sharing one CSR pattern; values per sample or shared.

    ``indptr`` ``(m + 1,)`` and ``indices`` ``(nnz,)`` are the CSR pattern (row ``i`` holds
    the entries ``indptr[i]:indptr[i + 1]``, in columns ``indices[...]``); ``values`` is
    ``(B, nnz)`` (each sample its own) or ``(nnz,)`` (one set for the whole batch, which then
    needs ``batch``). ``in_size`` defaults to ``max(indices) + 1``. Entries repeating a
    position are summed. ``shape == (B, m, n)``. A NumPy pattern is checked (indptr from 0 to
    nnz, non-decreasing, indices in range); a GPU pattern is trusted, as reading it back would
    make the device wait.

    The one type for sparse Jacobians (banded residuals, kinetics), for reductions as index
    maps (each output sums a set of inputs: partial sums, means, segment sums: a 0/1 or
    scaled pattern with shared values) and for row-scaled broadcasts (one entry per row,
    per-sample values).

    >>> import numpy as np, batchjac as bj
    >>> S = bj.Sparse([0, 2, 3], [0, 2, 1], [1.0, 1.0, 1.0], batch=2)  # rows: x0 + x2, x1
    >>> S.shape, S.jvp(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).tolist()
    ((2, 2, 3), [[4.0, 2.0], [10.0, 5.0]])
    >>> (bj.Diagonal(np.array([[2.0, 3.0], [1.0, 1.0]])) @ S).values.tolist()  # rows scaled, still sparse
    [[2.0, 2.0, 3.0], [1.0, 1.0, 1.0]]
    """

    table_order = 5
    batched_kinds = "either"

    # Set on a numerical Jacobian by column colouring (batchjac.numerical.coloring, a floor
    # above; absent otherwise): the colouring, its number of colours, the evaluations of f.
    coloring: Any
    colors: int
    evaluations: int

    def __init__(self, indptr: Any, indices: Any, values: Any, *, in_size: Any = None, batch: Any = None):
        indptr = _index_array(indptr, "indptr")
        indices = _index_array(indices, "indices")
        values = as_float_array(values, "values")
        device = common_device(indptr, indices, values, names=("indptr", "indices", "values"))
        nnz = int(indices.shape[0])
        if in_size is None:
            in_size = int(indices.max()) + 1 if nnz else 0
        self.in_size = batch_size(in_size, "in_size")
        if indptr.shape[0] < 1:
            raise ValueError("Sparse: indptr must have m + 1 >= 1 entries, got none")
        if device == CPU:
            _check_pattern(indptr, indices, self.in_size)
        if values.ndim == 2:
            if batch is not None and batch_size(batch) != values.shape[0]:
                raise ValueError(f"Sparse: batch {batch} differs from values' batch {values.shape[0]}")
            self.batch = int(values.shape[0])
        elif values.ndim == 1:
            if batch is None:
                raise ValueError(
                    "Sparse: values of shape (nnz,) are shared by the batch, so batch is required"
                )
            self.batch = batch_size(batch)
        else:
            raise ValueError(f"Sparse: values must be (B, nnz) or (nnz,), got shape {tuple(values.shape)}")
        if values.shape[-1] != nnz:
            raise ValueError(
                f"Sparse: values must have nnz = {nnz} entries last, got shape {tuple(values.shape)}"
            )
        self.out_size = int(indptr.shape[0]) - 1
        self.pattern = SparsityPattern(indptr, indices, (self.out_size, self.in_size))
        self.values = values

    @classmethod
    def _of(cls, pattern: SparsityPattern, values: Any, batch: int) -> "Sparse":
        """A ``Sparse`` from a trusted pattern and values (no checks)."""
        S = object.__new__(Sparse)
        S.pattern, S.values, S.batch = pattern, values, batch
        S.out_size, S.in_size = pattern.out_size, pattern.in_size
        return S

    # -- structure -----------------------------------------------------------------------

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        return Profile(batched=kind.detail[0], stored=NNZ, apply=NNZ, entries=NNZ)

    @classmethod
    def structure_problem(cls, structure: Structure) -> str | None:
        if (
            structure.scale != "one"
            or len(structure.detail) != 1
            or not isinstance(structure.detail[0], bool)
        ):
            return "a Sparse structure's detail is (values_vary_per_sample,), a bool"
        if structure.nnz is None:
            return "a Sparse structure needs nnz, its stored entries"
        return None

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        return Kind(Sparse, detail=(per_sample or bool(kind.detail[0]),))

    def structure(self) -> Structure:
        return Structure(
            Sparse, self.batch, self.out_size, self.in_size, detail=(self.values.ndim == 2,), nnz=self.nnz
        )

    # -- storage -------------------------------------------------------------------------

    @property
    def indptr(self) -> Any:
        return self.pattern.indptr

    @property
    def indices(self) -> Any:
        return self.pattern.indices

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    def _arrays(self) -> tuple[Any, ...]:
        return (self.pattern.indptr, self.pattern.indices, self.values)

    @property
    def dtype(self) -> Any:
        return self.values.dtype

    def _batched_values(self) -> Any:
        """``values`` as ``(B, nnz)`` (a broadcast view when shared)."""
        if self.values.ndim == 2:
            return self.values
        return self._xp().broadcast_to(self.values, (self.batch, self.nnz))

    def _add_entries(self, flat: Any) -> None:
        """Add the entries into ``flat``, ``(..., m n)``, in place (repeated positions summed)."""
        xp = self._xp()
        keys = self.pattern.keys
        if self.pattern.unique:
            flat[..., keys] += self.values
        else:
            index = (keys,) if flat.ndim == 1 else (slice(None), keys)
            xp.add.at(flat, index, self.values if flat.ndim == 1 else self._batched_values())

    def _matrix(self) -> Any:
        xp = self._xp()
        lead = (self.batch,) if self.values.ndim == 2 else ()
        out = xp.zeros((*lead, self.out_size * self.in_size), dtype=self.dtype)
        self._add_entries(out)
        return out.reshape(*lead, self.out_size, self.in_size)

    def to_dense(self) -> Any:
        """``(B, m, n)``, built on demand (a new array)."""
        dense = self._matrix()
        if dense.ndim == 3:
            return dense
        return self._xp().broadcast_to(dense, self.shape).copy()

    def _add_into(self, out: Any) -> None:
        self._add_entries(out.reshape(*out.shape[:-2], self.out_size * self.in_size))

    @functools.cached_property
    def T(self) -> "Sparse":
        pattern, perm = self.pattern.transposed
        T = Sparse._of(pattern, self.values[..., perm], self.batch)
        T.__dict__["T"] = self
        return T

    def astype(self, dtype: Any) -> "Sparse":
        return Sparse._of(self.pattern, self.values.astype(dtype), self.batch)

    def _batch_slice(self, s: slice) -> "Sparse":
        values = self.values[s] if self.values.ndim == 2 else self.values
        return Sparse._of(self.pattern, values, len(range(self.batch)[s]))

    def _scaled(self, number: Any, per_sample: Any) -> "Sparse":
        if per_sample is None:
            return Sparse._of(self.pattern, self.values * number, self.batch)
        return Sparse._of(self.pattern, per_sample[:, None] * self.values, self.batch)

    # -- products ------------------------------------------------------------------------

    def _jvp(self, v: Any, ops: Any) -> Any:
        return ops.csr_matvec(self.indptr, self.indices, self.values, v)

    def _vjp(self, u: Any, ops: Any) -> Any:
        return self.T._jvp(u, ops)

    def _along_rows(self, X: Any, ops: Any) -> Any:
        """``X @ J^T`` along the last axis: ``X`` ``(B, k, n)`` or ``(k, n)`` -> ``(..., k, m)``."""
        if self.values.ndim == 1 and X.ndim == 2:  # nothing varies along the batch
            return ops.csr_matvec(self.indptr, self.indices, self.values, X[None])[0]
        if X.ndim == 2:
            X = self._xp().broadcast_to(X, (self.batch, *X.shape))
        return ops.csr_matvec(self.indptr, self.indices, self.values, X)

    def _apply_left(self, M: Any, ops: Any) -> Any:
        xp = self._xp()
        return xp.swapaxes(self._along_rows(xp.swapaxes(M, -1, -2), ops), -1, -2)

    def _apply_right(self, M: Any, ops: Any) -> Any:
        return self.T._along_rows(M, ops)

    def diagonal(self) -> Any:
        """The main diagonal of each sample, ``(B, min(m, n))`` (a new array)."""
        xp = self._xp()
        size = min(self.out_size, self.in_size)
        on_diagonal = self.pattern.rows == self.indices
        rows = self.pattern.rows[on_diagonal]
        out = xp.zeros((self.batch, size), dtype=self.dtype)
        xp.add.at(out, (slice(None), rows), self._batched_values()[:, on_diagonal])
        return out

    def _slogdet(self) -> tuple[Any, Any]:
        if self._xp() is np and _splu() is not None:
            return _sparse_lu_slogdet(self)
        # CuPy has no batched sparse LU: the determinant is taken of the dense form.
        return self._ops().slogdet(self.to_dense())

    def __repr__(self) -> str:
        return f"Sparse(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}, device={self.device!r})"


# --------------------------------------------------------------------------------------
# Determinants by sparse LU (SciPy's SuperLU, one factorisation per distinct sample)
# --------------------------------------------------------------------------------------


def _splu() -> Any:
    try:
        from scipy.sparse.linalg import splu
    except ImportError:
        return None
    return splu


def scipy_matrix(S: Sparse, values: Any) -> Any:
    """One sample of ``S`` as a ``scipy.sparse.csc_matrix`` (repeated positions summed)."""
    from scipy.sparse import csr_matrix

    return csr_matrix((values, S.indices, S.indptr), shape=(S.out_size, S.in_size)).tocsc()


def permutation_sign(perm: np.ndarray) -> int:
    """``+1`` or ``-1``: the parity of a permutation, from its number of cycles."""
    n = perm.shape[0]
    label, jump = np.arange(n), perm.copy()
    for _ in range(max(1, int(n).bit_length())):  # pointer jumping: each label becomes its cycle's minimum
        label = np.minimum(label, label[jump])
        jump = jump[jump]
    cycles = int(np.count_nonzero(label == np.arange(n)))
    return -1 if (n - cycles) % 2 else 1


def lu_factor_or_none(S: Sparse, values: Any) -> Any:
    """SciPy's sparse LU of one sample, or None when the sample is exactly singular."""
    try:
        return _splu()(scipy_matrix(S, values))
    except RuntimeError:  # SuperLU: "Factor is exactly singular"
        return None


def _sparse_lu_slogdet(S: Sparse) -> tuple[Any, Any]:
    distinct = S.values if S.values.ndim == 2 else S.values[None]
    sign = np.zeros(distinct.shape[0], dtype=S.dtype)
    logabsdet = np.full(distinct.shape[0], -np.inf, dtype=S.dtype)
    for b, values in enumerate(distinct):
        lu = lu_factor_or_none(S, values) if S.out_size else None
        if S.out_size == 0:
            sign[b], logabsdet[b] = 1.0, 0.0
        elif lu is not None:
            u = lu.U.diagonal()
            sign[b] = permutation_sign(lu.perm_r) * permutation_sign(lu.perm_c) * np.prod(np.sign(u))
            with np.errstate(divide="ignore"):
                logabsdet[b] = np.sum(np.log(np.abs(u)))
    if S.values.ndim == 1:
        return np.broadcast_to(sign, (S.batch,)).copy(), np.broadcast_to(logabsdet, (S.batch,)).copy()
    return sign, logabsdet


# --------------------------------------------------------------------------------------
# Sparse forms of other types, and the products and sums of patterns
# --------------------------------------------------------------------------------------


@functools.singledispatch
def as_sparse(J: Jacobian) -> Sparse | None:
    """``J`` as a ``Sparse`` with the same values, or None when its structure is not sparse.

    Each type registers its own form beside it with :func:`register_sparse_form` (a
    ``Kronecker`` has one only with an identity factor)."""
    return None


_SPARSE_KINDS: dict[type, Callable[[Kind], Optional[Kind]]] = {}


def register_sparse_form(
    cls: type, kind: Callable[[Kind], Optional[Kind]]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``convert(J) -> Sparse | None`` as the sparse form of type ``cls``, and ``kind``,
    the :class:`Kind` of that form for a structure's kind (None: no sparse form)."""

    def decorate(convert: Callable[..., Any]) -> Callable[..., Any]:
        as_sparse.register(cls)(convert)
        _SPARSE_KINDS[cls] = kind
        return convert

    return decorate


def sparse_kind(J: Structure) -> Kind | None:
    """The kind of ``as_sparse`` of a Jacobian of structure ``J``, or None."""
    for cls in J.kind.__mro__:
        if cls in _SPARSE_KINDS:
            return _SPARSE_KINDS[cls](J.key)
    return None


@register_sparse_form(Sparse, lambda kind: kind)
def _sparse_itself(J: Sparse) -> Sparse:
    return J


@register_sparse_form(Diagonal, lambda kind: Kind(Sparse, detail=(True,)))
def _diagonal_as_sparse(D: Diagonal) -> Sparse:
    return Sparse._of(diagonal_pattern(D._xp(), D.in_size), D.d, D.batch)


@register_sparse_form(Identity, lambda kind: Kind(Sparse, detail=(kind.scale == "per_sample",)))
def _identity_as_sparse(I: Identity) -> Sparse:
    xp = I._xp_for_device()
    values = I.d if I.per_sample else xp.full(I.in_size, I.scale, dtype=I.dtype)
    return Sparse._of(diagonal_pattern(xp, I.in_size), values, I.batch)


def _sorted_positions(keys: Any, shape: tuple[int, int]) -> tuple[SparsityPattern, Any]:
    """The pattern of the distinct flat positions ``keys`` (sorted), and the ``(segments + 1,)``
    boundaries of the runs of equal keys."""
    xp = namespace(keys)
    m, n = shape
    P = int(keys.shape[0])
    first = xp.ones(P, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = xp.flatnonzero(first).astype(INDEX)
    unique = keys[starts]
    rows = unique // max(n, 1)
    indptr = xp.searchsorted(rows, xp.arange(m + 1, dtype=INDEX), side="left").astype(INDEX)
    boundaries = xp.concatenate([starts, xp.asarray([P], dtype=INDEX)])
    return SparsityPattern(indptr, (unique - rows * n).astype(INDEX), shape, unique=True), boundaries


def _ranges(starts: Any, lengths: Any) -> tuple[Any, Any]:
    """Concatenated ``arange(starts[t], starts[t] + lengths[t])``: ``(owner t, position)`` of each."""
    xp = namespace(starts, lengths)
    ends = xp.cumsum(lengths)
    total = int(ends[-1]) if lengths.shape[0] else 0
    t = xp.arange(total, dtype=INDEX)
    owner = xp.searchsorted(ends, t, side="right").astype(INDEX)
    return owner, starts[owner] + t - (ends - lengths)[owner]


def _segment_sums(ops: Any, boundaries: Any, picks: Any, weights: Any, x: Any, batched: bool) -> Any:
    """``out[.., s] = sum over p in segment s of weights[.., p] * x[.., picks[p]]`` (``csr_matvec``)."""
    if not batched:
        return ops.csr_matvec(boundaries, picks, weights, x[None])[0]
    return ops.csr_matvec(boundaries, picks, weights, x)


def _batched(S: Sparse, batched: bool) -> Any:
    return S._batched_values() if batched else S.values


def sparse_product(ops: Any, S: Sparse, T: Sparse) -> Sparse:
    """``S @ T`` of two sparse patterns: the matching entry pairs are found once (symbolic
    phase), then each sample's values are sums of products over its pairs."""
    P, Q = S.pattern, T.pattern
    xp = namespace(P.indptr, Q.indptr)
    row_lengths = Q.indptr[1:] - Q.indptr[:-1]
    left, right = _ranges(Q.indptr[:-1][P.indices], row_lengths[P.indices])
    keys = P.rows[left] * Q.in_size + Q.indices[right]
    order = xp.argsort(keys, kind="stable")
    pattern, boundaries = _sorted_positions(keys[order], (P.out_size, Q.in_size))
    batched = S.values.ndim == 2 or T.values.ndim == 2
    dtype = result_dtype(S, T)
    weights = S.values[..., left[order]].astype(dtype, copy=False)
    values = _segment_sums(ops, boundaries, right[order], weights, _batched(T, batched), batched)
    return Sparse._of(pattern, values, S.batch)


def sparse_sum(ops: Any, S: Sparse, T: Sparse) -> Sparse:
    """``S + T`` of two sparse patterns: the union of the patterns, repeated positions summed."""
    batched = S.values.ndim == 2 or T.values.ndim == 2
    if S.pattern is T.pattern:
        return Sparse._of(S.pattern, S.values + T.values, S.batch)
    xp = namespace(S.indptr, T.indptr)
    keys = xp.concatenate([S.pattern.keys, T.pattern.keys])
    order = xp.argsort(keys, kind="stable")
    pattern, boundaries = _sorted_positions(keys[order], (S.out_size, S.in_size))
    dtype = result_dtype(S, T)
    x = xp.concatenate([_batched(S, batched).astype(dtype), _batched(T, batched).astype(dtype)], axis=-1)
    ones = xp.ones(int(keys.shape[0]), dtype=dtype)
    return Sparse._of(pattern, _segment_sums(ops, boundaries, order, ones, x, batched), S.batch)


def _sparse_result(*operands: Structure) -> Kind:
    return Kind(Sparse, detail=(any(J.batched for J in operands),))


@register_product(Sparse, Sparse, result=_sparse_result, cost=PAIRS, label="Sparse")
def _sparse_times_sparse(ops: Any, S: Sparse, T: Sparse) -> Sparse:
    return sparse_product(ops, S, T)


@register_product(Diagonal, Sparse, result=_sparse_result, cost=SCALING, label="Sparse")
def _diagonal_times_sparse(ops: Any, D: Diagonal, S: Sparse) -> Sparse:
    return Sparse._of(S.pattern, D.d[:, S.pattern.rows] * S.values, S.batch)


@register_product(Sparse, Diagonal, result=_sparse_result, cost=SCALING, label="Sparse")
def _sparse_times_diagonal(ops: Any, S: Sparse, D: Diagonal) -> Sparse:
    return Sparse._of(S.pattern, S.values * D.d[:, S.indices], S.batch)


@register_sum(Sparse, Sparse, result=_sparse_result, label="Sparse")
def _sparse_plus_sparse(ops: Any, S: Sparse, T: Sparse) -> Sparse:
    return sparse_sum(ops, S, T)


@register_sum(Sparse, Diagonal, result=_sparse_result, label="Sparse")
def _sparse_plus_diagonal(ops: Any, S: Sparse, D: Diagonal) -> Sparse:
    return sparse_sum(ops, S, _sparse_form(D))


def _plus_identity_kind(S: Structure, I: Structure) -> Kind:
    return _sparse_result(S, I)


@register_sum(Sparse, Identity, result=_plus_identity_kind, priority=1, label="Sparse")
def _sparse_plus_identity(ops: Any, S: Sparse, I: Identity) -> Sparse:
    """``S + s I``: the identity's entries join the pattern; a numeric scale stays shared."""
    return sparse_sum(ops, S, _identity_as_sparse(_identity_of_dtype(I, S)))


def _identity_of_dtype(I: Identity, partner: Jacobian) -> Identity:
    """A weak identity in its partner's dtype (it has none of its own)."""
    return I.astype(partner.dtype) if I.is_weak else I


def _sparse_form(J: Jacobian) -> Sparse:
    """``as_sparse(J)`` where the rule's declaration (:func:`sparse_kind`) promised one."""
    S = as_sparse(J)
    if S is None:
        raise TypeError(f"{type(J).__name__} {J.shape} has no sparse form")
    return S


def sparse_forms_product(ops: Any, J: Jacobian, K: Jacobian) -> Sparse:
    """``J @ K`` through both operands' sparse forms."""
    return sparse_product(ops, _sparse_form(J), _sparse_form(K))


def sparse_forms_sum(ops: Any, J: Jacobian, K: Jacobian) -> Sparse:
    """``J + K`` through both operands' sparse forms."""
    return sparse_sum(ops, _sparse_form(J), _sparse_form(K))
