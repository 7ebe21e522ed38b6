"""Products and linear algebra per sample: ``matmul``, ``einsum``, ``softmax`` and
``log_softmax``, ``det``, ``slogdet``'s parts, ``inv``, ``solve``, ``cholesky``.

Local Jacobians, with ``Y = A B`` per sample (row-major flattening; math.md): ``dY/dA =
I_p ⊗ B^T`` and ``dY/dB = A ⊗ I_r``, as ``Kronecker`` factors (``Shared`` for a constant
factor and one position, as in ``x @ W.T``). ``inv``: ``dY = -Y dX Y`` gives ``-(Y ⊗ Y^T)``.
``solve``: ``dx/db = A^-1`` and ``dx/dA = -(A^-1 ⊗ x^T)``. ``det``: the cofactor matrix,
computed from an SVD so that it is right for singular matrices too (``adj(X)`` exists for
every X). Stacks of matrices give block-diagonal Jacobians.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from batchjac.exact import lax
from batchjac.exact.ir import Atom, Var
from batchjac.exact.primitives import jacobians
from batchjac.exact.primitives.base import (
    JacobianContext,
    Primitive,
    lift,
    result_dtype,
    size_of,
    unlift,
)
from batchjac.exact.tracer import bind
from batchjac.structured.types import Dense, Jacobian, Shared


@functools.lru_cache(maxsize=1024)
@functools.lru_cache(maxsize=4096)  # called per equation per call: shapes repeat
def _matrix_shapes(
    sa: tuple[int, ...], sb: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Per-sample shapes of ``a @ b`` with 1-D operands promoted: (sa2, sb2, out, squeeze)."""
    if not sa or not sb:
        raise ValueError("matmul: operands must have at least one axis per sample (use * for scalars)")
    sa2 = (1, *sa) if len(sa) == 1 else tuple(sa)
    sb2 = (*sb, 1) if len(sb) == 1 else tuple(sb)
    if sa2[-1] != sb2[-2]:
        raise ValueError(
            f"matmul: per-sample shapes {tuple(sa)} and {tuple(sb)} do not match (q = {sa2[-1]} vs {sb2[-2]})"
        )
    stack = tuple(np.broadcast_shapes(sa2[:-2], sb2[:-2]))
    out = (*stack, sa2[-2], sb2[-1])
    squeeze = tuple(ax for ax, promoted in ((-2, len(sa) == 1), (-1, len(sb) == 1)) if promoted)
    final = tuple(d for k, d in enumerate(out) if (k - len(out)) not in squeeze)
    return sa2, sb2, out, final


def _outer(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` for ``a (..., m, 1)`` and ``b (..., 1, n)``: the outer products, by the CPU
    kernel for a stack of samples on NumPy, else by broadcasting."""
    if xp is np and a.ndim == b.ndim == 3 and a.shape[0] == b.shape[0]:
        from batchjac.backends.cpu_kernels import batched_outer

        return batched_outer(a[:, :, 0], b[:, 0, :])
    return a * b


class MatMul(Primitive):
    """NumPy's ``matmul`` per sample (1-D operands promoted, stacks broadcast)."""

    name = "matmul"

    def abstract(self, inputs: Sequence[Atom], **params: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        a, b = inputs
        return _matrix_shapes(a.shape, b.shape)[3], result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], **params: Any) -> Any:
        (a, b), (ba, bb) = values, batched
        sa = a.shape[1:] if ba else a.shape
        sb = b.shape[1:] if bb else b.shape
        sa2, sb2, out, final = _matrix_shapes(sa, sb)
        a2 = a.reshape(((a.shape[0],) if ba else ()) + sa2)
        b2 = b.reshape(((b.shape[0],) if bb else ()) + sb2)
        if not bb and len(sb2) == 2:
            # a stack times one matrix: ONE (N, q) @ (q, r) product, not a loop of small ones
            y = (a2.reshape(-1, sa2[-1]) @ b2).reshape(*a2.shape[:-1], sb2[-1])
            if ba and y.shape[1:] != out:
                y = xp.broadcast_to(y, (y.shape[0], *out))
        else:
            rank = len(out)
            la, lb = lift(xp, a2, ba, rank), lift(xp, b2, bb, rank)
            # an outer product (contraction of length 1, as in a per-sample weight gradient
            # g x^T) is a broadcast multiply: the same products, without a GEMM per sample
            if len(sa2) >= 2 and sa2[-1] == 1 and len(sb2) >= 2:
                y = _outer(xp, la, lb)
            else:
                y = xp.matmul(la, lb)
            y = unlift(y, ba or bb)
        lead = (y.shape[0],) if (ba or bb) else ()
        return y.reshape(lead + final)

    def value_step(self, inputs: Sequence[Atom], out: Var, xp: Any, **params: Any) -> Any:
        if _is_layer(inputs):  # what impl gives a layer: one (B, q) @ (q, r) product
            return _layer_value
        return super().value_step(inputs, out, xp, **params)

    def jacobian_step(
        self, inputs: Sequence[Atom], out: Var, wanted: tuple[int, ...], xp: Any, ops: Any, **params: Any
    ) -> Any:
        if _is_layer(inputs) and wanted == (0,):  # what the general rules give a layer (Shared W^T)
            dtype = out.dtype

            def layer(values: Sequence[Any], batch: int, operands: Any) -> tuple[Any, dict[int, Jacobian]]:
                a, b = values
                return a @ b, {0: Shared.trusted(b.T.astype(dtype, copy=False), batch)}

            return layer
        return super().jacobian_step(inputs, out, wanted, xp, ops, **params)

    def jacobian(self, ctx: JacobianContext, i: int, **params: Any) -> Jacobian:
        xp, batch, dtype = ctx.xp, ctx.batch, ctx.dtype
        sa, sb = ctx.inputs[0].shape, ctx.inputs[1].shape
        sa2, sb2, out, _ = _matrix_shapes(sa, sb)
        if len(out) == 2 and len(sa2) == 2 and len(sb2) == 2:
            a2 = _as_matrix(ctx, 0, sa2)
            b2 = _as_matrix(ctx, 1, sb2)
            if i == 0:  # dY/dA = I_p ⊗ B^T
                return jacobians.kronecker(sa2[0], b2.swapaxes(-1, -2), batch, dtype, xp)
            return jacobians.kronecker(a2, sb2[1], batch, dtype, xp)  # dY/dB = A ⊗ I_r
        return _dense_by_basis(
            ctx, i, lambda operands: self.impl(xp, operands, _flags(ctx, operands, i), **params)
        )

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, **params: Any) -> Any:
        a, b = inputs
        sa, sb = lax.shape(a), lax.shape(b)
        sa2, sb2, out_shape, _ = _matrix_shapes(sa, sb)
        g = lax.reshape(cotangent, out_shape)
        a2, b2 = lax.reshape(a, sa2), lax.reshape(b, sb2)
        if i == 0:
            grad = lax.matmul(g, lax.swap_last(b2))
            return lax.reshape(lax.unbroadcast(grad, sa2), sa)
        grad = lax.matmul(lax.swap_last(a2), g)
        return lax.reshape(lax.unbroadcast(grad, sb2), sb)


def _is_layer(inputs: Sequence[Atom]) -> bool:
    """``a @ b`` with ``a`` a vector per sample and ``b`` a matrix shared by the batch (a
    layer ``x @ W.T``): on arrays, ``(B, q) @ (q, r)``."""
    a, b = inputs
    return (
        isinstance(a, Var)
        and a.batched
        and len(a.shape) == 1
        and isinstance(b, Var)
        and not b.batched
        and len(b.shape) == 2
    )


def _layer_value(values: Sequence[Any]) -> Any:
    a, b = values
    return a @ b


def _as_matrix(ctx: JacobianContext, i: int, shape2: tuple[int, ...]) -> Any:
    """Operand ``i`` as a per-sample matrix of ``shape2``: ``(B, p, q)`` or shared ``(p, q)``."""
    v = ctx.values[i]
    if ctx.batched[i]:
        return v.reshape(v.shape[0], *shape2)
    return v.reshape(shape2)


def _flags(ctx: JacobianContext, operands: Any, i: int) -> tuple[bool, ...]:
    return tuple(True if k == i else b for k, b in enumerate(ctx.batched))


def _dense_by_basis(ctx: JacobianContext, i: int, apply: Callable[[list[Any]], Any]) -> Dense:
    """The Jacobian w.r.t. a linear operand ``i`` as ``Dense``: ``apply`` on the basis of
    that operand (all its columns at once, as a batch of ``B * n`` samples)."""
    xp, batch = ctx.xp, ctx.batch
    n = ctx.inputs[i].size
    shape = ctx.inputs[i].shape
    basis = xp.eye(n, dtype=ctx.dtype).reshape(n, *shape)
    operands = []
    for k, (v, b) in enumerate(zip(ctx.values, ctx.batched)):
        if k == i:
            operands.append(xp.broadcast_to(basis, (batch, n, *shape)).reshape(batch * n, *shape))
        elif b:
            operands.append(xp.repeat(v, n, axis=0))
        else:
            operands.append(v)
    columns = apply(operands)  # (B*n, *out)
    columns = columns.reshape(batch, n, ctx.out.size)
    return Dense(xp.ascontiguousarray(xp.swapaxes(columns, 1, 2)).astype(ctx.dtype, copy=False))


MATMUL = MatMul()


class Einsum(Primitive):
    """``einsum`` per sample with an explicit output (``"ij,jk->ik"``); multilinear, so the
    Jacobian w.r.t. each operand is ``einsum`` of the others with that operand's basis."""

    name = "einsum"

    def abstract(self, inputs: Sequence[Atom], spec: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        ins, out = _parse(spec)
        if len(ins) != len(inputs):
            raise ValueError(f"einsum: {spec!r} names {len(ins)} operands, got {len(inputs)}")
        sizes: dict[str, int] = {}
        for letters, o in zip(ins, inputs):
            if len(letters) != len(o.shape):
                raise ValueError(f"einsum: operand {letters!r} of {spec!r} has per-sample shape {o.shape}")
            for c, d in zip(letters, o.shape):
                known = sizes.setdefault(c, d)
                if known != d and 1 not in (known, d):
                    raise ValueError(f"einsum: index {c!r} of {spec!r} has sizes {known} and {d}")
                sizes[c] = d if known == 1 else known  # a length-1 axis broadcasts
        return tuple(sizes[c] for c in out), result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], spec: str) -> Any:
        ins, out = _parse(spec)
        z = _free_letter(spec)
        full = ",".join(z + s if b else s for s, b in zip(ins, batched))
        return xp.einsum(f"{full}->{z + out if any(batched) else out}", *values)

    def jacobian(self, ctx: JacobianContext, i: int, spec: str) -> Jacobian:
        return _dense_by_basis(
            ctx, i, lambda operands: self.impl(ctx.xp, operands, _flags(ctx, operands, i), spec)
        )

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, spec: str) -> Any:
        """``einsum`` of the cotangent with the other operands onto operand ``i``'s distinct
        letters; letters no other term has are broadcast (their sum's derivative is 1), axes
        of length 1 that NumPy broadcast are summed, and a repeated letter (``"ii"``: a
        diagonal) scatters the result onto the diagonal it reads."""
        ins, out_letters = _parse(spec)
        target = ins[i]
        target_shape = lax.shape(inputs[i])
        sizes = dict(zip(target, target_shape))
        unique = "".join(dict.fromkeys(target))
        others = [(s, v) for k, (s, v) in enumerate(zip(ins, inputs)) if k != i]
        present = set(out_letters).union(*(set(s) for s, _ in others))
        kept = "".join(c for c in unique if c in present)
        terms = ",".join([out_letters, *(s for s, _ in others)])
        grad = bind(self, (cotangent, *(v for _, v in others)), {"spec": f"{terms}->{kept}"})
        grad = lax.unbroadcast(grad, tuple(sizes[c] for c in kept))
        unique_shape = tuple(sizes[c] for c in unique)
        if kept != unique:
            partial_shape = tuple(sizes[c] if c in present else 1 for c in unique)
            grad = lax.broadcast_to(lax.reshape(grad, partial_shape), unique_shape)
        if unique != target:
            grids = np.indices(unique_shape, dtype=np.int64)
            position = np.ravel_multi_index(tuple(grids[unique.index(c)] for c in target), target_shape)
            grad = lax.scatter_add(grad, position, target_shape)
        return grad


def _parse(spec: str) -> tuple[list[str], str]:
    ins, out = spec.split("->")
    return ins.split(","), out


def _free_letter(spec: str) -> str:
    for c in "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA":
        if c not in spec:
            return c
    raise ValueError(f"einsum: {spec!r} uses every letter; none is left for the batch axis")


EINSUM = Einsum()


class SoftmaxFamily(Primitive):
    """``softmax`` / ``log_softmax`` along one per-sample axis."""

    def __init__(self, name: str, log: bool) -> None:
        super().__init__(name)
        self.log = log

    def abstract(self, inputs: Sequence[Atom], axis: int) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return inputs[0].shape, result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axis: int) -> Any:
        x, b = values[0], batched[0]
        x = lift(xp, x, b, np.ndim(x) - b)
        if x.shape[axis + 1] == 0:
            return unlift(x.copy(), b)
        shifted = x - xp.max(x, axis=axis + 1, keepdims=True)
        if self.log:
            with np.errstate(divide="ignore"):
                out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis + 1, keepdims=True))
        else:
            e = xp.exp(shifted)
            out = e / xp.sum(e, axis=axis + 1, keepdims=True)
        return unlift(out, b)

    def jacobian(self, ctx: JacobianContext, i: int, axis: int) -> Jacobian:
        xp = ctx.xp
        shape = ctx.inputs[0].shape
        y = lift(xp, ctx.value, ctx.out.batched, len(shape))
        y = xp.broadcast_to(y, (ctx.batch, *shape))
        s = xp.exp(y) if self.log else y
        moved = xp.moveaxis(s, axis + 1, -1)
        n = shape[axis]
        rows = moved.reshape(ctx.batch, size_of(shape) // max(n, 1), n)
        eye = xp.eye(n, dtype=ctx.dtype)
        block = (
            (eye - rows[:, :, None, :])
            if self.log
            else (rows[..., :, None] * eye - rows[:, :, :, None] * rows[:, :, None, :])
        )
        if axis == len(shape) - 1:
            return jacobians.blocks(block, ctx.batch, ctx.dtype, xp)
        # blocks along a middle axis: permute the rows and columns of the block-diagonal
        dense = jacobians.blocks(block, ctx.batch, ctx.dtype, xp).to_dense()
        order = np.moveaxis(np.arange(size_of(shape)).reshape(shape), axis, -1).ravel()
        inverse = np.argsort(order)
        return Dense(dense[:, inverse][:, :, inverse])

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axis: int) -> Any:
        shape = lax.shape(inputs[0])
        if self.log:
            total = lax.broadcast_to(lax.sum_keepdims(cotangent, (axis,)), shape)
            return lax.sub(cotangent, lax.mul(lax.apply("exp", out), total))
        weighted = lax.broadcast_to(lax.sum_keepdims(lax.mul(cotangent, out), (axis,)), shape)
        return lax.mul(out, lax.sub(cotangent, weighted))


SOFTMAX = SoftmaxFamily("softmax", log=False)
LOG_SOFTMAX = SoftmaxFamily("log_softmax", log=True)


# --------------------------------------------------------------------------------------
# Square matrices (stacks allowed: the last two per-sample axes)
# --------------------------------------------------------------------------------------


def _square(shape: tuple[int, ...], what: str) -> int:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(
            f"{what}: expected square matrices (..., n, n) per sample, got per-sample shape {shape}"
        )
    return shape[-1]


class SquareMatrixFunction(Primitive):
    def _lifted(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> tuple[Any, bool]:
        x, b = values[0], batched[0]
        return lift(xp, x, b, np.ndim(x) - b), b

    def _stack_blocks(self, ctx: JacobianContext, per_matrix: Any) -> Jacobian:
        """``per_matrix`` ``(B, *stack, m, k)`` blocks as a (block-diagonal) Jacobian."""
        xp = ctx.xp
        stack = ctx.inputs[0].shape[:-2]
        m, k = per_matrix.shape[-2:]
        return jacobians.blocks(per_matrix.reshape(ctx.batch, size_of(stack), m, k), ctx.batch, ctx.dtype, xp)


class Det(SquareMatrixFunction):
    name = "det"

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        _square(inputs[0].shape, "det")
        return inputs[0].shape[:-2], result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.linalg.det(x), b)

    def jacobian(self, ctx: JacobianContext, i: int) -> Jacobian:
        X = ctx.per_sample(0)
        n = X.shape[-1]
        cof = cofactor(ctx.xp, X)
        return self._stack_blocks(ctx, cof.reshape(*cof.shape[:-2], 1, n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any) -> Any:
        X = inputs[0]
        shape = lax.shape(X)
        scale = lax.reshape(cotangent, (*shape[:-2], 1, 1))
        return lax.mul(lax.broadcast_to(scale, shape), bind(COFACTOR, (X,)))


class Cofactor(SquareMatrixFunction):
    """The cofactor matrix ``C = det(X) X^-T`` of each square matrix (the gradient of
    ``det``), from the SVD: defined and exact for singular ``X`` too.

    Derivative, with ``Y = X^-1`` (``n >= 3``; needs an invertible ``X``):
    ``dC_ij/dX_pq = det(X) (Y_qp Y_ji - Y_jp Y_qi)``, so the VJP of a cotangent ``G`` is
    ``det(X) (tr(G Y) Y^T - (Y G Y)^T)``. For ``n <= 2`` the cofactor is linear in ``X``
    (``[[d, -c], [-b, a]]`` for ``n = 2``, the constant 1 for ``n = 1``): its derivative is
    exact for every ``X``, singular included.
    """

    name = "cofactor"

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        _square(inputs[0].shape, "cofactor")
        return inputs[0].shape, result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(cofactor(xp, x), b)

    def jacobian(self, ctx: JacobianContext, i: int) -> Jacobian:
        xp = ctx.xp
        n = ctx.inputs[0].shape[-1]
        if n == 1:  # the constant 1
            return self._stack_blocks(ctx, xp.zeros((ctx.batch, *ctx.inputs[0].shape), dtype=ctx.dtype))
        if n == 2:  # linear in X: the map applied to the basis
            return _dense_by_basis(ctx, 0, lambda operands: self.impl(xp, operands, (True,)))
        X = ctx.per_sample(0)
        Y = xp.linalg.inv(X)
        det = xp.linalg.det(X)[..., None, None, None, None]
        J = det * (xp.einsum("...qp,...ji->...ijpq", Y, Y) - xp.einsum("...jp,...qi->...ijpq", Y, Y))
        return self._stack_blocks(ctx, J.reshape(*X.shape[:-2], n * n, n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any) -> Any:
        X = inputs[0]
        shape = lax.shape(X)
        n = shape[-1]
        if n == 1:
            return None
        if n == 2:
            return bind(self, (cotangent,))  # the linear map is its own transpose here
        Y = bind(INV, (X,))
        det = lax.reshape(bind(DET, (X,)), (*shape[:-2], 1, 1))
        trace = lax.reshape(
            lax.reduce_sum(lax.mul(cotangent, lax.swap_last(Y)), (len(shape) - 2, len(shape) - 1)),
            (*shape[:-2], 1, 1),
        )
        inner = lax.sub(
            lax.mul(lax.broadcast_to(trace, shape), lax.swap_last(Y)),
            lax.swap_last(lax.matmul(lax.matmul(Y, cotangent), Y)),
        )
        return lax.mul(lax.broadcast_to(det, shape), inner)


def cofactor(xp: Any, X: Any) -> Any:
    """The cofactor matrix ``det(X) X^-T`` of every matrix of ``X`` ``(..., n, n)``, from
    the SVD: exact for singular matrices too."""
    U, s, Vt = xp.linalg.svd(X)
    n = s.shape[-1]
    ones = xp.ones(s.shape[:-1] + (1,), dtype=s.dtype)
    prefix = xp.cumprod(xp.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    suffix = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(s, -1)[..., :-1]], axis=-1), axis=-1), -1)
    others = prefix * suffix  # products of the other singular values
    sign = xp.linalg.det(U) * xp.linalg.det(Vt)
    return (sign[..., None, None] * U * others[..., None, :]) @ Vt if n else X


class LogAbsDet(SquareMatrixFunction):
    name = "logabsdet"

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        _square(inputs[0].shape, "slogdet")
        return inputs[0].shape[:-2], result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.linalg.slogdet(x)[1], b)

    def jacobian(self, ctx: JacobianContext, i: int) -> Jacobian:
        X = ctx.per_sample(0)
        n = X.shape[-1]
        inverse_t = ctx.xp.swapaxes(ctx.xp.linalg.inv(X), -1, -2)
        return self._stack_blocks(ctx, inverse_t.reshape(*X.shape[:-2], 1, n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any) -> Any:
        X = inputs[0]
        shape = lax.shape(X)
        scale = lax.reshape(cotangent, (*shape[:-2], 1, 1))
        return lax.mul(lax.broadcast_to(scale, shape), lax.swap_last(bind(INV, (X,))))


class SignDet(SquareMatrixFunction):
    name = "sign_det"
    differentiable = False

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return inputs[0].shape[:-2], result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.linalg.slogdet(x)[0], b)


class Inv(SquareMatrixFunction):
    name = "inv"

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        _square(inputs[0].shape, "inv")
        return inputs[0].shape, result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.linalg.inv(x), b)

    def jacobian(self, ctx: JacobianContext, i: int) -> Jacobian:
        xp = ctx.xp
        Y = xp.broadcast_to(
            lift(xp, ctx.value, ctx.out.batched, len(ctx.out.shape)), (ctx.batch, *ctx.out.shape)
        )
        if Y.ndim == 3:
            return jacobians.kronecker(-Y, xp.swapaxes(Y, -1, -2), ctx.batch, ctx.dtype, xp)
        n = Y.shape[-1]
        K = -Y[..., :, None, :, None] * xp.swapaxes(Y, -1, -2)[..., None, :, None, :]
        return self._stack_blocks(ctx, K.reshape(*Y.shape[:-2], n * n, n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any) -> Any:
        Yt = lax.swap_last(out)
        return lax.neg(lax.matmul(lax.matmul(Yt, cotangent), Yt))


def _solve_shapes(
    sa: tuple[int, ...], sb: tuple[int, ...], vector: bool
) -> tuple[tuple[int, ...], int, int, tuple[int, ...]]:
    """Per-sample shapes of ``solve(A, b)``: ``A`` ``(*stack_a, n, n)``, ``b`` ``(*stack_b, n)``
    (``vector``) or ``(*stack_b, n, k)``; stacks broadcast. Returns ``(stack, n, k, out)``."""
    n = _square(sa, "solve")
    core = 1 if vector else 2
    if len(sb) < core or sb[len(sb) - core] != n:
        expected = "(..., n)" if vector else "(..., n, k)"
        raise ValueError(
            f"solve: expected b {expected} with n = {n} for A of per-sample shape {tuple(sa)}, got {tuple(sb)}"
        )
    try:
        stack = tuple(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[: len(sb) - core])))
    except ValueError as err:
        raise ValueError(f"solve: the stacks of A {tuple(sa)} and b {tuple(sb)} do not broadcast") from err
    k = 1 if vector else sb[-1]
    return stack, n, k, (*stack, n) if vector else (*stack, n, k)


class Solve(Primitive):
    """``x = A^-1 b`` per sample: ``A`` ``(*stack, n, n)``, ``b`` ``(*stack, n)`` (``vector``) or
    ``(*stack, n, k)``, stacks broadcast as in NumPy.

    Jacobians (per stack entry, row-major): ``dx/db = A^-1 ⊗ I_k``; ``dx/dA = -(A^-1 ⊗ x^T)``
    (from ``dx = -A^-1 dA x``). A stack gives a block-diagonal Jacobian, or a scatter of the
    blocks onto the entries of an operand broadcast over the stack.
    """

    name = "solve"

    def abstract(self, inputs: Sequence[Atom], vector: bool = True) -> tuple[tuple[int, ...], np.dtype[Any]]:
        A, b = inputs
        return _solve_shapes(A.shape, b.shape, vector)[3], result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], vector: bool = True) -> Any:
        (A, b), (bA, bb) = values, batched
        sa = A.shape[1:] if bA else A.shape
        sb = b.shape[1:] if bb else b.shape
        stack, n, k, out = _solve_shapes(sa, sb, vector)
        lead = max((v.shape[0] for v, f in zip(values, batched) if f), default=1)
        A_full = xp.broadcast_to(lift(xp, A, bA, len(stack) + 2), (lead, *stack, n, n))
        b_lifted = lift(xp, b, bb, len(sb))  # (lead or 1, *sb)
        b_matrix = b_lifted.reshape(b_lifted.shape[0], *sb[: len(sb) - (1 if vector else 2)], n, k)
        b_full = xp.broadcast_to(lift(xp, b_matrix, True, len(stack) + 2), (lead, *stack, n, k))
        x = xp.linalg.solve(A_full, b_full)
        return unlift(x.reshape(lead, *out), bA or bb)

    def jacobian(self, ctx: JacobianContext, i: int, vector: bool = True) -> Jacobian:
        xp = ctx.xp
        sa, sb = ctx.inputs[0].shape, ctx.inputs[1].shape
        stack, n, k, out = _solve_shapes(sa, sb, vector)
        if i == 1:
            if not stack:
                Ainv = xp.linalg.inv(ctx.per_sample(0))
                return (
                    Dense(Ainv.astype(ctx.dtype, copy=False))
                    if vector
                    else jacobians.kronecker(Ainv, k, ctx.batch, ctx.dtype, xp)
                )
            return _dense_by_basis(
                ctx, 1, lambda operands: self.impl(xp, operands, _flags(ctx, operands, 1), vector=vector)
            )
        A = xp.broadcast_to(lift(xp, ctx.per_sample(0), True, len(stack) + 2), (ctx.batch, *stack, n, n))
        Ainv = xp.linalg.inv(A)
        x = xp.broadcast_to(lift(xp, ctx.value, ctx.out.batched, len(out)), (ctx.batch, *out)).reshape(
            ctx.batch, *stack, n, k
        )
        if not stack:
            return jacobians.kronecker(-Ainv, xp.swapaxes(x, -1, -2), ctx.batch, ctx.dtype, xp)
        # block[s][(i, j), (p, q)] = -Ainv_s[i, p] x_s[q, j]
        block = -(Ainv[..., :, None, :, None] * xp.swapaxes(x, -1, -2)[..., None, :, None, :])
        S = size_of(stack)
        block = block.reshape(ctx.batch, S, n * k, n * n).astype(ctx.dtype, copy=False)
        if tuple(sa[:-2]) == stack:
            return jacobians.blocks(block, ctx.batch, ctx.dtype, xp)
        # A is broadcast over the stack: output block s reads A's stack entry source[s]
        source = jacobians.broadcast_index(tuple(sa[:-2]), stack)
        S_a = size_of(sa[:-2])
        dense = xp.zeros((ctx.batch, S, n * k, S_a, n * n), dtype=ctx.dtype)
        dense[:, xp.asarray(np.arange(S)), :, xp.asarray(source), :] = xp.moveaxis(block, 1, 0)
        return Dense(dense.reshape(ctx.batch, S * n * k, S_a * n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, vector: bool = True) -> Any:
        A, b = inputs
        gb = bind(self, (lax.swap_last(A), cotangent), {"vector": vector})
        if i == 1:
            return lax.unbroadcast(gb, lax.shape(b))
        stack, n, k, _ = _solve_shapes(lax.shape(A), lax.shape(b), vector)
        if vector:
            outer = lax.mul(lax.reshape(gb, (*stack, n, 1)), lax.reshape(out, (*stack, 1, n)))
        else:
            outer = lax.matmul(gb, lax.swap_last(out))
        return lax.unbroadcast(lax.neg(outer), lax.shape(A))


class Cholesky(SquareMatrixFunction):
    """Lower Cholesky factor ``L`` (``A = L L^T``) of the symmetric matrix whose lower
    triangle is ``A``'s (NumPy reads only that triangle: the derivative w.r.t. the strict
    upper triangle is 0)."""

    name = "cholesky"

    def abstract(self, inputs: Sequence[Atom]) -> tuple[tuple[int, ...], np.dtype[Any]]:
        _square(inputs[0].shape, "cholesky")
        return inputs[0].shape, result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.linalg.cholesky(x), b)

    def jacobian(self, ctx: JacobianContext, i: int) -> Jacobian:
        xp = ctx.xp
        L = xp.broadcast_to(
            lift(xp, ctx.value, ctx.out.batched, len(ctx.out.shape)), (ctx.batch, *ctx.out.shape)
        )
        n = L.shape[-1]
        Linv = xp.linalg.inv(L)
        # The basis entry (k, l) of A moves the symmetric matrix by E_kl + E_lk (k > l), E_kk
        # (k = l) or nothing (k < l); dL = L Φ(L^-1 dS L^-T), Φ = strict lower + half diagonal.
        P = xp.einsum("...ik,...jl->...ijkl", Linv, Linv)
        eye = xp.eye(n, dtype=L.dtype)
        M = (P + xp.swapaxes(P, -1, -2) * (1 - eye)) * xp.tril(xp.ones((n, n), dtype=L.dtype))
        phi = M * (xp.tril(xp.ones((n, n), dtype=L.dtype), -1) + 0.5 * eye)[:, :, None, None]
        dL = xp.einsum("...ai,...ijkl->...ajkl", L, phi)
        return self._stack_blocks(ctx, dL.reshape(*L.shape[:-2], n * n, n * n))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any) -> Any:
        L = out
        n = lax.shape(L)[-1]
        lower_strict = np.tril(np.ones((n, n)), -1)
        half = lower_strict + 0.5 * np.eye(n)
        P = lax.mul(lax.matmul(lax.swap_last(L), cotangent), half.astype(lax.aval(L)[1]))  # Φ(L^T Ḡ)
        Linv = bind(INV, (L,))
        S = lax.matmul(lax.matmul(lax.swap_last(Linv), P), Linv)
        sym = lax.add(S, lax.swap_last(S))  # gradient w.r.t. the symmetric matrix, doubled
        tri = (np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n)).astype(lax.aval(L)[1])
        return lax.mul(sym, tri)


DET, LOGABSDET, SIGN_DET, INV, SOLVE, CHOLESKY = Det(), LogAbsDet(), SignDet(), Inv(), Solve(), Cholesky()
COFACTOR = Cofactor()
