"""``bj.solve``: the batched linear systems ``J_b x_b = r_b``, solved through ``J``'s structure.

How each structure solves (one rule per type, registered below):

- ``Diagonal`` divides, ``Identity`` divides by its scale;
- ``Shared`` factors its one matrix once for the whole batch (one LU, every sample's right-hand
  sides as columns);
- ``Dense`` (also what ``Shared + Diagonal`` gives) runs a batched LU (``numpy.linalg.solve``
  on the stack; ``cupy.linalg.solve`` on the GPU);
- ``Sparse`` (and ``Gather``) factors each distinct sample with SciPy's sparse LU
  (``scipy.sparse.linalg.splu``; once when the values are shared) on the CPU; on the GPU, or
  without SciPy (with a warning), it solves the dense form by batched LU;
- ``BlockDiagonal`` solves block by block (a batched LU of the ``B S`` blocks);
- ``Kronecker`` solves with its factors: ``(L (x) R) vec(X) = vec(Y)`` is ``X = L^-1 Y R^-T``;
- any other type solves its dense form.

A singular sample is a ``numpy.linalg.LinAlgError`` (a ``ValueError``) naming the sample. On
the GPU, where CuPy returns non-finite values instead of raising, the result is checked
(which waits for the device once).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np

from batchjac.core.arrays import as_float_array, namespace
from batchjac.structured.algebra import result_dtype
from batchjac.structured.base import Jacobian
from batchjac.structured.blockdiag import BlockDiagonal
from batchjac.structured.dense import Dense
from batchjac.structured.diagonal import Diagonal
from batchjac.structured.identity import Identity
from batchjac.structured.kronecker import Kronecker, _shape
from batchjac.structured.shared import Shared
from batchjac.structured.sparse import Sparse, _splu, lu_factor_or_none


def solve(J: Jacobian, r: Any) -> Any:
    """Solve ``J_b x_b = r_b`` for every sample ``b``, using the structure of ``J``.

    ``J`` is a square ``bj.Jacobian`` ``(B, n, n)``; ``r`` is ``(B, n)`` (one right-hand side
    per sample) or ``(B, n, k)`` (``k`` of them). Returns ``x`` of ``r``'s shape, in NumPy's
    promotion of the dtypes of ``J`` and ``r``, on their device. The module docstring of
    :mod:`batchjac.structured.solve` says how each structure solves. A Newton step is
    ``x - bj.solve(J, f(x))``.

    >>> import numpy as np, batchjac as bj
    >>> J = bj.Diagonal(np.array([[2.0, 4.0]])) + bj.Shared(np.array([[0.0, 1.0], [1.0, 0.0]]), batch=1)
    >>> bj.solve(J, np.array([[3.0, 5.0]])).tolist()  # [[2, 1], [1, 4]] x = [3, 5]
    [[1.0, 1.0]]
    """
    if not isinstance(J, Jacobian):
        raise TypeError(
            f"solve: J must be a bj.Jacobian (wrap an array a (B, n, n) in bj.Dense(a)), got {type(J).__name__}"
        )
    J._require_square("solve")
    r = as_float_array(r, "r")
    B, n = J.batch, J.out_size
    if r.ndim not in (2, 3) or tuple(r.shape[:2]) != (B, n):
        raise ValueError(f"solve: r must have shape (B, n) = ({B}, {n}) or (B, n, k), got {tuple(r.shape)}")
    J._ops(r, names=("J",) * len(J._arrays()) + ("r",))
    dtype = result_dtype(J) or r.dtype
    dtype = np.result_type(dtype, r.dtype)
    R = (r if r.ndim == 3 else r[:, :, None]).astype(dtype, copy=False)
    if B == 0 or n == 0:
        x = namespace(R).zeros_like(R)
        return x if r.ndim == 3 else x[:, :, 0]
    x = _solve(J, R)
    if namespace(x) is not np:
        _check_finite(J, R, x)
    return x if r.ndim == 3 else x[:, :, 0]


def _singular(J: Jacobian, samples: Any) -> np.linalg.LinAlgError:
    samples = [int(b) for b in samples]
    which = f"sample {samples[0]}" + (f" (and {len(samples) - 1} more)" if len(samples) > 1 else "")
    return np.linalg.LinAlgError(
        f"solve: {which} of J is singular (its determinant is 0), so J x = r has no unique solution"
    )


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _check_finite(J: Jacobian, R: Any, x: Any) -> None:
    xp = namespace(x)
    finite_x = xp.all(xp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    finite_r = xp.all(xp.isfinite(R.reshape(R.shape[0], -1)), axis=1)
    bad = np.flatnonzero(_host(finite_r & ~finite_x))
    if bad.shape[0]:
        raise _singular(J, bad)


def _solve_stack(J: Jacobian, a: Any, R: Any) -> Any:
    """``a^-1 R`` for stacks that broadcast; a singular sample is named."""
    xp = namespace(a, R)
    try:
        return xp.linalg.solve(a, R)
    except np.linalg.LinAlgError:
        sign = xp.linalg.slogdet(a)[0]
        singular = _host(xp.any(sign.reshape(sign.shape[0], -1) == 0, axis=1))
        if singular.shape[0] == 1:  # one matrix (or one stack of blocks) serves every sample
            singular = np.broadcast_to(singular, (J.batch,))
        raise _singular(J, np.flatnonzero(singular)) from None


@functools.singledispatch
def _solve(J: Jacobian, R: Any) -> Any:
    return _solve_stack(J, J.to_dense().astype(R.dtype, copy=False), R)


@_solve.register
def _(J: Dense, R: Any) -> Any:
    return _solve_stack(J, J.a.astype(R.dtype, copy=False), R)


@_solve.register
def _(J: Diagonal, R: Any) -> Any:
    xp = namespace(J.d, R)
    singular = np.flatnonzero(_host(xp.any(J.d == 0, axis=1)))
    if singular.shape[0]:
        raise _singular(J, singular)
    return R / J.d[:, :, None]


@_solve.register
def _(J: Identity, R: Any) -> Any:
    if not J.per_sample:
        if J.scale == 0 and J.in_size and J.batch:
            raise _singular(J, range(J.batch))
        return R / J.scale
    return _solve.dispatch(Diagonal)(J, R)


def _shared_solve(J: Jacobian, A: Any, R: Any) -> Any:
    """``A^-1 R_b`` for one matrix ``A`` ``(n, n)`` and every sample: one LU for all columns."""
    B, n, k = R.shape
    columns = R.transpose(1, 0, 2).reshape(n, B * k)
    try:
        X = namespace(A, R).linalg.solve(A, columns)
    except np.linalg.LinAlgError:
        raise _singular(J, range(B)) from None  # the one matrix serves every sample
    return X.reshape(n, B, k).transpose(1, 0, 2)


@_solve.register
def _(J: Shared, R: Any) -> Any:
    return _shared_solve(J, J.A.astype(R.dtype, copy=False), R)


@_solve.register
def _(J: BlockDiagonal, R: Any) -> Any:
    B, n, k = R.shape
    S, p = J.count, J.block_rows
    blocks = J.blocks.astype(R.dtype, copy=False)
    if blocks.ndim == 3:
        blocks = blocks[None]
    X = _solve_stack(J, blocks, R.reshape(B, S, p, k))
    return X.reshape(B, n, k)


@_solve.register
def _(J: Kronecker, R: Any) -> Any:
    (pl, ql), (pr, qr) = _shape(J.left), _shape(J.right)
    B, n, k = R.shape
    if pl != ql or pr != qr:  # non-square factors: L (x) R is rank deficient
        raise _singular(J, range(B))
    Y = R.reshape(B, pl, pr * k)
    if not isinstance(J.left, int):
        Y = _factor_solve(J, J.left, Y)
    Y = Y.reshape(B, pl, pr, k).transpose(0, 2, 1, 3).reshape(B, pr, pl * k)
    if not isinstance(J.right, int):
        Y = _factor_solve(J, J.right, Y)
    return Y.reshape(B, pr, pl, k).transpose(0, 2, 1, 3).reshape(B, n, k)


def _factor_solve(J: Kronecker, F: Any, Y: Any) -> Any:
    F = F.astype(Y.dtype, copy=False)
    return _shared_solve(J, F, Y) if F.ndim == 2 else _solve_stack(J, F, Y)


@_solve.register
def _(J: Sparse, R: Any) -> Any:
    if namespace(J.values) is not np or _splu() is None:
        if namespace(J.values) is np:
            warnings.warn(
                "solve: SciPy is not installed, so a Sparse J is solved by a dense batched LU "
                "(pip install scipy for sparse LU)",
                RuntimeWarning,
                stacklevel=3,
            )
        return _solve_stack(J, J.to_dense().astype(R.dtype, copy=False), R)
    B, n, k = R.shape
    if J.values.ndim == 1:  # one factorisation serves every sample
        lu = lu_factor_or_none(J, J.values.astype(np.float64))
        if lu is None:
            raise _singular(J, range(B))
        columns = R.transpose(1, 0, 2).reshape(n, B * k).astype(np.float64)
        return lu.solve(columns).reshape(n, B, k).transpose(1, 0, 2).astype(R.dtype)
    x = np.empty_like(R)
    for b in range(B):
        lu = lu_factor_or_none(J, J.values[b].astype(np.float64))
        if lu is None:
            raise _singular(J, [b])
        x[b] = lu.solve(np.ascontiguousarray(R[b], dtype=np.float64)).reshape(n, k)
    return x
