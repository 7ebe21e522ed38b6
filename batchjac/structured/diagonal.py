"""``Diagonal``: the Jacobian of any element-wise operation, stored as its diagonal."""

from __future__ import annotations

from typing import Any

import numpy as np

from batchjac.core.arrays import as_float_array
from batchjac.structured.algebra import SCALING, Kind, N, Profile, register_product, register_sum
from batchjac.structured.base import Jacobian, diagonal_view, require_ndim
from batchjac.structured.dense import Dense


class Diagonal(Jacobian):
    """A batch of diagonal Jacobians ``diag(d_b)``, stored as ``d`` of shape ``(B, n)``.

    The Jacobian of any element-wise operation. ``shape == (B, n, n)``.

    >>> import numpy as np, batchjac as bj
    >>> D = bj.Diagonal(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> (D @ D).diagonal().tolist()
    [[1.0, 4.0], [9.0, 16.0]]
    """

    table_order = 1
    always_square = True
    batched_kinds = "always"

    def __init__(self, d: Any):
        d = as_float_array(d, "d")
        require_ndim(d, 2, "(B, n)", "Diagonal: d")
        self.d = d
        self.batch, self.out_size = map(int, d.shape)
        self.in_size = self.out_size

    @classmethod
    def trusted(cls, d: Any) -> "Diagonal":
        """A ``Diagonal`` of a floating ``(B, n)`` array the caller vouches for, without the
        checks (the interpreters' and product rules' own results: the hot path).

        >>> import numpy as np, batchjac as bj
        >>> bj.Diagonal.trusted(np.ones((2, 3))).shape
        (2, 3, 3)
        """
        J = cls.__new__(cls)
        J.d = d
        J.batch, J.out_size = d.shape
        J.in_size = J.out_size
        return J

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        return Profile(batched=True, stored=N, apply=N, entries=N)

    @classmethod
    def structure_problem(cls, structure: Any) -> str | None:
        if structure.out_size != structure.in_size:
            return (
                f"a {structure.kind.__name__} is square, got out_size {structure.out_size} "
                f"and in_size {structure.in_size}"
            )
        return super().structure_problem(structure)

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        return kind

    def _arrays(self) -> tuple[Any, ...]:
        return (self.d,)

    @property
    def dtype(self) -> Any:
        return self.d.dtype

    def to_dense(self) -> Any:
        """``(B, n, n)`` with ``d`` on the diagonal."""
        return self._ops().diag_to_dense(self.d)

    _matrix = to_dense

    @property
    def T(self) -> "Diagonal":
        return self

    def astype(self, dtype: Any) -> "Diagonal":
        return Diagonal(self.d.astype(dtype))

    def _batch_slice(self, s: slice) -> "Diagonal":
        return Diagonal(self.d[s])

    def _scaled(self, number: Any, per_sample: Any) -> "Diagonal":
        return Diagonal(self.d * (number if per_sample is None else per_sample[:, None]))

    def _jvp(self, v: Any, ops: Any) -> Any:
        return self.d * v

    def _vjp(self, u: Any, ops: Any) -> Any:
        return self.d * u  # diag(d) is its own transpose

    def _apply_left(self, M: Any, ops: Any) -> Any:
        return ops.scale_rows(self.d, M)

    def _apply_right(self, M: Any, ops: Any) -> Any:
        return ops.scale_cols(M, self.d)

    def _add_into(self, out: Any) -> None:
        diagonal_view(out)[...] += self.d

    def diagonal(self) -> Any:
        """The stored diagonal ``d`` itself (not a copy), ``(B, n)``."""
        return self.d

    def _slogdet(self) -> tuple[Any, Any]:
        xp = self._xp()
        sign = xp.prod(xp.sign(self.d), axis=1) + 0.0  # + 0.0: a singular sample's -0.0 becomes 0.0
        with np.errstate(divide="ignore"):
            logabsdet = xp.sum(xp.log(xp.abs(self.d)), axis=1)
        return sign, logabsdet


@register_product(Diagonal, Diagonal, result=Diagonal, cost=SCALING)
def _diagonal_times_diagonal(ops: Any, D: Diagonal, E: Diagonal) -> Diagonal:
    return Diagonal(D.d * E.d)


@register_sum(Dense, Diagonal, result=Dense)
def _dense_plus_diagonal(ops: Any, J: Dense, D: Diagonal) -> Dense:
    return Dense(ops.add_diagonal(J.a, D.d))


@register_sum(Diagonal, Diagonal, result=Diagonal)
def _diagonal_plus_diagonal(ops: Any, D: Diagonal, E: Diagonal) -> Diagonal:
    return Diagonal(D.d + E.d)
