"""``Dense``: a general batched Jacobian, every entry of every sample stored."""

from __future__ import annotations

from typing import Any

from batchjac.core.arrays import as_float_array
from batchjac.structured.algebra import MN, Kind, Profile, register_sum
from batchjac.structured.base import Jacobian, require_ndim


class Dense(Jacobian):
    """A general batched Jacobian, stored as ``a`` of shape ``(B, m, n)``.

    >>> import numpy as np, batchjac as bj
    >>> J = bj.Dense(np.arange(12.0).reshape(2, 2, 3))
    >>> J.shape, J.jvp(np.ones((2, 3))).tolist()
    ((2, 2, 3), [[3.0, 12.0], [21.0, 30.0]])
    """

    table_order = 0
    stored_dense = True
    batched_kinds = "always"

    def __init__(self, a: Any):
        a = as_float_array(a, "a")
        require_ndim(a, 3, "(B, m, n)", "Dense: a")
        self.a = a
        self.batch, self.out_size, self.in_size = map(int, a.shape)

    @classmethod
    def trusted(cls, a: Any) -> "Dense":
        """A ``Dense`` of a floating ``(B, m, n)`` array the caller vouches for, without the
        checks (the interpreters' and product rules' own results: the hot path).

        >>> import numpy as np, batchjac as bj
        >>> bj.Dense.trusted(np.zeros((2, 3, 4))).shape
        (2, 3, 4)
        """
        J = cls.__new__(cls)
        J.a = a
        J.batch, J.out_size, J.in_size = a.shape
        return J

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        return Profile(batched=True, stored=MN, apply=MN, entries=MN)

    def _arrays(self) -> tuple[Any, ...]:
        return (self.a,)

    @property
    def dtype(self) -> Any:
        return self.a.dtype

    def to_dense(self) -> Any:
        """The stored ``(B, m, n)`` array itself."""
        return self.a

    _matrix = to_dense

    @property
    def T(self) -> "Dense":
        return Dense(self.a.transpose(0, 2, 1))

    def astype(self, dtype: Any) -> "Dense":
        return Dense(self.a.astype(dtype))

    def _batch_slice(self, s: slice) -> "Dense":
        return Dense(self.a[s])

    def _scaled(self, number: Any, per_sample: Any) -> "Dense":
        return Dense(self.a * (number if per_sample is None else per_sample[:, None, None]))

    def _jvp(self, v: Any, ops: Any) -> Any:
        return ops.matvec(self.a, v)

    def _vjp(self, u: Any, ops: Any) -> Any:
        return ops.vecmat(u, self.a)

    def _apply_left(self, M: Any, ops: Any) -> Any:
        return ops.batched_matmul(self.a, M) if M.ndim == 3 else ops.matmul_shared(self.a, M)

    def _apply_right(self, M: Any, ops: Any) -> Any:
        return ops.batched_matmul(M, self.a) if M.ndim == 3 else ops.shared_matmul(M, self.a)

    def _add_into(self, out: Any) -> None:
        out += self.a

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        return kind

    def diagonal(self) -> Any:
        """The main diagonal of each sample, ``(B, min(m, n))``, as a new array."""
        return self.a.diagonal(axis1=1, axis2=2).copy()

    def _slogdet(self) -> tuple[Any, Any]:
        return self._ops().slogdet(self.a)


@register_sum(Dense, Dense, result=Dense)
def _dense_plus_dense(ops: Any, J: Dense, K: Dense) -> Dense:
    return Dense(J.a + K.a)
