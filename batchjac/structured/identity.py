"""``Identity``: ``scale * I``, a diagonal that stores no diagonal; a factor that only scales."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from batchjac.core.arrays import CPU, GPU, as_float_array, cupy_module, device_of, float_dtype, namespace
from batchjac.structured.algebra import (
    FREE,
    ONE,
    SCALING,
    SUMS,
    ZERO,
    Kind,
    N,
    Profile,
    Structure,
    register_product,
    register_sum,
    sum_structure,
)
from batchjac.structured.base import Jacobian, batch_size, diagonal_view
from batchjac.structured.dense import Dense
from batchjac.structured.diagonal import Diagonal
from batchjac.structured.shared import Shared


class Identity(Diagonal):
    """``scale * I_n`` for each of ``batch`` samples; ``scale`` a number or a ``(B,)`` array.

    A diagonal Jacobian (``isinstance(I, bj.Diagonal)`` holds, and ``I.d`` is a read-only
    ``(B, n)`` view) that stores nothing of size ``n``: a product with an ``Identity`` is a
    scaling, or nothing at all when ``scale == 1``. With a numeric ``scale`` and no
    ``dtype``, the identity is "weak": it takes the dtype of whatever it meets; ``device``
    picks where :meth:`to_dense` builds.

    >>> import numpy as np, batchjac as bj
    >>> I = bj.Identity(2, batch=1, scale=3.0)
    >>> I.to_dense().tolist()
    [[[3.0, 0.0], [0.0, 3.0]]]
    """

    table_order = 3
    batched_kinds = "either"
    scale: Any  # a Python float, or a (B,) array (per-sample scales)

    def __init__(self, n: Any, batch: Any, scale: Any = 1, *, dtype: Any = None, device: str = CPU):
        self.out_size = self.in_size = batch_size(n, "n")
        self.batch = batch_size(batch)
        self._device = device
        if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            self.scale = float(scale)
            self._dtype = None if dtype is None else float_dtype(dtype, "dtype")
        else:
            s = as_float_array(scale, "scale")
            if s.shape not in ((), (self.batch,)):
                raise ValueError(
                    f"Identity: scale must be a number or of shape ({self.batch},), got shape {tuple(s.shape)}"
                )
            self.scale = namespace(s).broadcast_to(s, (self.batch,))
            self._dtype = s.dtype if dtype is None else float_dtype(dtype, "dtype")
            self._device = device_of(s)

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        if kind.scale == "one":
            return Profile(batched=False, stored=ZERO, apply=ZERO, entries=N)
        if kind.scale == "number":
            return Profile(batched=False, stored=ZERO, apply=N, entries=N)
        return Profile(batched=True, stored=ONE, apply=N, entries=N)

    @classmethod
    def structure_problem(cls, structure: Any) -> str | None:
        if structure.scale not in ("one", "number", "per_sample") or structure.detail != ():
            return f"an Identity's scale is one of 'one', 'number', 'per_sample', got {structure.scale!r}"
        if structure.out_size != structure.in_size:
            return f"a Identity is square, got out_size {structure.out_size} and in_size {structure.in_size}"
        return None

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        if per_sample or kind.scale == "per_sample":
            return Kind(Identity, "per_sample")
        return Kind(Identity, "number")

    def structure(self) -> Any:
        scale = "per_sample" if self.per_sample else ("one" if self.scale == 1.0 else "number")
        return Structure(Identity, self.batch, self.out_size, self.in_size, scale)

    @property
    def d(self) -> Any:
        """The diagonal, ``(B, n)``: a read-only broadcast of the scale."""
        return self.scale_vector()

    @property
    def per_sample(self) -> bool:
        """True when ``scale`` is a ``(B,)`` array rather than one number."""
        return not isinstance(self.scale, float)

    @property
    def is_weak(self) -> bool:
        """True when the identity has no dtype of its own and takes that of its partner."""
        return self._dtype is None

    @property
    def is_unit(self) -> bool:
        """True for the plain identity (scale 1): a product with it changes nothing."""
        return not self.per_sample and self.scale == 1.0

    def _arrays(self) -> tuple[Any, ...]:
        return (self.scale,) if self.per_sample else ()

    @property
    def device(self) -> str:
        return self._device

    @property
    def dtype(self) -> Any:
        return np.dtype(np.float64) if self._dtype is None else self._dtype

    def scale_column(self) -> Any:
        """The scale, broadcastable against ``(B, n)``: a number or ``(B, 1)``."""
        return self.scale[:, None] if self.per_sample else self.scale

    def scale_vector(self, xp: Any = None, dtype: Any = None) -> Any:
        """The scale as an array of shape ``(B, n)`` (a read-only broadcast view)."""
        xp = xp or self._xp_for_device()
        # xp.full: a number becomes a GPU array by a fill kernel, not by a copy from the host
        full = self.scale if self.per_sample else xp.full((), self.scale, dtype=dtype or self.dtype)
        col = full[:, None] if self.per_sample else full
        return xp.broadcast_to(col, (self.batch, self.in_size))

    def _xp_for_device(self) -> Any:
        return cupy_module() if self._device == GPU else np

    def to_dense(self) -> Any:
        """``(B, n, n)`` with ``scale`` on the diagonal."""
        return Diagonal(self.diagonal()).to_dense()

    def _matrix(self) -> Any:
        if self.per_sample:
            return self.to_dense()
        return self._xp_for_device().eye(self.in_size, dtype=self.dtype) * self.scale

    @property
    def T(self) -> "Identity":
        return self

    def astype(self, dtype: Any) -> "Identity":
        scale = self.scale.astype(dtype) if self.per_sample else self.scale
        return Identity(self.in_size, self.batch, scale, dtype=dtype, device=self._device)

    def _batch_slice(self, s: slice) -> "Identity":
        scale = self.scale[s] if self.per_sample else self.scale
        return Identity(
            self.in_size, len(range(self.batch)[s]), scale, dtype=self._dtype, device=self._device
        )

    def _scaled(self, number: Any, per_sample: Any) -> "Identity":
        scale = self.scale * number if per_sample is None else per_sample * self.scale
        return Identity(self.in_size, self.batch, scale, dtype=self._dtype, device=self._device)

    def _jvp(self, v: Any, ops: Any) -> Any:
        return v * self.scale_column()

    def _vjp(self, u: Any, ops: Any) -> Any:
        return u * self.scale_column()  # s I is its own transpose

    def _apply_left(self, M: Any, ops: Any) -> Any:
        return M * (self.scale[:, None, None] if self.per_sample else self.scale)

    _apply_right = _apply_left

    def _add_into(self, out: Any) -> None:
        diagonal_view(out)[...] += self.scale_column()

    def diagonal(self) -> Any:
        """``(B, n)`` filled with the scale."""
        return self.scale_vector().astype(self.dtype)

    def _slogdet(self) -> tuple[Any, Any]:
        xp = self._xp_for_device()
        scale = (
            self.scale.astype(self.dtype, copy=False)
            if self.per_sample
            else xp.full((), self.scale, self.dtype)
        )
        s = xp.broadcast_to(scale, (self.batch,))
        if self.in_size == 0:  # the empty determinant is 1
            return xp.ones_like(s), xp.zeros_like(s)
        with np.errstate(divide="ignore"):
            return xp.sign(s) ** self.in_size, self.in_size * xp.log(xp.abs(s))


# --------------------------------------------------------------------------------------
# Products: an identity factor scales the other operand (or leaves it as it is)
# --------------------------------------------------------------------------------------


def _scaled_by(I: Any, X: Any) -> Kind:
    """The structure of ``X`` scaled by the identity ``I`` (structures)."""
    if I.scale == "one":
        return X.key
    return X.kind.scaled_kind(X.key, I.scale == "per_sample")


def _scaling_cost(I: Any, X: Any) -> Any:
    return FREE if I.scale == "one" else SCALING


def _times_identity(X: Jacobian, I: Identity) -> Jacobian:
    if I.is_unit:
        return X  # an identity factor costs nothing (a dtype it brings is applied after)
    return X._scaled(None, I.scale) if I.per_sample else X._scaled(I.scale, None)


@register_product(
    Identity, Jacobian, result=lambda I, X: _scaled_by(I, X), cost=lambda I, X: _scaling_cost(I, X),
    priority=1, label="<-",
)  # fmt: skip
def _identity_times(ops: Any, I: Identity, X: Jacobian) -> Jacobian:
    return _times_identity(X, I)


@register_product(
    Jacobian, Identity, result=lambda X, I: _scaled_by(I, X), cost=lambda X, I: _scaling_cost(I, X),
    priority=1, label="<-",
)  # fmt: skip
def _times_identity_rule(ops: Any, X: Jacobian, I: Identity) -> Jacobian:
    return _times_identity(X, I)


def _identity_kind(I: Any, K: Any) -> Kind:
    if I.scale == "one":
        return K.key
    if K.scale == "one":
        return I.key
    return Identity.scaled_kind(K.key, I.scale == "per_sample")


def _identity_identity_cost(I: Any, K: Any) -> Any:
    return FREE if "one" in (I.scale, K.scale) else SCALING


@register_product(Identity, Identity, result=_identity_kind, cost=_identity_identity_cost, label="<-")
def _identity_times_identity(ops: Any, I: Identity, K: Identity) -> Jacobian:
    if I.is_unit or K.is_unit:
        return K if I.is_unit else I
    return _times_identity(K, I)


# --------------------------------------------------------------------------------------
# Sums: an identity is added as a diagonal of its partner's dtype
# --------------------------------------------------------------------------------------


def _as_diagonal(I: Identity, partner: Jacobian) -> Diagonal:
    """``I`` as a ``Diagonal`` (a broadcast view): of the partner's dtype when ``I`` is weak."""
    xp = namespace(*partner._arrays()) if partner._arrays() else I._xp_for_device()
    return Diagonal(I.scale_vector(xp, partner.dtype if I.is_weak else I.dtype))


def _plus_identity_kind(X: Any, I: Any) -> Kind:
    as_diagonal = Structure(Diagonal, X.batch, X.out_size, X.in_size)
    return sum_structure(X, as_diagonal).key


def _plus_identity_label(left: type, right: type) -> str:
    rule, swapped = SUMS.resolve(left, Diagonal)
    return rule.label(Diagonal, left) if swapped else rule.label(left, Diagonal)


@register_sum(Jacobian, Identity, result=_plus_identity_kind, priority=1, label=_plus_identity_label)
def _plus_identity(ops: Any, X: Jacobian, I: Identity) -> Jacobian:
    return X + _as_diagonal(I, X)


@register_sum(Diagonal, Identity, result=Diagonal, priority=1)
def _diagonal_plus_identity(ops: Any, D: Diagonal, I: Identity) -> Diagonal:
    return Diagonal(D.d + I.scale_column())


def _identity_sum_dtype(X: Identity, I: Identity) -> Any:
    if X.is_weak and I.is_weak:
        return None
    return np.result_type(*(J.dtype for J in (X, I) if not J.is_weak))


@register_sum(Identity, Identity, result=lambda I, K: Kind(Identity, "per_sample" if "per_sample" in (I.scale, K.scale) else "number"), label="Identity")  # fmt: skip
def _identity_plus_identity(ops: Any, X: Identity, I: Identity) -> Identity:
    device = X.device if X.per_sample else I.device
    return Identity(X.in_size, X.batch, X.scale + I.scale, dtype=_identity_sum_dtype(X, I), device=device)


def _shared_plus_identity_kind(X: Any, I: Any) -> Kind:
    return Kind(Dense) if I.scale == "per_sample" else Kind(Shared)


@register_sum(Shared, Identity, result=_shared_plus_identity_kind, priority=1, label="Shared?")
def _shared_plus_identity(ops: Any, X: Shared, I: Identity) -> Jacobian:
    if I.per_sample:
        return Dense(ops.add_diagonal(X.A, I.scale_vector(X._xp(), X.dtype)))
    xp = X._xp()
    return Shared(X.A + I.scale * xp.eye(X.in_size, dtype=X.dtype), X.batch)
