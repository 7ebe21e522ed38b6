"""``Gather``: rows that each pick one input entry, the same for every sample (a ``Sparse``
with one entry per row and one shared value)."""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np

from batchjac.core.arrays import CPU, as_array, device_of, float_dtype
from batchjac.structured.algebra import SCALING, Kind, M, Profile, Structure, register_product, result_dtype
from batchjac.structured.base import batch_size
from batchjac.structured.shared import Shared
from batchjac.structured.sparse import INDEX, Sparse, SparsityPattern, register_sparse_form


def _scale_number(scale: Any) -> float:
    if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        return float(scale)
    shape = getattr(scale, "shape", None)
    if shape == () and getattr(scale, "dtype", np.dtype(object)).kind in "iuf":
        return float(scale)
    raise ValueError(
        "Gather: scale must be one number (the same for every row and sample), got "
        + (f"an array of shape {tuple(shape)}" if shape is not None else type(scale).__name__)
        + "; scale per sample with G.scaled(c), per row with bj.Diagonal(d) @ G"
    )


def _check_index(index: Any, in_size: int, injective: bool) -> None:
    """Indices in range and, when claimed, no input picked twice. Checked where the index
    lives on the host; a GPU index is not read back (that would synchronise the device)."""
    if device_of(index) != CPU or index.shape[0] == 0:
        return
    bad = np.flatnonzero((index < 0) | (index >= in_size))
    if bad.size:
        raise ValueError(
            f"Gather: index must lie in [0, {in_size}) (in_size, the number of inputs), got "
            f"{int(index[bad[0]])} at position {int(bad[0])}"
        )
    if injective:
        counts = np.bincount(index, minlength=in_size)
        repeated = int(np.argmax(counts))
        if counts[repeated] > 1:
            where = np.flatnonzero(index == repeated)[:2].tolist()
            raise ValueError(
                f"Gather: injective=True but input {repeated} is picked more than once (at positions "
                f"{where[0]} and {where[1]}); pass injective=False"
            )


class Gather(Sparse):
    """Rows that pick input entries, the same for every sample: ``(J v)[r] = scale v[index[r]]``.

    The Jacobian of moving entries around (transpose, indexing, broadcasting). Stores the
    ``(m,)`` integer ``index`` into ``n = in_size`` inputs, never the ``(m, n)`` 0/1 matrix;
    ``shape == (B, m, n)``; ``scale`` is one number. ``injective=True`` (no input picked
    twice) lets products on the right and VJPs scatter instead of gathering by the sorted
    transpose; it is checked, with the range of the indices, where the index is a NumPy array.

    >>> import numpy as np, batchjac as bj
    >>> G = bj.Gather(np.array([2, 0]), in_size=3, batch=1)
    >>> G.jvp(np.array([[10.0, 20.0, 30.0]])).tolist(), G.to_dense().tolist()
    ([[30.0, 10.0]], [[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    """

    table_order = 4
    batched_kinds = "never"

    def __init__(
        self,
        index: Any,
        in_size: Any,
        batch: Any,
        scale: Any = 1.0,
        *,
        injective: bool = False,
        dtype: Any = np.float64,
    ):
        index = as_array(index, "index")
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(
                f"Gather: index must be a 1-D integer array, got shape {tuple(index.shape)} of {index.dtype}"
            )
        self.in_size = batch_size(in_size, "in_size")
        self.batch = batch_size(batch)
        self.scale = _scale_number(scale)
        self.injective = bool(injective)
        self._dtype = float_dtype(dtype, "dtype")
        _check_index(index, self.in_size, self.injective)
        self.index = index
        self.out_size = int(index.shape[0])

    def _like(self, **changes: Any) -> "Gather":
        """A copy with some attributes changed (the index is not checked again)."""
        G = object.__new__(Gather)
        G.__dict__.update({k: v for k, v in self.__dict__.items() if k in _GATHER_FIELDS}, **changes)
        return G

    # -- structure -----------------------------------------------------------------------

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        return Profile(batched=False, stored=M, apply=M, entries=M)

    @classmethod
    def structure_problem(cls, structure: Structure) -> str | None:
        return super(Sparse, cls).structure_problem(structure)

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        return Kind(Sparse, detail=(True,)) if per_sample else kind

    def structure(self) -> Structure:
        return Structure(Gather, self.batch, self.out_size, self.in_size)

    # -- storage: the sparse form is built on demand -------------------------------------

    @functools.cached_property
    def pattern(self) -> SparsityPattern:  # type: ignore[override]
        xp = self._xp()
        return SparsityPattern(
            xp.arange(self.out_size + 1, dtype=INDEX),
            self.index.astype(INDEX, copy=False),
            (self.out_size, self.in_size),
            unique=True,  # one entry per row
        )

    @functools.cached_property
    def values(self) -> Any:
        return self._xp().full(self.out_size, self.scale, dtype=self._dtype)

    def _arrays(self) -> tuple[Any, ...]:
        return (self.index,)

    @property
    def dtype(self) -> Any:
        return self._dtype

    def matrix(self) -> Any:
        """The shared ``(m, n)`` matrix, built on demand."""
        xp = self._xp()
        M = xp.zeros((self.out_size, self.in_size), dtype=self._dtype)
        M[xp.arange(self.out_size), self.index] = self.scale
        return M

    _matrix = matrix

    def to_dense(self) -> Any:
        return Shared(self.matrix(), self.batch).to_dense()

    def astype(self, dtype: Any) -> "Gather":
        return self._like(_dtype=float_dtype(dtype, "dtype"))

    def _batch_slice(self, s: slice) -> "Gather":
        return self._like(batch=len(range(self.batch)[s]))

    def _scaled(self, number: Any, per_sample: Any) -> Sparse:
        if per_sample is None:
            return self._like(scale=self.scale * number)
        return Sparse._of(self.pattern, per_sample[:, None] * self.values, self.batch)

    # -- products ------------------------------------------------------------------------

    def _scaled_copy(self, a: Any) -> Any:
        return a if self.scale == 1.0 else a * self.scale

    def _jvp(self, v: Any, ops: Any) -> Any:
        return v[:, self.index] * self.scale

    def _vjp(self, u: Any, ops: Any) -> Any:
        if not self.injective:
            return super()._vjp(u, ops)  # by the transposed pattern: gather and reduce
        out = self._xp().zeros((self.batch, self.in_size), dtype=np.result_type(u.dtype, self._dtype))
        out[:, self.index] = u * self.scale
        return out

    def _apply_left(self, M: Any, ops: Any) -> Any:
        return self._scaled_copy(M[..., self.index, :])

    def _apply_right(self, M: Any, ops: Any) -> Any:
        """``M @ G``: an injective gather scatters ``M``'s columns, otherwise they are summed
        by the sorted transpose."""
        if not self.injective:
            return super()._apply_right(M, ops)
        xp = self._xp()
        out = xp.zeros((*M.shape[:-1], self.in_size), dtype=np.result_type(M.dtype, self._dtype))
        out[..., self.index] = self._scaled_copy(M)
        return out


_GATHER_FIELDS = ("in_size", "batch", "scale", "injective", "_dtype", "index", "out_size")


@register_sparse_form(Gather, lambda kind: Kind(Sparse, detail=(False,)))
def _gather_as_sparse(G: Gather) -> Sparse:
    return Sparse._of(G.pattern, G.values, G.batch)


@register_product(Gather, Gather, result=Gather, cost=SCALING)
def _gather_times_gather(ops: Any, J: Gather, K: Gather) -> Gather:
    return J._like(
        index=K.index[J.index],
        in_size=K.in_size,
        scale=J.scale * K.scale,
        injective=J.injective and K.injective,
        _dtype=result_dtype(J, K),
    )
