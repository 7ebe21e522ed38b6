"""Products and sums of structured Jacobians, keeping structure wherever the result has it.

``J @ K`` (J is ``(B, m, k)``, K is ``(B, k, n)``) and ``J + K`` (both ``(B, m, n)``):

============  ============  ============  ==============  ==============
J @ K         K: Dense      K: Diagonal   K: Shared       K: Identity
============  ============  ============  ==============  ==============
Dense         Dense (bmm)   Dense (cols)  Dense (1 GEMM)  Dense (scale)
Diagonal      Dense (rows)  Diagonal      Dense (rows)    Diagonal
Shared        Dense (1 GEMM) Dense (cols) Shared          Shared [#]_
Identity      Dense (scale) Diagonal      Shared [#]_     Identity
============  ============  ============  ==============  ==============

============  ============  ============  ==============  ==============
J + K         K: Dense      K: Diagonal   K: Shared       K: Identity
============  ============  ============  ==============  ==============
Dense         Dense         Dense (diag)  Dense           Dense (diag)
Diagonal      Dense (diag)  Diagonal      Dense (diag)    Diagonal
Shared        Dense         Dense (diag)  Shared          Shared [#]_
Identity      Dense (diag)  Diagonal      Shared [#]_     Identity
============  ============  ============  ==============  ==============

.. [#] ``Dense`` when the identity's scale is per sample (a ``(B,)`` array).

A :class:`~batchjac.structured.types.Gather` (rows that pick inputs) keeps its structure where it can:
``Gather @ Gather`` is a ``Gather`` (indices composed), ``Gather @ Dense`` / ``@ Shared`` gather
rows; ``Dense @ Gather`` / ``Shared @ Gather`` scatter columns when the gather is injective and
use its matrix otherwise; with a ``Diagonal`` on either side the result is ``Dense`` (one entry
per row). In a sum a ``Gather`` becomes its ``Shared`` matrix.

"rows"/"cols": a row or column scaling by the diagonal, never a dense product; "1 GEMM":
one flattened matrix product for the whole batch; "diag": the diagonal added to a copy;
"scale": a multiplication by the identity's scale (nothing at all when it is 1).
"""

from __future__ import annotations

import numpy as np

from batchjac.core.arrays import namespace
from batchjac.structured.types import Dense, Diagonal, Gather, Identity, Jacobian, Shared


def _check_batches(what, J, K):
    if J.batch != K.batch:
        raise ValueError(
            f"{what}: the left operand has batch {J.batch} but the right operand has batch {K.batch}"
        )


def _backend(J, K):
    return J._ops(
        *K._arrays(),
        names=("the left operand",) * len(J._arrays()) + ("the right operand",) * len(K._arrays()),
    )


def _is_unit(I: Identity) -> bool:
    return not I.per_sample and I.scale == 1.0 and I.is_weak


def _times_identity(X: Jacobian, I: Identity) -> Jacobian:
    if isinstance(X, Identity):
        if _is_unit(I) or _is_unit(X):
            return X if _is_unit(I) else I  # a unit identity factor costs nothing
        return Identity(
            X.in_size, X.batch, X.scale * I.scale, dtype=_identity_dtype(X, I), device=_identity_device(X, I)
        )
    if I.per_sample:
        return X._scaled(None, I.scale)
    if I.scale == 1.0:
        return X  # an identity factor costs nothing
    return X._scaled(I.scale, None)


def _identity_device(X: Identity, I: Identity):
    return X.device if X.per_sample else I.device


_PRODUCTS = {
    (Dense, Dense): lambda ops, J, K: Dense(ops.batched_matmul(J.a, K.a)),
    (Dense, Diagonal): lambda ops, J, K: Dense(ops.scale_cols(J.a, K.d)),
    (Dense, Shared): lambda ops, J, K: Dense(ops.matmul_shared(J.a, K.A)),
    (Diagonal, Dense): lambda ops, J, K: Dense(ops.scale_rows(J.d, K.a)),
    (Diagonal, Diagonal): lambda ops, J, K: Diagonal(J.d * K.d),
    (Diagonal, Shared): lambda ops, J, K: Dense(ops.scale_rows(J.d, K.A)),
    (Shared, Dense): lambda ops, J, K: Dense(ops.shared_matmul(J.A, K.a)),
    (Shared, Diagonal): lambda ops, J, K: Dense(ops.scale_cols(J.A, K.d)),
    (Shared, Shared): lambda ops, J, K: Shared(J.A @ K.A, J.batch),
}


def _scaled_copy(a, scale):
    return a if scale == 1.0 else a * scale


def _scatter_columns(J, G: Gather):
    """``J @ G`` for an injective gather: the columns of ``J`` land on ``G.index``."""
    matrix = J.a if isinstance(J, Dense) else J.A
    xp = J._xp()
    out = xp.zeros((*matrix.shape[:-1], G.in_size), dtype=np.result_type(matrix.dtype, G.dtype))
    out[..., G.index] = _scaled_copy(matrix, G.scale)
    return Dense(out) if isinstance(J, Dense) else Shared(out, J.batch)


def _one_entry_per_row(d, G: Gather, rows_of_G: bool):
    """``D @ G`` or ``G @ D`` with ``D = diag(d)``: ``(B, m, n)`` with one entry per row."""
    xp = namespace(d, G.index)
    out = xp.zeros((G.batch, G.out_size, G.in_size), dtype=np.result_type(d.dtype, G.dtype))
    picked = d[:, G.index] if rows_of_G else d
    out[:, xp.arange(G.out_size), G.index] = _scaled_copy(picked, G.scale)
    return Dense(out)


_GATHER_PRODUCTS = {
    (Gather, Dense): lambda ops, J, K: Dense(_scaled_copy(K.a[:, J.index, :], J.scale)),
    (Gather, Shared): lambda ops, J, K: Shared(_scaled_copy(K.A[J.index], J.scale), J.batch),
    (Gather, Diagonal): lambda ops, J, K: _one_entry_per_row(K.d, J, rows_of_G=True),
    (Diagonal, Gather): lambda ops, J, K: _one_entry_per_row(J.d, K, rows_of_G=False),
    (Gather, Gather): lambda ops, J, K: Gather(
        K.index[J.index], K.in_size, J.batch, J.scale * K.scale,
        injective=J.injective and K.injective, dtype=np.result_type(J.dtype, K.dtype),
    ),
    (Dense, Gather): lambda ops, J, K: (
        _scatter_columns(J, K) if K.injective else Dense(ops.matmul_shared(J.a, K.matrix()))
    ),
    (Shared, Gather): lambda ops, J, K: (
        _scatter_columns(J, K) if K.injective else Shared(J.A @ K.matrix(), J.batch)
    ),
}  # fmt: skip
_PRODUCTS.update(_GATHER_PRODUCTS)


def matmul(J: Jacobian, K: Jacobian) -> Jacobian:
    """``J @ K`` per sample, with the structure of the table in this module's docstring.

    >>> import numpy as np, batchjac as bj
    >>> D = bj.Diagonal(np.array([[2.0, 3.0]]))
    >>> W = bj.Shared(np.array([[1.0, 1.0], [0.0, 1.0]]), batch=1)
    >>> (D @ W).to_dense().tolist()
    [[[2.0, 2.0], [0.0, 3.0]]]
    """
    _check_batches("matmul", J, K)
    if J.in_size != K.out_size:
        raise ValueError(
            f"matmul: the left operand {J.shape} has input size {J.in_size} but the right "
            f"operand {K.shape} has output size {K.out_size}"
        )
    if isinstance(K, Identity):
        _backend(J, K)  # device check only
        return _times_identity(J, K)
    if isinstance(J, Identity):
        _backend(J, K)
        return _times_identity(K, J)
    return _PRODUCTS[type(J), type(K)](_backend(J, K), J, K)


def _sum_identity(ops, X: Jacobian, I: Identity) -> Jacobian:
    if isinstance(X, Identity):
        return Identity(
            X.in_size, X.batch, X.scale + I.scale, dtype=_identity_dtype(X, I), device=_identity_device(X, I)
        )
    if isinstance(X, Diagonal):
        return Diagonal(X.d + I.scale_column())
    if isinstance(X, Shared) and not I.per_sample:
        xp = X._xp()
        return Shared(X.A + I.scale * xp.eye(X.in_size, dtype=X.dtype), X.batch)
    matrix = X.a if isinstance(X, Dense) else X.A
    return Dense(ops.add_diagonal(matrix, I.scale_vector(X._xp(), X.dtype)))


def _identity_dtype(X: Identity, I: Identity):
    if X.is_weak and I.is_weak:
        return None
    return np.result_type(*(J.dtype for J in (X, I) if not J.is_weak))


_SUMS = {
    (Dense, Dense): lambda ops, J, K: Dense(J.a + K.a),
    (Dense, Diagonal): lambda ops, J, K: Dense(ops.add_diagonal(J.a, K.d)),
    (Dense, Shared): lambda ops, J, K: Dense(J.a + K.A),
    (Diagonal, Diagonal): lambda ops, J, K: Diagonal(J.d + K.d),
    (Diagonal, Shared): lambda ops, J, K: Dense(ops.add_diagonal(K.A, J.d)),
    (Shared, Shared): lambda ops, J, K: Shared(J.A + K.A, J.batch),
}


def add(J: Jacobian, K: Jacobian) -> Jacobian:
    """``J + K`` per sample, with the structure of the table in this module's docstring.

    >>> import numpy as np, batchjac as bj
    >>> (bj.Identity(2, batch=1) + bj.Diagonal(np.array([[1.0, 2.0]]))).diagonal().tolist()
    [[2.0, 3.0]]
    """
    _check_batches("add", J, K)
    if (J.out_size, J.in_size) != (K.out_size, K.in_size):
        raise ValueError(f"add: the operands' shapes differ: left {J.shape}, right {K.shape}")
    J, K = (Shared(X.matrix(), X.batch) if isinstance(X, Gather) else X for X in (J, K))
    ops = _backend(J, K)
    if isinstance(K, Identity):
        return _sum_identity(ops, J, K)
    if isinstance(J, Identity):
        return _sum_identity(ops, K, J)
    if (type(J), type(K)) in _SUMS:
        return _SUMS[type(J), type(K)](ops, J, K)
    return _SUMS[type(K), type(J)](ops, K, J)  # sums commute
