"""``Shared``: one Jacobian for the whole batch; and the generic product and sum.

The generic rules live here because their result is a ``Dense``, or a ``Shared`` when
neither operand varies along the batch: they serve every pair of types that has no
structure-preserving rule of its own (see :mod:`batchjac.structured.algebra`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchjac.core.arrays import as_float_array
from batchjac.structured.algebra import (
    FALLBACK,
    MN,
    Kind,
    Profile,
    register_product,
    register_sum,
    result_dtype,
)
from batchjac.structured.base import Jacobian, array_namespace, batch_size, require_ndim
from batchjac.structured.dense import Dense
from batchjac.structured.diagonal import Diagonal


class Shared(Jacobian):
    """One Jacobian ``A`` of shape ``(m, n)`` shared by all ``batch`` samples.

    The Jacobian of a linear map ``W x`` with a constant ``W``. ``shape == (B, m, n)``;
    nothing of size ``B`` is stored.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.array([[1.0, 2.0]]), batch=3)
    >>> W.shape, W.vjp(np.ones((3, 1))).tolist()
    ((3, 1, 2), [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    """

    table_order = 2
    stored_dense = True
    batched_kinds = "never"

    def __init__(self, A: Any, batch: Any):
        A = as_float_array(A, "A")
        require_ndim(A, 2, "(m, n)", "Shared: A")
        self.A = A
        self.batch = batch_size(batch)
        self.out_size, self.in_size = map(int, A.shape)

    @classmethod
    def trusted(cls, A: Any, batch: int) -> "Shared":
        """A ``Shared`` of a floating ``(m, n)`` array and an int ``batch`` the caller vouches
        for, without the checks (the interpreters' and product rules' own results).

        >>> import numpy as np, batchjac as bj
        >>> bj.Shared.trusted(np.ones((3, 4)), 2).shape
        (2, 3, 4)
        """
        J = cls.__new__(cls)
        J.A = A
        J.batch = batch
        J.out_size, J.in_size = A.shape
        return J

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        return Profile(batched=False, stored=MN, apply=MN, entries=MN)

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        return Kind(Dense) if per_sample else kind

    def _arrays(self) -> tuple[Any, ...]:
        return (self.A,)

    @property
    def dtype(self) -> Any:
        return self.A.dtype

    def to_dense(self) -> Any:
        """``(B, m, n)``: ``A`` repeated for every sample (a new array)."""
        xp = self._xp()
        out = xp.empty(self.shape, dtype=self.A.dtype)
        out[...] = self.A
        return out

    def _matrix(self) -> Any:
        return self.A

    @property
    def T(self) -> "Shared":
        return Shared(self.A.T, self.batch)

    def astype(self, dtype: Any) -> "Shared":
        return Shared(self.A.astype(dtype), self.batch)

    def _batch_slice(self, s: slice) -> "Shared":
        return Shared(self.A, len(range(self.batch)[s]))

    def _scaled(self, number: Any, per_sample: Any) -> Jacobian:
        if per_sample is None:
            return Shared(self.A * number, self.batch)
        return Dense(per_sample[:, None, None] * self.A)

    def _jvp(self, v: Any, ops: Any) -> Any:
        return ops.matvec(self.A, v)

    def _vjp(self, u: Any, ops: Any) -> Any:
        return ops.vecmat(u, self.A)

    def _apply_left(self, M: Any, ops: Any) -> Any:
        return ops.shared_matmul(self.A, M) if M.ndim == 3 else self.A @ M

    def _apply_right(self, M: Any, ops: Any) -> Any:
        return ops.matmul_shared(M, self.A) if M.ndim == 3 else M @ self.A

    def _add_into(self, out: Any) -> None:
        out += self.A

    def diagonal(self) -> Any:
        """The diagonal of ``A`` for every sample, ``(B, min(m, n))``."""
        xp = self._xp()
        out = xp.empty((self.batch, min(self.out_size, self.in_size)), dtype=self.A.dtype)
        out[...] = xp.diagonal(self.A)
        return out

    def _slogdet(self) -> tuple[Any, Any]:
        sign, logabsdet = self._ops().slogdet(self.A[None])
        xp = self._xp()
        return xp.broadcast_to(sign, (self.batch,)).copy(), xp.broadcast_to(logabsdet, (self.batch,)).copy()


# --------------------------------------------------------------------------------------
# The generic product and sum
# --------------------------------------------------------------------------------------


def _generic_kind(J: Any, K: Any) -> type:
    return Dense if J.batched or K.batched else Shared


def _generic_label(left: type[Jacobian], right: type[Jacobian]) -> str:
    kinds = {left.batched_kinds, right.batched_kinds}
    if "always" in kinds:
        return "Dense"
    return "Shared" if kinds == {"never"} else "Shared?"


def _wrap(out: Any, batch: int) -> Jacobian:
    """A product's or sum's array as its Jacobian (arrays the rules made: no checks)."""
    return Dense.trusted(out) if out.ndim == 3 else Shared.trusted(out, batch)


@register_product(Jacobian, Jacobian, result=_generic_kind, cost=FALLBACK, label=_generic_label)
def generic_product(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    """``J @ K`` through dense forms: one operand densified (``_matrix()``), the other applied
    to it. An operand stored dense already is the one densified; otherwise the one whose dense
    form is smaller per sample (K's ``k x n`` against J's ``m x k``). Neither is ever turned
    into more than its dense form (a ``Sparse`` applies itself by gathering, a ``Kronecker``
    by its factors)."""
    if K.stored_dense or (not J.stored_dense and K.in_size <= J.out_size):
        return _wrap(J._apply_left(K._matrix(), ops), J.batch)
    return _wrap(K._apply_right(J._matrix(), ops), J.batch)


@register_sum(Jacobian, Jacobian, result=_generic_kind, label=_generic_label)
def generic_sum(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    """``J + K`` added into one dense array, each operand adding itself (``_add_into``)
    without being densified first."""
    batched = J.batched or K.batched
    dtype = result_dtype(J, K) or np.dtype(np.float64)
    out = array_namespace(J, K).zeros(J.shape if batched else J.shape[1:], dtype=dtype)
    J._add_into(out)
    K._add_into(out)
    return _wrap(out, J.batch)


# --------------------------------------------------------------------------------------
# Sums that need less than the generic one
# --------------------------------------------------------------------------------------


@register_sum(Shared, Shared, result=Shared)
def _shared_plus_shared(ops: Any, J: Shared, K: Shared) -> Shared:
    return Shared(J.A + K.A, J.batch)


@register_sum(Dense, Shared, result=Dense)
def _dense_plus_shared(ops: Any, J: Dense, K: Shared) -> Dense:
    return Dense(J.a + K.A)


@register_sum(Diagonal, Shared, result=Dense)
def _diagonal_plus_shared(ops: Any, D: Diagonal, K: Shared) -> Dense:
    return Dense(ops.add_diagonal(K.A, D.d))
