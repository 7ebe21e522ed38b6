"""Reductions over per-sample axes: sum, max, min, product, log-sum-exp, cumulative sum,
and the non-differentiable arg-reductions.

The local Jacobian of a reduction is an index map, never a dense 0/1 matrix: output ``r``
sums the inputs of its set, each with a weight (1 for ``sum``; the softmax for
``logsumexp``; the selection of the maximum for ``max``; the other factors for ``prod``),
stored as one CSR pattern for the batch (:func:`batchjac.exact.primitives.jacobians.reduction`).

Ties of ``max``/``min`` share the derivative equally among the tied entries (as JAX does);
``prod``'s derivative uses the products of the other entries, so zeros are exact.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from batchjac.core.elementwise_rules import quiet
from batchjac.exact import lax
from batchjac.exact.ir import Atom
from batchjac.exact.primitives import jacobians
from batchjac.exact.primitives.base import JacobianContext, Primitive, lift, size_of, unlift
from batchjac.exact.tracer import bind
from batchjac.structured.types import Dense, Jacobian, Sparse


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


@functools.lru_cache(maxsize=512)
def reduction_pattern(
    in_shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """CSR ``(indptr, indices)`` of a reduction over ``axes``: output ``r`` (row-major over
    the kept axes) sums the inputs ``indices[indptr[r]:indptr[r+1]]`` (in increasing order)."""
    out_size = size_of(_kept_shape(in_shape, axes))
    target = np.broadcast_to(
        np.arange(out_size, dtype=np.int64).reshape(_keepdims_shape(in_shape, axes)), in_shape
    ).ravel()
    indices = np.argsort(target, kind="stable")
    indptr = np.zeros(out_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(target, minlength=out_size), out=indptr[1:])
    for a in (indptr, indices):
        a.setflags(write=False)
    return indptr, indices


def _axes_plus_one(axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a + 1 for a in axes)


class Reduction(Primitive):
    """Common shape rule: the reduced axes disappear."""

    def abstract(
        self, inputs: Sequence[Atom], axes: tuple[int, ...]
    ) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return _kept_shape(inputs[0].shape, axes), inputs[0].dtype

    def _lifted(self, xp: Any, values: Sequence[Any], batched: Sequence[bool]) -> tuple[Any, bool]:
        x, b = values[0], batched[0]
        return lift(xp, x, b, np.ndim(x) - b), b

    def _pattern(
        self, ctx: JacobianContext, axes: tuple[int, ...]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        return reduction_pattern(ctx.inputs[0].shape, tuple(axes))

    def _weighted(self, ctx: JacobianContext, axes: tuple[int, ...], weights_full: Any) -> Sparse:
        """The reduction's Jacobian with per-sample weights ``weights_full`` (B, *in_shape)."""
        indptr, indices = self._pattern(ctx, axes)
        xp = ctx.xp
        weights = weights_full.reshape(ctx.batch, ctx.inputs[0].size)[
            :, xp.asarray(indices) if xp is not np else indices
        ]
        return jacobians.reduction(indptr, indices, ctx.inputs[0].size, ctx.batch, ctx.dtype, xp, weights)


class ReduceSum(Reduction):
    name = "reduce_sum"

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axes: tuple[int, ...]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.sum(x, axis=_axes_plus_one(axes)), b)

    def jacobian(self, ctx: JacobianContext, i: int, axes: tuple[int, ...]) -> Jacobian:
        indptr, indices = self._pattern(ctx, axes)
        return jacobians.reduction(indptr, indices, ctx.inputs[0].size, ctx.batch, ctx.dtype, ctx.xp)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axes: tuple[int, ...]) -> Any:
        shape = lax.shape(inputs[0])
        return lax.broadcast_to(lax.reshape(cotangent, _keepdims_shape(shape, axes)), shape)


class ReduceChooser(Reduction):
    """``max`` or ``min`` over axes; ties share the derivative equally."""

    def __init__(self, name: str, function: str) -> None:
        super().__init__(name)
        self.function = function

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axes: tuple[int, ...]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(getattr(xp, self.function)(x, axis=_axes_plus_one(axes)), b)

    def jacobian(self, ctx: JacobianContext, i: int, axes: tuple[int, ...]) -> Jacobian:
        xp = ctx.xp
        x = ctx.per_sample(0)
        chosen = lift(xp, ctx.value, ctx.out.batched, len(ctx.out.shape))
        chosen = chosen.reshape((chosen.shape[0], *_keepdims_shape(ctx.inputs[0].shape, axes)))
        mask = (x == chosen).astype(ctx.dtype)
        count = xp.sum(mask, axis=_axes_plus_one(axes), keepdims=True)
        with quiet(xp):  # a NaN maximum matches no entry: 0/0 gives the NaN derivative
            return self._weighted(ctx, axes, xp.broadcast_to(mask / count, x.shape))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axes: tuple[int, ...]) -> Any:
        shape = lax.shape(inputs[0])
        dtype = lax.aval(inputs[0])[1]
        chosen = lax.broadcast_to(lax.reshape(out, _keepdims_shape(shape, axes)), shape)
        mask = lax.convert(lax.compare("eq", inputs[0], chosen), dtype)
        # a NaN maximum matches no entry (count 0): its derivative is NaN, without a 0/0
        count = lax.apply("maximum", lax.broadcast_to(lax.sum_keepdims(mask, axes), shape), 1.0)
        spread = lax.broadcast_to(lax.reshape(cotangent, _keepdims_shape(shape, axes)), shape)
        shared = lax.div(lax.mul(spread, mask), count)
        return lax.select(lax.compare("ne", chosen, chosen), chosen, shared)


def products_of_others(xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
    """``out[..., i] = prod_{k != i} x[..., k]`` over the per-sample ``axes`` of ``x`` ``(lead,
    *shape)`` (each group of entries that one product reduces), by exclusive prefix and
    suffix products: exact with zeros, no division."""
    shape = x.shape[1:]
    kept = [a for a in range(len(shape)) if a not in axes]
    order = (0, *(a + 1 for a in kept), *(a + 1 for a in axes))
    moved = xp.transpose(x, order)
    flat = moved.reshape(*moved.shape[: 1 + len(kept)], size_of([shape[a] for a in axes]))  # B may be 0
    ones = xp.ones(flat.shape[:-1] + (1,), dtype=flat.dtype)
    prefix = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    suffix = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(flat, -1)[..., :-1]], axis=-1), axis=-1), -1)
    return xp.transpose((prefix * suffix).reshape(moved.shape), tuple(np.argsort(order)))


class ReduceProd(Reduction):
    """Product over axes; its partial derivatives are the products of the other entries
    (:class:`ProductsOfOthers`), exact where entries are zero."""

    name = "reduce_prod"

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axes: tuple[int, ...]) -> Any:
        x, b = self._lifted(xp, values, batched)
        return unlift(xp.prod(x, axis=_axes_plus_one(axes)), b)

    def jacobian(self, ctx: JacobianContext, i: int, axes: tuple[int, ...]) -> Jacobian:
        return self._weighted(ctx, axes, products_of_others(ctx.xp, ctx.per_sample(0), axes))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axes: tuple[int, ...]) -> Any:
        shape = lax.shape(inputs[0])
        spread = lax.broadcast_to(lax.reshape(cotangent, _keepdims_shape(shape, axes)), shape)
        return lax.mul(spread, bind(PRODUCTS_OF_OTHERS, (inputs[0],), {"axes": tuple(axes)}))


class ProductsOfOthers(Primitive):
    """``y_i = prod_{k != i} x_k`` within each group of entries reduced over ``axes`` (the
    gradient of ``prod``). With ``n`` entries in a group, ``dy_i/dx_j = prod_{k != i, j} x_k``
    for ``j != i`` and 0 for ``j = i``: the products of others of the group with entry ``i``
    set to 1 (so exact with zeros too)."""

    name = "products_of_others"

    def abstract(
        self, inputs: Sequence[Atom], axes: tuple[int, ...]
    ) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return inputs[0].shape, inputs[0].dtype

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axes: tuple[int, ...]) -> Any:
        x, b = values[0], batched[0]
        return unlift(products_of_others(xp, lift(xp, x, b, np.ndim(x) - b), axes), b)

    def _pairs(self, xp: Any, x: Any, axes: tuple[int, ...]) -> Any:
        """``(groups, n, n)`` per leading entry: ``M[g, i, j] = prod_{k != i, j} x_k`` (0 on the
        diagonal), with the reduced axes of ``x`` ``(lead, *shape)`` flattened last."""
        shape = x.shape[1:]
        kept = [a for a in range(len(shape)) if a not in axes]
        order = (0, *(a + 1 for a in kept), *(a + 1 for a in axes))
        flat = xp.transpose(x, order).reshape(x.shape[0], -1, size_of([shape[a] for a in axes]))
        n = flat.shape[-1]
        eye = xp.eye(n, dtype=bool)
        with_one = xp.where(eye, xp.ones((), dtype=x.dtype), flat[:, :, None, :])  # row i: x with x_i = 1
        pairs = products_of_others(xp, with_one.reshape(-1, n, n), (1,)).reshape(flat.shape[0], -1, n, n)
        return xp.where(eye, xp.zeros((), dtype=x.dtype), pairs), order

    def jacobian(self, ctx: JacobianContext, i: int, axes: tuple[int, ...]) -> Jacobian:
        xp = ctx.xp
        x = ctx.per_sample(0)
        pairs, order = self._pairs(xp, x, axes)
        blocks = jacobians.blocks(pairs, ctx.batch, ctx.dtype, xp)
        if list(order) == list(range(len(order))):
            return blocks
        # the groups are not contiguous in row-major order: permute rows and columns
        position = np.transpose(
            np.arange(size_of(ctx.inputs[0].shape)).reshape(ctx.inputs[0].shape), [o - 1 for o in order[1:]]
        ).ravel()
        inverse = np.argsort(position)
        return Dense(blocks.to_dense()[:, inverse][:, :, inverse])

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axes: tuple[int, ...]) -> Any:
        x = inputs[0]
        shape = lax.shape(x)
        kept = [a for a in range(len(shape)) if a not in axes]
        perm = (*kept, *axes)
        n = size_of([shape[a] for a in axes])
        groups = (*(shape[a] for a in kept), n)
        flat = lax.reshape(lax.transpose(x, perm), groups)
        g = lax.reshape(lax.transpose(cotangent, perm), groups)
        eye = np.broadcast_to(np.eye(n, dtype=bool), (*groups[:-1], n, n))
        rows = lax.broadcast_to(lax.reshape(flat, (*groups[:-1], 1, n)), (*groups[:-1], n, n))
        with_one = lax.select(eye, np.ones((), dtype=lax.aval(x)[1]), rows)
        pairs = bind(self, (with_one,), {"axes": (len(groups),)})
        pairs = lax.select(eye, np.zeros((), dtype=lax.aval(x)[1]), pairs)  # (*groups, n) rows i, columns j
        weighted = lax.reduce_sum(lax.mul(lax.reshape(g, (*groups, 1)), pairs), (len(groups) - 1,))
        moved_shape = tuple(shape[a] for a in perm)
        return lax.transpose(lax.reshape(weighted, moved_shape), np.argsort(perm))


class LogSumExp(Reduction):
    name = "logsumexp"

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axes: tuple[int, ...]) -> Any:
        x, b = self._lifted(xp, values, batched)
        axes1 = _axes_plus_one(axes)
        top = xp.max(x, axis=axes1, keepdims=True) if x.size else xp.zeros((), x.dtype)
        top = xp.where(xp.isfinite(top), top, xp.zeros((), x.dtype))
        with np.errstate(divide="ignore"):
            out = xp.log(xp.sum(xp.exp(x - top), axis=axes1, keepdims=True)) + top
        return unlift(xp.squeeze(out, axis=axes1), b)

    def jacobian(self, ctx: JacobianContext, i: int, axes: tuple[int, ...]) -> Jacobian:
        xp = ctx.xp
        x = ctx.per_sample(0)
        y = lift(xp, ctx.value, ctx.out.batched, len(ctx.out.shape))
        y = y.reshape((y.shape[0], *_keepdims_shape(ctx.inputs[0].shape, axes)))
        return self._weighted(ctx, axes, xp.broadcast_to(xp.exp(x - y), x.shape))

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axes: tuple[int, ...]) -> Any:
        shape = lax.shape(inputs[0])
        keep = _keepdims_shape(shape, axes)
        weights = lax.apply("exp", lax.sub(inputs[0], lax.broadcast_to(lax.reshape(out, keep), shape)))
        return lax.mul(lax.broadcast_to(lax.reshape(cotangent, keep), shape), weights)


class CumSum(Primitive):
    """Cumulative sum along one per-sample axis; Jacobian: each output sums a prefix."""

    name = "cumsum"

    def abstract(self, inputs: Sequence[Atom], axis: int) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return inputs[0].shape, inputs[0].dtype

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axis: int) -> Any:
        x, b = values[0], batched[0]
        return unlift(xp.cumsum(lift(xp, x, b, np.ndim(x) - b), axis=axis + 1), b)

    def jacobian(self, ctx: JacobianContext, i: int, axis: int) -> Jacobian:
        indptr, indices = cumsum_pattern(ctx.inputs[0].shape, axis)
        return jacobians.reduction(indptr, indices, ctx.inputs[0].size, ctx.batch, ctx.dtype, ctx.xp)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axis: int) -> Any:
        flipped = bind(lax.prim("flip"), (cotangent,), {"axes": (axis,)})
        summed = bind(self, (flipped,), {"axis": axis})
        return bind(lax.prim("flip"), (summed,), {"axes": (axis,)})


@functools.lru_cache(maxsize=256)
def cumsum_pattern(shape: tuple[int, ...], axis: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """CSR of a cumulative sum: output ``r`` sums the entries up to it along ``axis``."""
    n = shape[axis]
    lines = np.moveaxis(np.arange(size_of(shape), dtype=np.int64).reshape(shape), axis, -1).reshape(-1, n)
    k, j = np.tril_indices(n)  # output k of a line sums inputs j <= k
    rows, cols = lines[:, k].ravel(), lines[:, j].ravel()
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(size_of(shape) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=size_of(shape)), out=indptr[1:])
    indices = np.ascontiguousarray(cols[order])
    for a in (indptr, indices):
        a.setflags(write=False)
    return indptr, indices


class ArgChooser(Primitive):
    """``argmax``/``argmin`` along one axis: integer positions, not differentiable."""

    differentiable = False

    def __init__(self, name: str, function: str) -> None:
        super().__init__(name)
        self.function = function

    def abstract(self, inputs: Sequence[Atom], axis: int) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return _kept_shape(inputs[0].shape, (axis,)), np.dtype(np.int64)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axis: int) -> Any:
        x, b = values[0], batched[0]
        return unlift(getattr(xp, self.function)(lift(xp, x, b, np.ndim(x) - b), axis=axis + 1), b)


REDUCE_SUM = ReduceSum()
REDUCE_MAX = ReduceChooser("reduce_max", "max")
REDUCE_MIN = ReduceChooser("reduce_min", "min")
REDUCE_PROD = ReduceProd()
PRODUCTS_OF_OTHERS = ProductsOfOthers()
LOGSUMEXP = LogSumExp()
CUMSUM = CumSum()
ARGMAX = ArgChooser("argmax", "argmax")
ARGMIN = ArgChooser("argmin", "argmin")
