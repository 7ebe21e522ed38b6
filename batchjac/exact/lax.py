"""Per-sample operations on tracers and arrays: the vocabulary of the reverse-mode rules.

Each function here binds one primitive with *per-sample* semantics: shapes and axes are
those of one sample, whatever the batch mode of the trace. The derivative rules of the
primitives (``vjp``), and the interpreters that build gradient programs, are written with
these functions, so that what they compute is itself a program.

Operands are tracers, :class:`~batchjac.exact.tracer.Batched` arrays (the batch axis first),
plain arrays (shared by the batch, in the per-sample shape) or Python numbers.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import DTypeLike

from batchjac.exact.ir import Var
from batchjac.exact.primitives.base import REGISTRY, IndexMap, Primitive, size_of
from batchjac.exact.tracer import Batched, Tracer, bind


def aval(v: Any) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """``(per-sample shape, dtype, batched)`` of an operand."""
    if isinstance(v, Tracer):
        return v.node.shape, v.node.dtype, v.node.batched
    if type(v) is np.ndarray:  # a shared constant
        return tuple(v.shape), v.dtype, False
    if isinstance(v, Var):
        return v.shape, v.dtype, v.batched
    if isinstance(v, Batched):
        return tuple(v.array.shape[1:]), v.array.dtype, True
    if isinstance(v, (numbers.Number, np.bool_)):
        return (), np.result_type(v), False  # type: ignore[arg-type]  # numbers.Number is not in NumPy's hints
    return tuple(v.shape), v.dtype, False


def shape(v: Any) -> tuple[int, ...]:
    return aval(v)[0]


def prim(name: str) -> Primitive:
    return REGISTRY[name]


def apply(name: str, *operands: Any, **params: Any) -> Any:
    """The element-wise rule ``name`` (``"tanh"``, ``"mul"``, ...) on ``operands``."""
    return bind(REGISTRY[name], operands, params)


def add(a: Any, b: Any) -> Any:
    return apply("add", a, b)


def sub(a: Any, b: Any) -> Any:
    return apply("sub", a, b)


def mul(a: Any, b: Any) -> Any:
    return apply("mul", a, b)


def div(a: Any, b: Any) -> Any:
    return apply("div", a, b)


def neg(a: Any) -> Any:
    return apply("negative", a)


def select(condition: Any, a: Any, b: Any) -> Any:
    return bind(REGISTRY["select"], (condition, a, b))


def compare(op: str, a: Any, b: Any) -> Any:
    return bind(REGISTRY[op], (a, b))


def convert(a: Any, dtype: DTypeLike) -> Any:
    return bind(REGISTRY["convert"], (a,), {"dtype": np.dtype(dtype)})


def reshape(a: Any, new_shape: Iterable[int]) -> Any:
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(shape(a)) == new_shape:
        return a
    return bind(REGISTRY["reshape"], (a,), {"shape": new_shape})


def transpose(a: Any, perm: Iterable[int]) -> Any:
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
        return a
    return bind(REGISTRY["transpose"], (a,), {"perm": perm})


def swap_last(a: Any) -> Any:
    """The per-sample matrix (or stack of matrices) transposed: ``a.mT``."""
    n = len(shape(a))
    return transpose(a, (*range(n - 2), n - 1, n - 2))


def broadcast_to(a: Any, new_shape: Iterable[int]) -> Any:
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(shape(a)) == new_shape:
        return a
    return bind(REGISTRY["broadcast_to"], (a,), {"shape": new_shape})


def reduce_sum(a: Any, axes: Iterable[int]) -> Any:
    axes = tuple(sorted(int(x) for x in axes))
    if not axes:
        return a
    return bind(REGISTRY["reduce_sum"], (a,), {"axes": axes})


def sum_keepdims(a: Any, axes: Collection[int]) -> Any:
    """``a`` summed over ``axes``, keeping them as length 1 (for broadcasting back)."""
    s = shape(a)
    kept = tuple(1 if i in axes else d for i, d in enumerate(s))
    return reshape(reduce_sum(a, axes), kept)


def unbroadcast(g: Any, target_shape: Iterable[int]) -> Any:
    """Sum a cotangent ``g`` over the axes along which an operand of ``target_shape`` was
    broadcast (NumPy's right-aligned rule), and give it that shape."""
    target_shape = tuple(target_shape)
    g_shape = shape(g)
    if g_shape == target_shape:
        return g
    lead = len(g_shape) - len(target_shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(target_shape) if d == 1 and g_shape[lead + i] != 1
    )
    return reshape(reduce_sum(g, axes), target_shape)


def matmul(a: Any, b: Any) -> Any:
    return bind(REGISTRY["matmul"], (a, b))


def concatenate(values: Any, axis: int) -> Any:
    return bind(REGISTRY["concatenate"], tuple(values), {"axis": int(axis)})


def gather(a: Any, index: npt.ArrayLike) -> Any:
    """``out.flat[r] = a.flat[index.flat[r]]`` per sample (``-1``: zero); ``out`` has
    ``index``'s shape."""
    return bind(REGISTRY["gather"], (a,), {"index": IndexMap(index)})


def scatter_add(g: Any, index: npt.ArrayLike, in_shape: Iterable[int]) -> Any:
    """The transpose of :func:`gather`: ``out.flat[index.flat[r]] += g.flat[r]`` per sample,
    ``out`` of ``in_shape``."""
    return bind(REGISTRY["scatter_add"], (g,), {"index": IndexMap(index), "shape": tuple(in_shape)})


def zeros(sample_shape: Sequence[int], dtype: DTypeLike) -> npt.NDArray[Any]:
    return np.zeros(sample_shape, dtype=dtype)


def ones_like_sample(a: Any) -> npt.NDArray[Any]:
    s, dtype, _ = aval(a)
    return np.ones(s, dtype=dtype)


def index_flat(sample_shape: Sequence[int]) -> npt.NDArray[np.int64]:
    """``arange(size).reshape(sample_shape)``: the flat position of every entry."""
    return np.arange(size_of(sample_shape), dtype=np.int64).reshape(sample_shape)


# Scalar-form names -> element-wise rules (see batchjac.core.elementwise_rules): a rule's
# derivative expression evaluated with tracers gives its traced derivative.
SCALAR_TO_RULE = {
    "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1", "log2": "log2", "log10": "log10",
    "sin": "sin", "cos": "cos", "tan": "tan", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
    "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "asinh": "arcsinh", "acosh": "arccosh",
    "atanh": "arctanh", "sqrt": "sqrt", "erf": "erf", "fabs": "abs", "fmax": "maximum",
    "fmin": "minimum", "floor": "floor", "ceil": "ceil", "rint": "round", "atan2": "arctan2",
    "hypot": "hypot",
}  # fmt: skip


def _pow(u: Any, v: Any) -> Any:
    if isinstance(v, numbers.Real):  # a constant exponent
        return apply("power", u, p=float(v))
    return apply("pow", u, v)


def _where(c: Any, a: Any, b: Any) -> Any:
    if isinstance(c, (bool, np.bool_)):
        return a if c else b
    return select(c, a, b)


SCALAR_NAMESPACE = {
    name: (lambda rule: lambda *a: apply(rule, *a))(rule) for name, rule in SCALAR_TO_RULE.items()
}
SCALAR_NAMESPACE.update(pow=_pow, where=_where)


# Eager batched operands need arithmetic: reverse-mode rules evaluated on arrays apply
# Python operators to them (``1.0 - y * y`` with ``y`` a batch of values). Per-sample
# semantics, as everywhere in this module.
def _operator(function: Callable[[Any, Any], Any], reflected: bool = False) -> Callable[[Any, Any], Any]:
    return (
        (lambda self, other: function(other, self))
        if reflected
        else (lambda self, other: function(self, other))
    )


_BATCHED_OPERATORS = {
    "__add__": _operator(add), "__radd__": _operator(add, True), "__sub__": _operator(sub),
    "__rsub__": _operator(sub, True), "__mul__": _operator(mul), "__rmul__": _operator(mul, True),
    "__truediv__": _operator(div), "__rtruediv__": _operator(div, True), "__pow__": _operator(_pow),
    "__rpow__": _operator(_pow, True), "__matmul__": _operator(matmul), "__rmatmul__": _operator(matmul, True),
    "__neg__": neg, "__pos__": lambda self: self, "__abs__": lambda self: apply("abs", self),
    "__gt__": _operator(lambda a, b: compare("gt", a, b)), "__ge__": _operator(lambda a, b: compare("ge", a, b)),
    "__lt__": _operator(lambda a, b: compare("lt", a, b)), "__le__": _operator(lambda a, b: compare("le", a, b)),
    "__eq__": _operator(lambda a, b: compare("eq", a, b)), "__ne__": _operator(lambda a, b: compare("ne", a, b)),
}  # fmt: skip
for _name, _function in _BATCHED_OPERATORS.items():
    setattr(Batched, _name, _function)
Batched.__array_ufunc__ = None  # type: ignore[attr-defined]  # NumPy defers to the reflected operators
Batched.__hash__ = None  # type: ignore[method-assign, assignment]  # compared element-wise: unhashable
