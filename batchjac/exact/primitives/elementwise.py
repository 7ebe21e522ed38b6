"""Element-wise primitives: every rule of :mod:`batchjac.core.elementwise_rules`, ``select``
(``where``), comparisons, logical operations and dtype conversion.

The maths of an element-wise rule has one home, its scalar form in the core: the value and
derivatives of :meth:`ElementwisePrimitive.local_jacobians` come from the backend's fused
value-and-derivative primitive, and the traced derivative of :meth:`vjp` evaluates the same
derivative expression with traced arrays (which gives second derivatives).

Local Jacobians, per sample: ``Diagonal`` for an operand of the result's shape;
``Identity`` (scaled) when the partial derivative is one number (``x + c``, ``c * x``,
``x / c``, ``-x``); a row-scaled broadcast (one entry per row) for an operand broadcast
against the result.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.core.elementwise_rules import BINARY, UNARY, ElementwiseRule, quiet, rule, unary_numpy_function
from batchjac.exact import lax
from batchjac.exact.ir import Atom, Literal, Var
from batchjac.exact.primitives import jacobians
from batchjac.exact.primitives.base import (
    JacobianContext,
    Primitive,
    broadcast_shapes,
    lift,
    result_dtype,
    size_of,
    unlift,
)
from batchjac.structured.types import Diagonal, Identity, Jacobian


def _out_rank(inputs: Sequence[Atom]) -> int:
    return max(len(o.shape) for o in inputs)


def _broadcasts_as_numpy(inputs: Sequence[Atom], out: Var) -> bool:
    """True when NumPy's broadcasting of the operands' arrays is the per-sample one: some
    operand is batched, the batched ones have the result's shape, no operand has more axes."""
    batched = [isinstance(o, Var) and o.batched for o in inputs]
    return (
        any(batched)
        and all(o.shape == out.shape for o, b in zip(inputs, batched) if b)
        and all(len(o.shape) <= len(out.shape) for o in inputs)
    )


def _lifted(xp: Any, values: Sequence[Any], batched: Sequence[bool], rank: int) -> list[Any]:
    return [lift(xp, v, b, rank) for v, b in zip(values, batched)]


class ElementwisePrimitive(Primitive):
    """One rule of the core's table (looked up by name at each use, so that rules registered
    later by ``bj.register_elementwise`` are primitives too)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.differentiable = not rule(name).zero_derivative

    @property
    def rule(self) -> ElementwiseRule:
        return rule(self.name)

    def abstract(self, inputs: Sequence[Atom], **params: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        first = inputs[0]
        if type(first) is Var and first.dtype.kind == "f" and all(
            type(o) is Var and o.shape == first.shape and o.dtype == first.dtype for o in inputs
        ):
            return first.shape, first.dtype  # variables of one shape and float dtype (the common case)
        shape = broadcast_shapes(*(o.shape for o in inputs))
        return shape, result_dtype(inputs)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], **params: Any) -> Any:
        ranks = [getattr(v, "ndim", 0) - b for v, b in zip(values, batched)]
        rank = max(ranks, default=0)
        if any(batched) and all(r == rank for r, b in zip(ranks, batched) if b):
            # the batched operands have the full rank and the shared ones broadcast from the
            # right as they are: NumPy's broadcasting is the per-sample one without lifting
            return self.rule.value(xp, *values, **params)
        value = self.rule.value(xp, *_lifted(xp, values, batched, rank), **params)
        return unlift(value, any(batched))

    def local_jacobians(
        self, ctx: JacobianContext, wrt: Iterable[int], **params: Any
    ) -> tuple[Any, dict[int, Jacobian]]:
        xp, found, shape = ctx.xp, self.rule, ctx.out.shape
        if (
            len(ctx.values) == 1
            and ctx.batched[0]
            and xp is np
            and self.name not in _MAYBE_CONSTANT
            and ctx.inputs[0].shape == shape
            and getattr(ctx.ops, "name", None) == "numpy"
            and found.functions is None
        ):  # a unary rule on samples of the result's shape, on NumPy: what the steps below give
            # (without parameters, jacobian_step serves it by the rule's compiled function)
            value, partial = found.value_and_derivatives(np, ctx.values[0], **params)
            ctx.value = value
            return value, {0: Diagonal(partial.reshape(ctx.batch, ctx.out.size))}
        rank = len(shape)
        # an operand that already has the result's (B, *shape) needs no lifting (the hot path)
        lifted = [
            v if b and o.shape == shape else lift(xp, v, b, rank)
            for v, b, o in zip(ctx.values, ctx.batched, ctx.inputs)
        ]
        if self.name in _MAYBE_CONSTANT:
            scales = {i: _constant_partial(self.name, ctx.values, ctx.inputs, i, params) for i in wrt}
        else:
            scales = dict.fromkeys(wrt)  # no constant partials (tanh, exp, ...): all None
        if all(s is not None for s in scales.values()):
            value, partials = found.value(xp, *lifted, **params), []  # no derivative arrays
        else:
            value, *partials = _value_and_partials(xp, found, lifted, params, ctx.ops)
        value = unlift(value, ctx.out.batched)
        ctx.value = value
        out: dict[int, Jacobian] = {}
        for i in wrt:
            scale = scales[i]
            if scale is not None:
                out[i] = _scaled_broadcast(ctx, i, scale)
            else:
                out[i] = _partial_jacobian(ctx, i, partials[i])
        return value, out

    def value_step(self, inputs: Sequence[Atom], out: Var, xp: Any, **params: Any) -> Any:
        found = self.rule
        if not found.user and _broadcasts_as_numpy(inputs, out):
            # the batched operands have the result's shape and the shared ones broadcast from
            # the right: NumPy's broadcasting is the per-sample one, nothing to lift; a
            # built-in rule's compiled value is found once (a user rule is looked up per use:
            # it may be registered again)
            dtype = out.dtype
            same = dtype.kind == "f" and all(isinstance(o, Var) and o.dtype == dtype for o in inputs)
            value = found.value_function(xp, same_dtype=same, **params)
            return lambda values: value(*values)
        return super().value_step(inputs, out, xp, **params)

    def jacobian_step(
        self, inputs: Sequence[Atom], out: Var, wanted: tuple[int, ...], xp: Any, ops: Any, **params: Any
    ) -> Any:
        found = self.rule
        fast = (
            unary_numpy_function(found)
            if len(inputs) == 1
            and isinstance(inputs[0], Var)
            and inputs[0].batched
            and inputs[0].shape == out.shape
            and xp is np
            and getattr(ops, "name", None) == "numpy"
            and self.name not in _MAYBE_CONSTANT
            and not found.user
            and not params
            else None
        )
        if fast is None:
            return super().jacobian_step(inputs, out, wanted, xp, ops, **params)
        size = out.size

        def unary(values: Sequence[Any], batch: int, operands: Any) -> tuple[Any, dict[int, Jacobian]]:
            # a unary rule on samples of the result's shape, on NumPy: value and derivative in
            # one compiled function (what local_jacobians gives)
            value, partial = fast(values[0])
            return value, {0: Diagonal.trusted(partial.reshape(batch, size))}

        return unary

    def unit_partial(self, inputs: Sequence[Atom], out: Var, i: int, **params: Any) -> bool:
        operand = inputs[i]
        unit = self.name in ("add", "identity") or (self.name == "sub" and i == 0)
        return unit and operand.shape == out.shape and operand.dtype == out.dtype

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, **params: Any) -> Any:
        found = self.rule
        if found.functions is not None or found.scalar is None:
            raise NotImplementedError(
                f"{self.name}: a rule registered with bj.register_elementwise has no traced derivative "
                "(it is a compiled scalar function); second derivatives and nesting need a built-in rule"
            )
        scope: dict[str, Any] = dict(lax.SCALAR_NAMESPACE, pow=_power)
        scope.update(zip(found.arguments, inputs))
        scope.update({**found.params, **params})
        scope["y"] = out
        partial = eval(_compiled_expression(found.scalar[1 + i]), scope)  # noqa: S307 - the rule's own expression
        return lax.unbroadcast(lax.mul(cotangent, partial), lax.shape(inputs[i]))


@functools.lru_cache(maxsize=1024)
def _compiled_expression(expression: str) -> Any:
    """A rule's derivative expression compiled once (``eval`` of a string compiles it anew)."""
    return compile(expression, "<element-wise rule>", "eval")


def _power(u: Any, v: Any) -> Any:
    """``pow`` of a traced derivative expression; ``u ** 1`` is ``u`` itself (the derivative
    of ``x ** 2`` is ``2 x``, whose own Jacobian then stays a scaled identity)."""
    if isinstance(v, numbers.Real) and float(v) == 1.0:
        return u
    return lax.SCALAR_NAMESPACE["pow"](u, v)


def _value_and_partials(
    xp: Any, found: ElementwiseRule, lifted: Sequence[Any], params: dict[str, Any], ops: Any = None
) -> tuple[Any, ...]:
    """The rule's value and partials in one pass, on the backend of the call (a fused kernel
    on the GPU) when the operands are arrays of one shape, by the namespace's rule otherwise."""
    arrays = [a for a in lifted if not isinstance(a, numbers.Number)]
    if len(arrays) == len(lifted) and all(a.shape == arrays[0].shape for a in arrays):
        if xp is np and getattr(ops, "name", None) == "numpy" and found.functions is None:
            return found.value_and_derivatives(np, *arrays, **params)  # what the NumPy backend runs
        return (ops or select_backend(*arrays)).elementwise(found.name, *arrays, **params)
    with quiet(xp):
        return found.value_and_derivatives(xp, *lifted, **params)


_MAYBE_CONSTANT = frozenset(("add", "identity", "sub", "negative", "mul", "div"))  # see _constant_partial


def _constant_partial(
    name: str, values: Sequence[Any], inputs: Sequence[Atom], i: int, params: dict[str, Any]
) -> float | None:
    """The partial derivative w.r.t. operand ``i`` when it is one number, else None:
    ``x + c``, ``x - c``, ``c * x`` and ``x / c`` (``c`` a Python number, or a constant array
    shared by the batch whose entries are all equal, such as the cotangent seeds of a reverse
    sweep: this keeps the Hessian of ``x^T A x`` ``Shared``), ``-x``."""
    if name in ("add", "identity"):
        return 1.0
    if name == "sub":
        return 1.0 if i == 0 else -1.0
    if name == "negative":
        return -1.0
    if len(inputs) != 2 or name not in ("mul", "div") or (name == "div" and i == 1):
        return None
    other = _uniform_constant(inputs[1 - i], values[1 - i])
    if other is None:
        return None
    if name == "mul":
        return other
    with np.errstate(divide="ignore"):
        return float(np.divide(1.0, other))  # inf for 0, as the value is


def _uniform_constant(operand: Atom, value: Any) -> float | None:
    """The one number a constant operand holds (a literal, or a shared NumPy array whose
    entries are all equal), else None. Device arrays are not inspected (no host sync)."""
    if isinstance(operand, Literal):
        return float(operand.value)
    if (
        operand.batched
        or not isinstance(value, np.ndarray)
        or value.size == 0
        or value.dtype.kind not in "fiub"
    ):
        return None
    first = value.flat[0]
    if value.size > 1 and not (value == first).all():
        return None
    return float(first)


def _scaled_broadcast(ctx: JacobianContext, i: int, scale: float) -> Jacobian:
    """``scale * I`` for an operand of the result's shape, else ``scale`` times the map that
    broadcasts it (a ``Gather``)."""
    operand, out = ctx.inputs[i], ctx.out
    if operand.shape == out.shape:
        return Identity(out.size, ctx.batch, scale, dtype=ctx.dtype, device=ctx.device)
    return jacobians.broadcast(operand.shape, out.shape, ctx.batch, ctx.dtype, ctx.xp, scale=scale)


def _partial_jacobian(ctx: JacobianContext, i: int, partial: Any) -> Jacobian:
    """``Diagonal`` of the partial for an operand of the result's shape; the partial's rows
    on the broadcast map otherwise."""
    xp, operand, out = ctx.xp, ctx.inputs[i], ctx.out
    full = (ctx.batch, *out.shape)
    if partial.shape != full:  # a lifted (1 or B, ...) partial, or one number
        partial = xp.broadcast_to(partial, full)
    flat = partial.reshape(ctx.batch, out.size)
    if operand.shape == out.shape:
        return Diagonal(flat)
    return jacobians.broadcast(operand.shape, out.shape, ctx.batch, ctx.dtype, xp, rows=flat)


ELEMENTWISE = {name: ElementwisePrimitive(name) for name in (*UNARY, *BINARY)}


def ensure_rule(name: str) -> ElementwisePrimitive:
    """The primitive of rule ``name``, declared on first use (rules registered by
    ``bj.register_elementwise`` after import)."""
    if name not in ELEMENTWISE:
        ELEMENTWISE[name] = ElementwisePrimitive(name)
    return ELEMENTWISE[name]


# --------------------------------------------------------------------------------------
# select (where), comparisons, logical operations, conversion
# --------------------------------------------------------------------------------------


class Select(Primitive):
    """``where(condition, a, b)``: ``condition`` is boolean and not differentiated; the
    Jacobians w.r.t. ``a`` and ``b`` are the diagonals ``[condition]`` and ``[not condition]``."""

    name = "select"

    def abstract(self, inputs: Sequence[Atom], **params: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        condition = inputs[0]
        if condition.dtype != np.bool_:
            raise TypeError(f"select: the condition must be boolean, got {condition.dtype}")
        return broadcast_shapes(*(o.shape for o in inputs)), result_dtype(inputs[1:])

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], **params: Any) -> Any:
        rank = max((np.ndim(v) - b for v, b in zip(values, batched)), default=0)
        c, a, b = _lifted(xp, values, batched, rank)
        out = xp.where(c, a, b)
        dtype = np.result_type(*(v for v in (a, b)))
        return unlift(out.astype(dtype, copy=False), any(batched))

    def jacobian(self, ctx: JacobianContext, i: int, **params: Any) -> Jacobian:
        xp, out = ctx.xp, ctx.out
        condition = lift(xp, ctx.values[0], ctx.batched[0], len(out.shape))
        chosen = condition if i == 1 else ~condition
        mask = xp.broadcast_to(chosen, (ctx.batch, *out.shape)).astype(ctx.dtype)
        return _partial_jacobian(ctx, i, mask)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, **params: Any) -> Any:
        if i == 0:
            return None
        zero = np.zeros((), dtype=lax.aval(cotangent)[1])
        picked = lax.select(inputs[0], cotangent, zero) if i == 1 else lax.select(inputs[0], zero, cotangent)
        return lax.unbroadcast(picked, lax.shape(inputs[i]))


Select()


class Boolean(Primitive):
    """A comparison or logical operation: a boolean result, not differentiable."""

    differentiable = False

    def __init__(self, name: str, function: str) -> None:
        super().__init__(name)
        self.function = function

    def abstract(self, inputs: Sequence[Atom], **params: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return broadcast_shapes(*(o.shape for o in inputs)), np.dtype(np.bool_)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], **params: Any) -> Any:
        rank = max((np.ndim(v) - b for v, b in zip(values, batched)), default=0)
        out = getattr(xp, self.function)(*_lifted(xp, values, batched, rank))
        return unlift(out, any(batched))


COMPARISONS = {
    name: Boolean(name, function)
    for name, function in [
        ("gt", "greater"), ("ge", "greater_equal"), ("lt", "less"), ("le", "less_equal"),
        ("eq", "equal"), ("ne", "not_equal"), ("logical_and", "logical_and"),
        ("logical_or", "logical_or"), ("logical_xor", "logical_xor"), ("logical_not", "logical_not"),
        ("isnan", "isnan"), ("isfinite", "isfinite"), ("isinf", "isinf"),
    ]
}  # fmt: skip


class Convert(Primitive):
    """``astype(dtype)``: the identity between floating dtypes; to an integer or boolean
    dtype the result is not differentiable (its derivative is zero)."""

    name = "convert"

    def abstract(self, inputs: Sequence[Atom], dtype: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return inputs[0].shape, np.dtype(dtype)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], dtype: Any) -> Any:
        return xp.asarray(values[0]).astype(dtype)

    def jacobian(self, ctx: JacobianContext, i: int, dtype: Any) -> Jacobian:
        return Identity(ctx.out.size, ctx.batch, dtype=ctx.dtype, device=ctx.device)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, dtype: Any) -> Any:
        return lax.convert(cotangent, lax.aval(inputs[0])[1])


CONVERT = Convert()


def is_floating(var: object) -> bool:
    return isinstance(var, Var) and var.dtype.kind == "f"


__all__ = ["ELEMENTWISE", "COMPARISONS", "CONVERT", "ensure_rule", "size_of"]
