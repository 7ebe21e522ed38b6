"""``BlockDiagonal``: ``S`` blocks ``(p, q)`` on the diagonal of each sample, nothing between."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from batchjac.core.arrays import as_float_array, namespace
from batchjac.structured.algebra import (
    FALLBACK,
    PAIRS,
    SCALING,
    Cost,
    Kind,
    Poly,
    Profile,
    Structure,
    register_product,
    register_sum,
)
from batchjac.structured.base import Jacobian, batch_size, block_diagonal_view
from batchjac.structured.dense import Dense
from batchjac.structured.diagonal import Diagonal
from batchjac.structured.identity import Identity
from batchjac.structured.kronecker import IDENTITY, Kronecker
from batchjac.structured.shared import Shared, generic_product, generic_sum
from batchjac.structured.sparse import (
    INDEX,
    Sparse,
    SparsityPattern,
    as_sparse,
    register_sparse_form,
    sparse_forms_product,
    sparse_forms_sum,
    sparse_kind,
)


class BlockDiagonal(Jacobian):
    """Per sample, ``S`` blocks of shape ``(p, q)`` on the diagonal: ``shape == (B, S p, S q)``.

    ``blocks`` is ``(B, S, p, q)`` (per sample) or ``(S, p, q)`` (shared by the batch, which
    then needs ``batch``). Block ``s`` maps inputs ``s q .. s q + q - 1`` to outputs
    ``s p .. s p + p - 1``: the Jacobian of a map applied independently to ``S`` rows, e.g.
    softmax over the last axis of ``(B, S, n)``, or ``det``/``solve`` on a stack of matrices.

    >>> import numpy as np, batchjac as bj
    >>> blocks = np.array([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 0.0], [0.0, 5.0]]]])  # (1, 2, 2, 2)
    >>> J = bj.BlockDiagonal(blocks)
    >>> J.shape, J.jvp(np.ones((1, 4))).tolist(), (J @ J).blocks.shape
    ((1, 4, 4), [[3.0, 7.0, 5.0, 5.0]], (1, 2, 2, 2))
    """

    table_order = 7
    batched_kinds = "either"

    def __init__(self, blocks: Any, batch: Any = None):
        blocks = as_float_array(blocks, "blocks")
        if blocks.ndim == 4:
            if batch is not None and batch_size(batch) != blocks.shape[0]:
                raise ValueError(
                    f"BlockDiagonal: batch {batch} differs from the blocks' batch {blocks.shape[0]}"
                )
            batch = int(blocks.shape[0])
        elif blocks.ndim == 3:
            if batch is None:
                raise ValueError(
                    "BlockDiagonal: blocks of shape (S, p, q) are shared by the batch, so batch is required"
                )
        else:
            raise ValueError(
                f"BlockDiagonal: blocks must be (B, S, p, q) or (S, p, q), got shape {tuple(blocks.shape)}"
            )
        self.blocks = blocks
        self.batch = batch_size(batch)
        self.count, self.block_rows, self.block_cols = (int(s) for s in blocks.shape[-3:])
        self.out_size, self.in_size = self.count * self.block_rows, self.count * self.block_cols

    # -- structure -----------------------------------------------------------------------

    @property
    def detail(self) -> tuple[Any, ...]:
        return (self.count, self.block_rows, self.block_cols, self.blocks.ndim == 4)

    @classmethod
    def profile(cls, kind: Kind) -> Profile:
        S, p, q, batched = kind.detail
        return Profile(
            batched=batched,
            stored=Poly(const=S * p * q),
            apply=Poly(const=S * p * q),
            entries=Poly(const=S * p * q),
        )

    @classmethod
    def structure_problem(cls, structure: Structure) -> str | None:
        detail = structure.detail
        if structure.scale != "one" or len(detail) != 4:
            return "a BlockDiagonal structure's detail is (S, p, q, blocks_vary_per_sample)"
        S, p, q, _ = detail
        if (structure.out_size, structure.in_size) != (S * p, S * q):
            return f"a BlockDiagonal structure of {S} blocks ({p}, {q}) is {S * p}x{S * q}"
        return None

    @classmethod
    def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind:
        S, p, q, batched = kind.detail
        return Kind(BlockDiagonal, detail=(S, p, q, batched or per_sample))

    def structure(self) -> Structure:
        return Structure(BlockDiagonal, self.batch, self.out_size, self.in_size, detail=self.detail)

    # -- storage -------------------------------------------------------------------------

    def _arrays(self) -> tuple[Any, ...]:
        return (self.blocks,)

    @property
    def dtype(self) -> Any:
        return self.blocks.dtype

    def _matrix(self) -> Any:
        xp = self._xp()
        out = xp.zeros((*self.blocks.shape[:-3], self.out_size, self.in_size), dtype=self.dtype)
        block_diagonal_view(out, self.count)[...] = self.blocks
        return out

    def to_dense(self) -> Any:
        """``(B, S p, S q)`` with the blocks on the diagonal (a new array)."""
        dense = self._matrix()
        return dense if dense.ndim == 3 else self._xp().broadcast_to(dense, self.shape).copy()

    @property
    def T(self) -> "BlockDiagonal":
        return BlockDiagonal(self.blocks.swapaxes(-1, -2), self.batch)

    def astype(self, dtype: Any) -> "BlockDiagonal":
        return BlockDiagonal(self.blocks.astype(dtype), self.batch)

    def _batch_slice(self, s: slice) -> "BlockDiagonal":
        blocks = self.blocks[s] if self.blocks.ndim == 4 else self.blocks
        return BlockDiagonal(blocks, len(range(self.batch)[s]))

    def _scaled(self, number: Any, per_sample: Any) -> "BlockDiagonal":
        if per_sample is None:
            return BlockDiagonal(self.blocks * number, self.batch)
        return BlockDiagonal(per_sample[:, None, None, None] * self.blocks, self.batch)

    def _add_into(self, out: Any) -> None:
        block_diagonal_view(out, self.count)[...] += self.blocks

    # -- products ------------------------------------------------------------------------

    def _apply_left(self, M: Any, ops: Any) -> Any:
        xp = namespace(self.blocks, M)
        k = M.shape[-1]
        X = xp.matmul(self.blocks, M.reshape(*M.shape[:-2], self.count, self.block_cols, k))
        return X.reshape(*X.shape[:-3], self.out_size, k)

    def _apply_right(self, M: Any, ops: Any) -> Any:
        xp = namespace(self.blocks, M)
        k = M.shape[-2]
        X = M.reshape(*M.shape[:-2], k, self.count, self.block_rows).swapaxes(-3, -2)  # (..., S, k, p)
        X = xp.matmul(X, self.blocks).swapaxes(-3, -2)  # (..., k, S, q)
        return X.reshape(*X.shape[:-3], k, self.in_size)

    def diagonal(self) -> Any:
        """The main diagonal of each sample, ``(B, min(m, n))`` (a new array)."""
        xp = self._xp()
        p, q = self.block_rows, self.block_cols
        t = xp.arange(min(self.out_size, self.in_size))
        s_row, s_col = t // max(p, 1), t // max(q, 1)
        inside = s_row == s_col
        d = xp.where(
            inside, self.blocks[..., xp.minimum(s_row, self.count - 1), t % max(p, 1), t % max(q, 1)], 0
        )
        return xp.broadcast_to(d, (self.batch, t.shape[0])).astype(self.dtype, copy=True)

    def _slogdet(self) -> tuple[Any, Any]:
        xp = self._xp()
        blocks = self.blocks if self.blocks.ndim == 4 else self.blocks[None]
        n_batch = blocks.shape[0]
        p = self.block_rows
        sign, logabsdet = self._ops().slogdet(blocks.reshape(n_batch * self.count, p, p))
        sign = xp.prod(sign.reshape(n_batch, self.count), axis=1)
        logabsdet = xp.sum(logabsdet.reshape(n_batch, self.count), axis=1)
        logabsdet = xp.where(sign == 0, -np.inf, logabsdet)
        if self.blocks.ndim == 3:
            return xp.broadcast_to(sign, (self.batch,)).copy(), xp.broadcast_to(
                logabsdet, (self.batch,)
            ).copy()
        return sign, logabsdet


@register_sparse_form(BlockDiagonal, lambda kind: Kind(Sparse, detail=(kind.detail[3],)))
def _block_diagonal_as_sparse(J: BlockDiagonal) -> Sparse:
    xp = J._xp()
    S, p, q = J.count, J.block_rows, J.block_cols
    cols = xp.arange(S, dtype=INDEX)[:, None, None] * q + xp.arange(q, dtype=INDEX)[None, None, :]
    cols = xp.broadcast_to(cols, (S, p, q)).reshape(-1).copy()
    pattern = SparsityPattern(
        xp.arange(S * p + 1, dtype=INDEX) * q, cols, (J.out_size, J.in_size), unique=True
    )
    return Sparse._of(pattern, J.blocks.reshape(*J.blocks.shape[:-3], S * p * q), J.batch)


# --------------------------------------------------------------------------------------
# Rules. ``I_S (x) R`` is block-diagonal too: a Kronecker with an identity on the left
# meets blocks as blocks.
# --------------------------------------------------------------------------------------


def _kind(S: int, p: int, q: int, *operands: Structure) -> Kind:
    return Kind(BlockDiagonal, detail=(S, p, q, any(J.batched for J in operands)))


def _generic(J: Structure, K: Structure) -> Kind:
    return Kind(Dense if J.batched or K.batched else Shared)


def _as_blocks(K: Structure) -> tuple[int, int, int] | None:
    """``(S, p, q)`` when a structure is block-diagonal: a BlockDiagonal, or ``I_S (x) R``."""
    if K.kind is BlockDiagonal:
        return K.detail[:3]
    if K.kind is Kronecker and K.detail[0][2] == IDENTITY and K.detail[1][2] != IDENTITY:
        (S, _, _), (p, q, _) = K.detail
        return (S, p, q)
    return None


def _blocks_of(J: Jacobian) -> Any:
    """The blocks of a block-diagonal Jacobian, ``(B, S, p, q)`` or ``(S, p, q)`` shared, or
    ``(B, 1, p, q)`` / ``(p, q)`` for the one block ``R`` of ``I_S (x) R`` (it broadcasts)."""
    if isinstance(J, BlockDiagonal):
        return J.blocks
    R = cast(Kronecker, J).right  # else I_S (x) R, as _as_blocks says
    return R[:, None] if R.ndim == 3 else R


def _block_product_kind(J: Structure, K: Structure) -> Kind:
    a, b = _as_blocks(J), _as_blocks(K)
    if a and b and a[0] == b[0] and a[2] == b[1]:
        return _kind(a[0], a[1], b[2], J, K)
    if sparse_kind(J) and sparse_kind(K):
        return Kind(Sparse, detail=(J.batched or K.batched,))
    return _generic(J, K)


def _block_product_cost(J: Structure, K: Structure) -> Cost:
    a, b = _as_blocks(J), _as_blocks(K)
    if a and b and a[0] == b[0] and a[2] == b[1]:
        return Cost(constant=a[0] * a[1] * a[2] * b[2])
    return PAIRS if sparse_kind(J) and sparse_kind(K) else FALLBACK


def _block_product(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    a, b = _as_blocks(J.structure()), _as_blocks(K.structure())
    if a and b and a[0] == b[0] and a[2] == b[1]:
        return BlockDiagonal(
            namespace(*J._arrays(), *K._arrays()).matmul(_blocks_of(J), _blocks_of(K)), J.batch
        )
    if sparse_kind(J.structure()) and sparse_kind(K.structure()):
        return sparse_forms_product(ops, J, K)
    return generic_product(ops, J, K)


for _left, _right in ((BlockDiagonal, BlockDiagonal), (Kronecker, BlockDiagonal), (BlockDiagonal, Kronecker)):
    register_product(
        _left, _right, result=_block_product_kind, cost=_block_product_cost, label="BlockDiagonal?"
    )(_block_product)


@register_product(Sparse, BlockDiagonal, result=lambda J, K: Kind(Sparse, detail=(J.batched or K.batched,)), cost=PAIRS, label="Sparse")  # fmt: skip
def _sparse_times_blocks(ops: Any, J: Sparse, K: BlockDiagonal) -> Sparse:
    return sparse_forms_product(ops, J, K)


@register_product(BlockDiagonal, Sparse, result=lambda J, K: Kind(Sparse, detail=(J.batched or K.batched,)), cost=PAIRS, label="Sparse")  # fmt: skip
def _blocks_times_sparse(ops: Any, J: BlockDiagonal, K: Sparse) -> Sparse:
    return sparse_forms_product(ops, J, K)


# -- diagonal scalings --------------------------------------------------------------------


def _diagonal_product_kind(D: Structure, K: Structure) -> Kind:
    blocks = _as_blocks(K)
    if blocks:
        return _kind(*blocks, D, K)
    kind = sparse_kind(K)
    return Kind(Sparse, detail=(True,)) if kind else Kind(Dense)


def _diagonal_product_cost(D: Structure, K: Structure) -> Cost:
    return SCALING if _as_blocks(K) or sparse_kind(K) else FALLBACK


def _row_blocks(D: Diagonal, J: Jacobian) -> Any:
    S, p = (
        (J.count, J.block_rows)
        if isinstance(J, BlockDiagonal)
        else (cast(Kronecker, J).left, _blocks_of(J).shape[-2])
    )
    return D.d.reshape(D.batch, S, p)


@register_product(Diagonal, BlockDiagonal, result=_diagonal_product_kind, cost=_diagonal_product_cost, label="BlockDiagonal")  # fmt: skip
@register_product(Diagonal, Kronecker, result=_diagonal_product_kind, cost=_diagonal_product_cost, label="BlockDiagonal?")  # fmt: skip
def _diagonal_times_blocks(ops: Any, D: Diagonal, J: Jacobian) -> Jacobian:
    if _as_blocks(J.structure()):
        return BlockDiagonal(_row_blocks(D, J)[..., None] * _blocks_of(J), D.batch)
    sparse = as_sparse(J)
    return D @ sparse if sparse is not None else generic_product(ops, D, J)


def _col_blocks(J: Jacobian, D: Diagonal) -> Any:
    S, q = (
        (J.count, J.block_cols)
        if isinstance(J, BlockDiagonal)
        else (cast(Kronecker, J).left, _blocks_of(J).shape[-1])
    )
    return D.d.reshape(D.batch, S, q)


def _product_diagonal_kind(K: Structure, D: Structure) -> Kind:
    return _diagonal_product_kind(D, K)


def _product_diagonal_cost(K: Structure, D: Structure) -> Cost:
    return _diagonal_product_cost(D, K)


@register_product(BlockDiagonal, Diagonal, result=_product_diagonal_kind, cost=_product_diagonal_cost, label="BlockDiagonal")  # fmt: skip
@register_product(Kronecker, Diagonal, result=_product_diagonal_kind, cost=_product_diagonal_cost, label="BlockDiagonal?")  # fmt: skip
def _blocks_times_diagonal(ops: Any, J: Jacobian, D: Diagonal) -> Jacobian:
    if _as_blocks(J.structure()):
        return BlockDiagonal(_blocks_of(J) * _col_blocks(J, D)[..., None, :], D.batch)
    sparse = as_sparse(J)
    return sparse @ D if sparse is not None else generic_product(ops, J, D)


# -- sums -----------------------------------------------------------------------------------


def _block_sum_kind(J: Structure, K: Structure) -> Kind:
    a, b = _as_blocks(J), _as_blocks(K)
    if a and b and a == b:
        return _kind(*a, J, K)
    if sparse_kind(J) and sparse_kind(K):
        return Kind(Sparse, detail=(J.batched or K.batched,))
    return _generic(J, K)


def _block_sum(ops: Any, J: Jacobian, K: Jacobian) -> Jacobian:
    a, b = _as_blocks(J.structure()), _as_blocks(K.structure())
    if a and b and a == b:
        return BlockDiagonal(_blocks_of(J) + _blocks_of(K), J.batch)
    if sparse_kind(J.structure()) and sparse_kind(K.structure()):
        return sparse_forms_sum(ops, J, K)
    return generic_sum(ops, J, K)


for _left, _right in ((BlockDiagonal, BlockDiagonal), (BlockDiagonal, Kronecker)):
    register_sum(_left, _right, result=_block_sum_kind, label="BlockDiagonal?")(_block_sum)
register_sum(Sparse, BlockDiagonal, result=lambda J, K: Kind(Sparse, detail=(J.batched or K.batched,)), label="Sparse")(sparse_forms_sum)  # fmt: skip


def _diagonal_sum_kind(D: Structure, J: Structure) -> Kind:
    blocks = _as_blocks(J)
    if blocks and blocks[1] == blocks[2]:
        return _kind(*blocks, D, J)
    return Kind(Sparse, detail=(D.batched or J.batched,)) if sparse_kind(J) else _generic(D, J)


def _plus_diagonal(J: Jacobian, d: Any, S: int, p: int) -> BlockDiagonal:
    """The blocks of ``J`` (block-diagonal, square blocks) plus ``diag(d)``, ``d`` ``(..., S p)``."""
    xp = namespace(*J._arrays(), d)
    own = _blocks_of(J)
    lead = np.broadcast_shapes(own.shape[:-2], d.shape[:-1] + (S,))
    blocks = xp.empty((*lead, p, p), dtype=xp.result_type(own, d))
    blocks[...] = own
    blocks.reshape(*lead, p * p)[..., :: p + 1] += d.reshape(*d.shape[:-1], S, p)
    return BlockDiagonal(blocks, J.batch)


@register_sum(Diagonal, BlockDiagonal, result=_diagonal_sum_kind, label="BlockDiagonal?")
@register_sum(Diagonal, Kronecker, result=_diagonal_sum_kind, label="BlockDiagonal?")
def _diagonal_plus_blocks(ops: Any, D: Diagonal, J: Jacobian) -> Jacobian:
    blocks = _as_blocks(J.structure())
    if blocks and blocks[1] == blocks[2]:
        return _plus_diagonal(J, D.d, blocks[0], blocks[1])
    if sparse_kind(J.structure()):
        return sparse_forms_sum(ops, D, J)
    return generic_sum(ops, D, J)


def _identity_sum_kind(J: Structure, I: Structure) -> Kind:
    blocks = _as_blocks(J)
    if blocks and blocks[1] == blocks[2]:
        return _kind(*blocks, J, I)
    return Kind(Sparse, detail=(J.batched or I.batched,)) if sparse_kind(J) else _generic(J, I)


@register_sum(BlockDiagonal, Identity, result=_identity_sum_kind, priority=1, label="BlockDiagonal?")
@register_sum(Kronecker, Identity, result=_identity_sum_kind, priority=1, label="BlockDiagonal?")
def _blocks_plus_identity(ops: Any, J: Jacobian, I: Identity) -> Jacobian:
    """``J + s I``: added to the diagonal of each square block; a numeric scale keeps shared
    blocks shared."""
    blocks = _as_blocks(J.structure())
    if blocks and blocks[1] == blocks[2]:
        xp = namespace(*J._arrays(), *I._arrays())
        dtype = J.dtype if I.is_weak else np.result_type(J.dtype, I.dtype)
        d = I.scale[:, None] if I.per_sample else xp.full(1, I.scale, dtype=dtype)
        return _plus_diagonal(J, xp.broadcast_to(d, (*d.shape[:-1], J.out_size)), *blocks[:2])
    if sparse_kind(J.structure()):
        return sparse_forms_sum(ops, J, I.astype(J.dtype) if I.is_weak else I)
    return generic_sum(ops, J, I)
