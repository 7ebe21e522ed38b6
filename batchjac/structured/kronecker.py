"""``Kronecker``: ``J = L (x) R`` per sample, stored as its two factors, never as the product."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from batchjac.core.arrays import CPU, as_float_array, common_device, device_of, namespace
from batchjac.structured.algebra import (
    FALLBACK,
    PAIRS,
    Cost,
    Kind,
    Poly,
    Profile,
    Structure,
    register_product,
    register_sum,
)
from batchjac.structured.base import Jacobian, batch_size, block_diagonal_view, diagonal_view
from batchjac.structured.dense import Dense
from batchjac.structured.shared import Shared, generic_product, generic_sum
from batchjac.structured.sparse import (
    INDEX,
    Sparse,
    SparsityPattern,
    register_sparse_form,
    sparse_forms_product,
    sparse_forms_sum,
    sparse_kind,
)

IDENTITY, SHARED, PER_SAMPLE = "identity", "shared", "per_sample"


def _factor(F: Any, name: str) -> Any:
    """An int (an identity of that size), a shared ``(p, q)`` or a per-sample ``(B, p, q)`` array."""
    if isinstance(F, numbers.Integral) and not isinstance(F, bool):
        return batch_size(F, name)
    F = as_float_array(F, name)
    if F.ndim not in (2, 3):
        raise ValueError(
            f"Kronecker: {name} must be an int (an identity), a shared (p, q) or a per-sample (B, p, q) "
            f"array, got shape {tuple(F.shape)}"
        )
    return F


def _shape(F: Any) -> tuple[int, int]:
    return (F, F) if isinstance(F, int) else (int(F.shape[-2]), int(F.shape[-1]))


def _tag(F: Any) -> str:
    return IDENTITY if isinstance(F, int) else (SHARED if F.ndim == 2 else PER_SAMPLE)


def _describe(F: Any) -> tuple[Any, ...]:
    return (*_shape(F), _tag(F))


def _dense_factor(F: Any, xp: Any, dtype: Any) -> Any:
    return xp.eye(F, dtype=dtype) if isinstance(F, int) else F


def _transposed(F: Any) -> Any:
    return F if isinstance(F, int) else F.swapaxes(-1, -2)


def _factor_product(F: Any, G: Any) -> Any:
    """``F @ G`` of two factors (an int factor is an identity)."""
    if isinstance(F, int):
        return G
    if isinstance(G, int):
        return F
    return namespace(F, G).matmul(F, G)


def _per_sample_matrix(F: Any, B: int) -> Any:
    """A per-sample factor ``(B, p, q)`` ready to broadcast against ``(..., S, p, q)`` stacks."""
    return F.reshape(B, 1, *F.shape[-2:]) if F.ndim == 3 else F


def _fold_side(detail: tuple[Any, ...]) -> int:
    """Which factor takes a scale: a matrix before an identity, the smaller of two alike
    (the right one on a tie). 0: left, 1: right."""
    (pl, ql, tl), (pr, qr, tr) = detail
    if (tl == IDENTITY) != (tr == IDENTITY):
        return 0 if tr == IDENTITY else 1
    return 0 if pl * ql < pr * qr else 1


class Kronecker(Jacobian):
    """Per sample ``J = L (x) R``, the Kronecker product, in row-major flattening:
    ``J[i*p_R + k, j*q_R + l] = L[i, j] R[k, l]``.

    Each factor is an int (the identity of that size), a shared ``(p, q)`` array or a
    per-sample ``(B, p, q)`` array; ``shape == (B, p_L p_R, q_L q_R)``; ``batch`` is required
    when no factor is per-sample. The Jacobians it serves (row-major ``(p, q)`` matrices):
    ``linear`` over positions, ``Y = X W^T`` for ``X`` ``(S, n)``: ``dY/dX = I_S (x) W``;
    ``y = W x`` w.r.t. ``W`` ``(m, n)``: ``I_m (x) x^T`` (``x`` per sample as a
    ``(B, 1, n)`` factor); ``Y = L R``: ``dY/dR = L (x) I_r``, ``dY/dL = I_p (x) R^T``.
    ``J v`` is ``vec(L X R^T)`` with ``X`` the ``(q_L, q_R)`` matrix of ``v``: the Kronecker
    matrix is built only by :meth:`to_dense`.

    >>> import numpy as np, batchjac as bj
    >>> W = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> K = bj.Kronecker(3, W, batch=2)  # I_3 (x) W: W applied to each of 3 positions
    >>> K.shape, K.jvp(np.ones((2, 6))).tolist()[0]
    ((2, 6, 6), [3.0, 7.0, 3.0, 7.0, 3.0, 7.0])
    """

    table_order = 6
    batched_kinds = "either"

    def __init__(self, left: Any, right: Any, batch: Any = None):
        left, right = _factor(left, "left"), _factor(right, "right")
        arrays = [F for F in (left, right) if not isinstance(F, int)]
        if len(arrays) == 2:
            common_device(*arrays, names=("left", "right"))
        batches = {int(F.shape[0]) for F in arrays if F.ndim == 3}
        if len(batches) > 1:
            raise ValueError(f"Kronecker: the per-sample factors' batches differ: {sorted(batches)}")
        if batch is None:
            if not batches:
                raise ValueError("Kronecker: batch is required when no factor is per-sample (B, p, q)")
            batch = batches.pop()
        batch = batch_size(batch)
        if batches and batches != {batch}:
            raise ValueError(f"Kronecker: batch {batch} differs from the per-sample factors' {batches.pop()}")
        self.left, self.right, self.batch = left, right, batch
        (pl, ql), (pr, qr) = _shape(left), _shape(right)
        self.out_size, self.in_size = pl * pr, ql * qr

    # -- structure -----------------------------------------------------------------------

    @property
    def detail(self) -> tuple[Any, ...]:
        return (_describe(self.left), _describe(self.right))

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        (pl, ql, tl), (pr, qr, tr) = kind.detail
        stored = sum(p * q for p, q, t in kind.detail if t != IDENTITY)
        apply = ql * pr * qr * (tr != IDENTITY) + pl * ql * pr * (tl != IDENTITY)
        entries = (pl if tl == IDENTITY else pl * ql) * (pr if tr == IDENTITY else pr * qr)
        return Profile(
            batched=PER_SAMPLE in (tl, tr), stored=Poly(const=stored), apply=Poly(const=apply),
            entries=Poly(const=entries),
        )  # fmt: skip

    @classmethod
    def structure_problem(cls, structure: Structure) -> str | None:
        detail = structure.detail
        ok = (
            structure.scale == "one" and len(detail) == 2
            and all(len(f) == 3 and f[2] in (IDENTITY, SHARED, PER_SAMPLE) for f in detail)
        )  # fmt: skip
        if not ok:
            return "a Kronecker structure's detail is ((p_L, q_L, kind_L), (p_R, q_R, kind_R))"
        (pl, ql, _), (pr, qr, _) = detail
        if (structure.out_size, structure.in_size) != (pl * pr, ql * qr):
            return f"a Kronecker structure of factors {detail} is {pl * pr}x{ql * qr}"
        return None

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        side = _fold_side(kind.detail)
        p, q, tag = kind.detail[side]
        new = (p, q, PER_SAMPLE if per_sample or tag == PER_SAMPLE else SHARED)
        detail = (new, kind.detail[1]) if side == 0 else (kind.detail[0], new)
        return Kind(Kronecker, detail=detail)

    def structure(self) -> Structure:
        return Structure(Kronecker, self.batch, self.out_size, self.in_size, detail=self.detail)

    # -- storage -------------------------------------------------------------------------

    def _arrays(self) -> tuple[Any, ...]:
        return tuple(F for F in (self.left, self.right) if not isinstance(F, int))

    @property
    def dtype(self) -> Any:
        arrays = self._arrays()
        return np.result_type(*(F.dtype for F in arrays)) if arrays else np.dtype(np.float64)

    @property
    def device(self) -> str:
        arrays = self._arrays()
        return device_of(arrays[0]) if arrays else CPU

    def _matrix(self) -> Any:
        """The Kronecker matrix, ``(B, m, n)`` or ``(m, n)`` when no factor is per-sample."""
        xp = self._xp()
        L, R = (_dense_factor(F, xp, self.dtype) for F in (self.left, self.right))
        K = xp.einsum("...ij,...kl->...ikjl", L, R)
        return K.reshape(*K.shape[:-4], self.out_size, self.in_size)

    def to_dense(self) -> Any:
        """``(B, m, n)``: the Kronecker matrix of every sample (a new array)."""
        K = self._matrix()
        return K if K.ndim == 3 else self._xp().broadcast_to(K, self.shape).copy()

    @property
    def T(self) -> "Kronecker":
        return Kronecker(_transposed(self.left), _transposed(self.right), self.batch)

    def astype(self, dtype: Any) -> "Kronecker":
        left, right = (F if isinstance(F, int) else F.astype(dtype) for F in (self.left, self.right))
        if isinstance(left, int) and isinstance(right, int):
            left = self._xp().eye(left, dtype=dtype)
        return Kronecker(left, right, self.batch)

    def _batch_slice(self, s: slice) -> "Kronecker":
        left, right = (F[s] if _tag(F) == PER_SAMPLE else F for F in (self.left, self.right))
        return Kronecker(left, right, len(range(self.batch)[s]))

    def _scaled(self, number: Any, per_sample: Any) -> "Kronecker":
        side = _fold_side(self.detail)
        F = (self.left, self.right)[side]
        F = _dense_factor(
            F, namespace(*self._arrays(), *([] if per_sample is None else [per_sample])), self.dtype
        )
        F = F * number if per_sample is None else per_sample[:, None, None] * F
        return Kronecker(F, self.right, self.batch) if side == 0 else Kronecker(self.left, F, self.batch)

    # -- products ------------------------------------------------------------------------

    def _apply_left(self, M: Any, ops: Any) -> Any:
        """``J @ M`` for M ``(B, n, k)`` or ``(n, k)``: ``R`` on each ``(q_R, k)`` slab, then ``L``."""
        xp = namespace(*self._arrays(), M)
        (_, ql), (pr, qr) = _shape(self.left), _shape(self.right)
        k = M.shape[-1]
        X = M.reshape(*M.shape[:-2], ql, qr, k)
        if not isinstance(self.right, int):
            X = xp.matmul(_per_sample_matrix(self.right, self.batch), X)
        X = X.reshape(*X.shape[:-3], ql, pr * k)
        if not isinstance(self.left, int):
            X = xp.matmul(self.left, X)
        return X.reshape(*X.shape[:-2], self.out_size, k)

    def _apply_right(self, M: Any, ops: Any) -> Any:
        return self.T._apply_left(M.swapaxes(-1, -2), ops).swapaxes(-1, -2)

    def _add_into(self, out: Any) -> None:
        (pl, ql), (pr, qr) = _shape(self.left), _shape(self.right)
        L, R = self.left, self.right
        lead = out.shape[:-2]
        if isinstance(L, int) and isinstance(R, int):
            diagonal_view(out)[...] += 1
        elif isinstance(L, int):  # I_S (x) R: R on each diagonal block
            block_diagonal_view(out, L)[...] += _per_sample_matrix(R, self.batch)
        elif isinstance(R, int):  # L (x) I_r: L[i, j] on the diagonal of each (r, r) block
            xp = namespace(out)
            s = out.strides
            row, col = s[-2], s[-1]
            view = xp.lib.stride_tricks.as_strided(
                out, shape=(*lead, pl, ql, R), strides=(*s[:-2], R * row, R * col, row + col)
            )
            view[...] += L[..., None]
        else:  # row by row of L: one (p_R, q_L, q_R) slab at a time, never the whole product
            out5 = out.reshape(*lead, pl, pr, ql, qr)
            for i in range(pl):
                out5[..., i, :, :, :] += L[..., i, None, :, None] * R[..., :, None, :]

    def diagonal(self) -> Any:
        """The main diagonal of each sample, ``(B, min(m, n))``: ``L[i, j] R[k, l]`` at the
        positions where ``i p_R + k == j q_R + l``."""
        xp = self._xp()
        (_, _), (pr, qr) = _shape(self.left), _shape(self.right)
        t = xp.arange(min(self.out_size, self.in_size))
        i, k, j, l = t // pr, t % pr, t // qr, t % qr

        def entries(F: Any, r: Any, c: Any) -> Any:
            if isinstance(F, int):
                return (r == c).astype(self.dtype)
            return F[..., r, c]

        d = entries(self.left, i, j) * entries(self.right, k, l)
        return xp.broadcast_to(d, (self.batch, t.shape[0])).astype(self.dtype, copy=True)

    def _slogdet(self) -> tuple[Any, Any]:
        """``det(L (x) R) = det(L)^{p_R} det(R)^{p_L}`` for square factors; with non-square
        factors the product is rank deficient (sign 0, ``-inf``)."""
        xp = self._xp()
        (pl, ql), (pr, qr) = _shape(self.left), _shape(self.right)
        zeros = xp.zeros(self.batch, dtype=self.dtype)
        if pl != ql or pr != qr:
            return zeros, xp.full(self.batch, -np.inf, dtype=self.dtype)
        ops = self._ops()

        def factor_slogdet(F: Any) -> tuple[Any, Any]:
            if isinstance(F, int):
                return 1.0, 0.0
            sign, logabsdet = ops.slogdet(F if F.ndim == 3 else F[None])
            return sign, logabsdet

        (sl, ll), (sr, lr) = factor_slogdet(self.left), factor_slogdet(self.right)
        sign = zeros + sl**pr * sr**pl
        logabsdet = zeros + (pr * ll if pr else 0.0) + (pl * lr if pl else 0.0)  # size 0: det 1
        return sign, xp.where(sign == 0, -np.inf, logabsdet)


# --------------------------------------------------------------------------------------
# The sparse form (with an identity factor), and the rules
# --------------------------------------------------------------------------------------


def _kronecker_sparse_kind(kind: Kind) -> Kind | None:
    (_, _, tl), (_, _, tr) = kind.detail
    if IDENTITY not in (tl, tr):
        return None
    return Kind(Sparse, detail=(PER_SAMPLE in (tl, tr),))


@register_sparse_form(Kronecker, _kronecker_sparse_kind)
def _kronecker_as_sparse(K: Kronecker) -> Sparse | None:
    L, R = K.left, K.right
    if not (isinstance(L, int) or isinstance(R, int)):
        return None
    xp = K._xp() if K._arrays() else np
    if isinstance(L, int) and isinstance(R, int):
        n = L * R
        pattern = SparsityPattern(
            xp.arange(n + 1, dtype=INDEX), xp.arange(n, dtype=INDEX), (n, n), unique=True
        )
        return Sparse._of(pattern, xp.ones(n, dtype=K.dtype), K.batch)
    if isinstance(L, int):  # I_S (x) R: row (s, k) holds columns s q_R + l
        S, (pr, qr) = L, _shape(R)
        cols = xp.arange(S, dtype=INDEX)[:, None, None] * qr + xp.arange(qr, dtype=INDEX)[None, None, :]
        cols = xp.broadcast_to(cols, (S, pr, qr))
        lead = R.shape[:-2]
        values = xp.broadcast_to(R.reshape(*lead, 1, pr * qr), (*lead, S, pr * qr)).reshape(
            *lead, S * pr * qr
        )
        width = qr
    else:  # L (x) I_r: row (i, k) holds columns j r + k
        (pl, ql), r = _shape(L), R
        cols = xp.arange(ql, dtype=INDEX)[None, None, :] * r + xp.arange(r, dtype=INDEX)[None, :, None]
        cols = xp.broadcast_to(cols, (pl, r, ql))
        lead = L.shape[:-2]
        values = xp.broadcast_to(L[..., :, None, :], (*lead, pl, r, ql)).reshape(*lead, pl * r * ql)
        width = ql
    pattern = SparsityPattern(
        xp.arange(K.out_size + 1, dtype=INDEX) * width, cols.reshape(-1).copy(), (K.out_size, K.in_size), True
    )
    return Sparse._of(pattern, values, K.batch)


def _factors_match(J: Any, K: Any) -> bool:
    (_, ql, _), (_, qr, _) = J.detail
    (pl, _, _), (pr, _, _) = K.detail
    return ql == pl and qr == pr


def _product_tag(a: str, b: str) -> str:
    if a == IDENTITY:
        return b
    if b == IDENTITY:
        return a
    return SHARED if a == b == SHARED else PER_SAMPLE


def _kron_product_kind(J: Structure, K: Structure) -> Any:
    if _factors_match(J, K):
        (pl, _, tl1), (pr, _, tr1) = J.detail
        (_, ql, tl2), (_, qr, tr2) = K.detail
        return Kind(Kronecker, detail=((pl, ql, _product_tag(tl1, tl2)), (pr, qr, _product_tag(tr1, tr2))))
    if sparse_kind(J) and sparse_kind(K):
        return Kind(Sparse, detail=(J.batched or K.batched,))
    return Kind(_generic(J, K))


def _generic(J: Structure, K: Structure) -> type:
    return Dense if J.batched or K.batched else Shared


def _kron_product_cost(J: Structure, K: Structure) -> Cost:
    if _factors_match(J, K):
        flops = 0
        for (p, q, a), (_, r, b) in zip(J.detail, K.detail):
            flops += p * q * r if IDENTITY not in (a, b) else 0
        return Cost(constant=flops)
    return PAIRS if sparse_kind(J) and sparse_kind(K) else FALLBACK


@register_product(
    Kronecker, Kronecker, result=_kron_product_kind, cost=_kron_product_cost, label="Kronecker?"
)
def _kronecker_times_kronecker(ops: Any, J: Kronecker, K: Kronecker) -> Jacobian:
    if _factors_match(J.structure(), K.structure()):
        return Kronecker(_factor_product(J.left, K.left), _factor_product(J.right, K.right), J.batch)
    if _kronecker_sparse_kind(J.structure().key) and _kronecker_sparse_kind(K.structure().key):
        return sparse_forms_product(ops, J, K)
    return generic_product(ops, J, K)


def _with_sparse_form_kind(J: Structure, K: Structure) -> Any:
    if sparse_kind(J) and sparse_kind(K):
        return Kind(Sparse, detail=(J.batched or K.batched,))
    return Kind(_generic(J, K))


def _with_sparse_form_cost(J: Structure, K: Structure) -> Cost:
    return PAIRS if sparse_kind(J) and sparse_kind(K) else FALLBACK


def _through_sparse_forms(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    if sparse_kind(J.structure()) and sparse_kind(K.structure()):
        return sparse_forms_product(ops, J, K)
    return generic_product(ops, J, K)


register_product(
    Sparse, Kronecker, result=_with_sparse_form_kind, cost=_with_sparse_form_cost, label="Sparse?"
)(_through_sparse_forms)
register_product(
    Kronecker, Sparse, result=_with_sparse_form_kind, cost=_with_sparse_form_cost, label="Sparse?"
)(_through_sparse_forms)


# -- sums --------------------------------------------------------------------------------


def _shared_identity(a: tuple[Any, ...], b: tuple[Any, ...], side: int) -> bool:
    """Both Kronecker products have the same identity factor on ``side`` and factors of equal
    shapes on the other: ``I (x) R1 + I (x) R2 = I (x) (R1 + R2)`` (and mirrored)."""
    other = 1 - side
    return a[side][2] == b[side][2] == IDENTITY and a[side][0] == b[side][0] and a[other][:2] == b[other][:2]


def _sum_tag(a: str, b: str) -> str:
    return PER_SAMPLE if PER_SAMPLE in (a, b) else SHARED


def _kron_sum_kind(J: Structure, K: Structure) -> Any:
    a, b = J.detail, K.detail
    for side in (0, 1):
        if _shared_identity(a, b, side):
            other = 1 - side
            summed = (*a[other][:2], _sum_tag(a[other][2], b[other][2]))
            return Kind(Kronecker, detail=(a[0], summed) if side == 0 else (summed, a[1]))
    return _with_sparse_form_kind(J, K)


@register_sum(Kronecker, Kronecker, result=_kron_sum_kind, label="Kronecker?")
def _kronecker_plus_kronecker(ops: Any, J: Kronecker, K: Kronecker) -> Jacobian:
    a, b = J.detail, K.detail
    xp = namespace(*J._arrays(), *K._arrays())
    dtype = np.result_type(J.dtype, K.dtype)
    if _shared_identity(a, b, 0):
        return Kronecker(
            J.left, _dense_factor(J.right, xp, dtype) + _dense_factor(K.right, xp, dtype), J.batch
        )
    if _shared_identity(a, b, 1):
        return Kronecker(
            _dense_factor(J.left, xp, dtype) + _dense_factor(K.left, xp, dtype), J.right, J.batch
        )
    return _sum_through_sparse_forms(ops, J, K)


def _sum_through_sparse_forms(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    if sparse_kind(J.structure()) and sparse_kind(K.structure()):
        return sparse_forms_sum(ops, J, K)
    return generic_sum(ops, J, K)


register_sum(Sparse, Kronecker, result=_with_sparse_form_kind, label="Sparse?")(_sum_through_sparse_forms)
