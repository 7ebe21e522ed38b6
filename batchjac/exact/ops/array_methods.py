"""What a traced array can do: operators, array methods and NumPy's own functions.

Attached to :class:`~batchjac.exact.tracer.Tracer` from this ops layer (the tracer itself
knows nothing of NumPy): ``t + 1``, ``t @ W.T``, ``t[:, 0]``, ``t.sum(axis=-1)``, and, through
NumPy's protocols (NEP 13 ``__array_ufunc__``, NEP 18 ``__array_function__``),
``np.sin(t)``, ``np.sum(t, axis=-1)``, ``np.stack``, ``np.linalg.det``, ``np.einsum``...
Each maps onto batchjac's functions with NumPy's meaning for the arrays ``f`` sees; an
``out=`` argument, a NumPy function without a rule, or an operation that would mix samples
raises :class:`~batchjac.TraceError` naming it, so that ``method="auto"`` falls back to a
numerical method with a warning that says which call did not trace.

The table of the NumPy functions that trace is :data:`NUMPY_FUNCTIONS` (and the ufuncs in
:data:`UFUNCS`); the README lists them.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from batchjac.core.errors import TraceError
from batchjac.exact.ops import elementwise as ew
from batchjac.exact.ops import linalg as la
from batchjac.exact.ops import reductions as red
from batchjac.exact.ops import shapes as sh
from batchjac.exact.ops.operands import Call, full_ndim, sample_axes
from batchjac.exact.tracer import Tracer

# --------------------------------------------------------------------------------------
# NumPy's ufuncs (NEP 13)
# --------------------------------------------------------------------------------------

_UNARY_UFUNCS = {
    "negative": "negative", "absolute": "abs", "fabs": "abs", "exp": "exp", "exp2": "exp2",
    "expm1": "expm1", "log": "log", "log2": "log2", "log10": "log10", "log1p": "log1p", "sqrt": "sqrt",
    "square": "square", "reciprocal": "reciprocal", "sin": "sin", "cos": "cos", "tan": "tan",
    "arcsin": "arcsin", "arccos": "arccos", "arctan": "arctan", "sinh": "sinh", "cosh": "cosh",
    "tanh": "tanh", "arcsinh": "arcsinh", "arccosh": "arccosh", "arctanh": "arctanh", "sign": "sign",
    "floor": "floor", "ceil": "ceil", "rint": "round",
}  # fmt: skip
_BINARY_UFUNCS = {
    "add": "add", "subtract": "subtract", "multiply": "multiply", "divide": "divide",
    "true_divide": "divide", "maximum": "maximum", "minimum": "minimum", "arctan2": "arctan2",
    "hypot": "hypot", "logaddexp": "logaddexp",
}  # fmt: skip
_COMPARE_UFUNCS = {
    "greater": "gt", "greater_equal": "ge", "less": "lt", "less_equal": "le", "equal": "eq",
    "not_equal": "ne", "logical_and": "logical_and", "logical_or": "logical_or",
    "logical_xor": "logical_xor",
}  # fmt: skip
_PREDICATE_UFUNCS = {"logical_not": "logical_not", "isnan": "isnan", "isfinite": "isfinite", "isinf": "isinf"}


def _identity(x: Any) -> Any:
    return x


UFUNCS = {name: ew.FUNCTIONS[f] for name, f in {**_UNARY_UFUNCS, **_BINARY_UFUNCS}.items()}
UFUNCS.update(
    {name: (lambda op: lambda a, b: ew.compare(op, a, b))(op) for name, op in _COMPARE_UFUNCS.items()}
)
UFUNCS.update({name: (lambda op: lambda a: ew.logical(op, a))(op) for name, op in _PREDICATE_UFUNCS.items()})
UFUNCS.update(
    power=ew.power, matmul=la.matmul, positive=_identity, conjugate=_identity,
    deg2rad=ew.deg2rad, radians=ew.deg2rad, rad2deg=ew.rad2deg, degrees=ew.rad2deg,
    vecdot=lambda a, b: red.sum(ew.FUNCTIONS["multiply"](a, b), axis=-1),  # real data: conj(a) = a
    matvec=lambda A, v: la.matmul(A, sh.expand_dims(v, -1))[..., 0],
    vecmat=lambda v, A: la.matmul(sh.expand_dims(v, -2), A)[..., 0, :],
)  # fmt: skip
# SciPy's ufuncs with a rule here (NumPy has no ufunc of these names).
UFUNCS.update(expit=ew.FUNCTIONS["sigmoid"], erf=ew.FUNCTIONS["erf"])

# ufunc.reduce / ufunc.accumulate that trace: (ufunc, method) -> function(x, axis, keepdims)
_UFUNC_METHODS: dict[tuple[str, str], Callable[..., Any]] = {
    ("add", "reduce"): lambda x, axis=0, keepdims=False: red.reduce("reduce_sum", x, axis, keepdims, "numpy.add.reduce", True),
    ("multiply", "reduce"): lambda x, axis=0, keepdims=False: red.reduce("reduce_prod", x, axis, keepdims, "numpy.multiply.reduce", True),
    ("maximum", "reduce"): lambda x, axis=0, keepdims=False: red.reduce("reduce_max", x, axis, keepdims, "numpy.maximum.reduce", True),
    ("minimum", "reduce"): lambda x, axis=0, keepdims=False: red.reduce("reduce_min", x, axis, keepdims, "numpy.minimum.reduce", True),
    ("add", "accumulate"): lambda x, axis=0: red.cumsum(x, axis),
}  # fmt: skip


def _array_ufunc(self: Any, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    name = ufunc.__name__
    if kwargs.get("out") is not None:
        raise TraceError(f"numpy.{name} with out= writes into an array, which does not trace; use its result")
    kwargs.pop("out", None)
    if method == "__call__":
        function = UFUNCS.get(name)
        allowed = {"dtype", "casting", "order", "subok", "signature"}
        if function is not None and set(kwargs) <= allowed:
            result = function(*inputs)
            dtype = kwargs.get("dtype")
            return sh.astype(result, dtype) if dtype is not None else result
    else:
        function = _UFUNC_METHODS.get((name, method))
        if function is not None:
            return function(*inputs, **{k: v for k, v in kwargs.items() if k in ("axis", "keepdims")})
    owner = "numpy." if getattr(np, name, None) is ufunc else "the ufunc "
    raise TraceError(
        f"{owner}{name}{'' if method == '__call__' else '.' + method} has no derivative rule in batchjac "
        f"(or was called with {sorted(kwargs) or 'arguments'} it does not trace with); the NumPy functions "
        "that trace are listed in the README"
    )


# --------------------------------------------------------------------------------------
# NumPy's functions (NEP 18), with NumPy's meaning on the arrays f sees
# --------------------------------------------------------------------------------------


def _no_out(what: str, out: Any) -> None:
    if out is not None:
        raise TraceError(f"numpy.{what} with out= writes into an array, which does not trace; use its result")


def _reduction(primitive: Any, what: str) -> Callable[..., Any]:
    def handler(
        a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **unused: Any
    ) -> Any:
        _no_out(what, out)
        result = red.reduce(primitive, a, axis, keepdims, f"numpy.{what}", numpy_semantics=True)
        return sh.astype(result, dtype) if dtype is not None else result

    return handler


def _numpy_axis_check(a: Any, axis: Any, what: str) -> None:
    if axis is None:
        sample_axes(None, full_ndim(a), Call(a), f"numpy.{what}", none_means_all=False)


def _mean(
    a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **unused: Any
) -> Any:
    _no_out("mean", out)
    _numpy_axis_check(a, axis, "mean")
    return red.mean(a, axis, keepdims)


def _var(
    a: Any,
    axis: Any = None,
    dtype: Any = None,
    out: Any = None,
    ddof: Any = 0,
    keepdims: bool = False,
    **unused: Any,
) -> Any:
    _no_out("var", out)
    _numpy_axis_check(a, axis, "var")
    return red.var(a, axis, ddof, keepdims)


def _std(
    a: Any,
    axis: Any = None,
    dtype: Any = None,
    out: Any = None,
    ddof: Any = 0,
    keepdims: bool = False,
    **unused: Any,
) -> Any:
    _no_out("std", out)
    _numpy_axis_check(a, axis, "std")
    return red.std(a, axis, ddof, keepdims)


def _norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:  # noqa: A002
    _numpy_axis_check(x, axis, "linalg.norm")
    if axis is not None and not isinstance(axis, numbers.Integral) and ord not in (None, "fro"):
        raise TraceError("numpy.linalg.norm: matrix norms other than 'fro' do not trace")
    return red.norm(x, ord, axis, keepdims)


def _cumsum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None) -> Any:
    _no_out("cumsum", out)
    return red.cumsum(a, axis)


def _arg(function: Any, what: str) -> Callable[..., Any]:
    def handler(a: Any, axis: Any = None, out: Any = None, keepdims: bool = False) -> Any:
        _no_out(what, out)
        return function(a, axis)

    return handler


def _where(condition: Any, *values: Any) -> Any:
    if len(values) != 2:
        raise TraceError(
            "numpy.where with one argument (the positions where a condition holds) does not trace"
        )
    return ew.where(condition, *values)


def _clip(a: Any, a_min: Any = None, a_max: Any = None, out: Any = None, **kwargs: Any) -> Any:
    _no_out("clip", out)
    a_min = kwargs.get("min", a_min)
    a_max = kwargs.get("max", a_max)
    return ew.clip(a, a_min, a_max)


def _dot(a: Any, b: Any, out: Any = None) -> Any:
    _no_out("dot", out)
    a_ndim, b_ndim = full_ndim(a), full_ndim(b)
    if a_ndim == 0 or b_ndim == 0:
        return ew.FUNCTIONS["multiply"](a, b)
    if b_ndim > 2:
        raise TraceError(
            "numpy.dot with a right operand of more than two axes does not trace; use numpy.matmul or numpy.einsum"
        )
    return la.matmul(a, b)  # for b with one or two axes, dot is matmul (any number of axes of a)


def _inner(a: Any, b: Any) -> Any:
    b_ndim = len(b.shape) if isinstance(b, Tracer) else np.ndim(b)
    call = Call(a, b)
    if b_ndim == 1 or call.per_sample:
        return red.sum(ew.FUNCTIONS["multiply"](a, b), axis=-1)
    raise TraceError(
        "numpy.inner of two batches contracts over their last axes pairwise; use bj.dot (batched inner product)"
    )


def _outer(a: Any, b: Any, out: Any = None) -> Any:
    _no_out("outer", out)
    call = Call(a, b)
    if not call.per_sample:
        raise TraceError(
            "numpy.outer flattens its arguments (batch included); use bj.outer, or write f for one sample with per_sample=True"
        )
    return la.outer(a, b)


def _linalg_outer(x1: Any, x2: Any, /) -> Any:
    per_sample = Call(x1, x2).per_sample
    if any(full_ndim(v) != (1 if per_sample else 2) for v in (x1, x2)):
        raise ValueError("numpy.linalg.outer: expected vectors (one axis per sample)")
    return _outer(x1, x2)


def _transpose(a: Any, axes: Any = None) -> Any:
    return sh._transpose(a, axes, numpy_semantics=True)


def _concatenate(arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None, **unused: Any) -> Any:
    _no_out("concatenate", out)
    return sh.concatenate(list(arrays), axis)


def _stack(arrays: Any, axis: Any = 0, out: Any = None, dtype: Any = None, **unused: Any) -> Any:
    _no_out("stack", out)
    return sh.stack(list(arrays), axis)


def _hstack(tup: Any, dtype: Any = None, **unused: Any) -> Any:
    arrays = list(tup)
    ndim = max(full_ndim(a) for a in arrays)
    return sh.concatenate(arrays, axis=1 if ndim > 1 else 0)


def _flip(m: Any, axis: Any = None) -> Any:
    return sh.flip(m, axis)


def _reshape(a: Any, *args: Any, **kwargs: Any) -> Any:
    shape = kwargs.pop("shape", kwargs.pop("newshape", None))
    if shape is None:
        shape = args[0] if args else None
    if kwargs.get("order", "C") != "C":
        raise TraceError("numpy.reshape with order other than 'C' does not trace")
    return sh.reshape(a, shape)


def _pad(array: Any, pad_width: Any, mode: Any = "constant", **kwargs: Any) -> Any:
    constant_values = kwargs.pop("constant_values", 0)
    if kwargs.pop("reflect_type", "even") != "even" or kwargs:
        raise TraceError(f"numpy.pad with {sorted(kwargs) or 'reflect_type=odd'} does not trace")
    return sh.pad(array, pad_width, mode, constant_values)


def _diagonal(a: Any, offset: Any = 0, axis1: Any = 0, axis2: Any = 1) -> Any:
    return sh.diagonal(a, offset, axis1, axis2)


def _diag(v: Any, k: int = 0) -> Any:
    if not Call(v).per_sample:
        raise TraceError(
            "numpy.diag on a batch sees the batch as a matrix axis; use bj.diag (per sample), or per_sample=True"
        )
    return sh.diag(v, k)


def _trace(
    a: Any, offset: Any = 0, axis1: Any = 0, axis2: Any = 1, dtype: Any = None, out: Any = None
) -> Any:
    _no_out("trace", out)
    return sh.trace(a, offset, axis1, axis2)


def _diff(a: Any, n: Any = 1, axis: Any = -1, prepend: Any = None, append: Any = None) -> Any:
    if prepend is not None or append is not None:
        raise TraceError("numpy.diff with prepend/append does not trace")
    call = Call(a)
    ndim = full_ndim(a)
    (per_axis,) = sample_axes(axis, ndim, call, "numpy.diff")
    full_axis = per_axis + (0 if call.per_sample else 1)
    for _ in range(n):
        upper = [slice(None)] * ndim
        lower = [slice(None)] * ndim
        upper[full_axis], lower[full_axis] = slice(1, None), slice(None, -1)
        a = ew.FUNCTIONS["subtract"](a[tuple(upper)], a[tuple(lower)])
    return a


def _squeeze(a: Any, axis: Any = None) -> Any:
    return sh.squeeze(a, axis)


def _slogdet(a: Any) -> Any:
    return la.slogdet(a)


def _copy(a: Any, *args: Any, **kwargs: Any) -> Any:
    return a


# Functions that only read an array's shape or dtype (NumPy's own Python code calls them on
# the arrays it is given, e.g. scipy.special.logsumexp calls numpy.result_type).
def _ndim(a: Any) -> int:
    return full_ndim(a)


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(a.shape) if isinstance(a, Tracer) else np.shape(a)


def _size(a: Any, axis: Any = None) -> int:
    shape = _shape(a)
    return int(np.prod(shape, dtype=np.int64)) if axis is None else shape[axis]


def _result_type(*arrays_and_dtypes: Any) -> np.dtype[Any]:
    return np.result_type(*(a.dtype if isinstance(a, Tracer) else a for a in arrays_and_dtypes))


def _is_complex_object(x: Any) -> bool:
    return np.dtype(_result_type(x)).kind == "c"


def _like(fill: float | None) -> Callable[..., Any]:
    """``numpy.zeros_like`` and its kin: a constant array of the shape ``f`` sees."""

    def handler(
        a: Any, dtype: Any = None, order: str = "K", subok: Any = True, shape: Any = None, **kwargs: Any
    ) -> Any:
        shape = _shape(a) if shape is None else shape
        dtype = a.dtype if dtype is None else dtype
        value = kwargs.get("fill_value") if fill is None else fill
        return np.full(shape, value, dtype=dtype)

    return handler


def _full_like(
    a: Any, fill_value: Any, dtype: Any = None, order: str = "K", subok: Any = True, shape: Any = None
) -> Any:
    return _like(None)(a, dtype, order, subok, shape, fill_value=fill_value)


def _round(a: Any, decimals: Any = 0, out: Any = None) -> Any:
    _no_out("round", out)
    if decimals != 0:
        raise TraceError("numpy.round with decimals other than 0 does not trace")
    return ew.FUNCTIONS["round"](a)


def _ravel(a: Any, order: str = "C") -> Any:
    if order not in ("C", "A", "K"):
        raise TraceError(f"numpy.ravel with order={order!r} does not trace")
    return _flatten(a)


def _atleast(k: int) -> Callable[..., Any]:
    def handler(*arrays: Any) -> Any:
        results = [_atleast_one(a, k) for a in arrays]
        return results[0] if len(results) == 1 else tuple(results)

    return handler


def _atleast_one(a: Any, k: int) -> Any:
    ndim = full_ndim(a)
    if ndim >= k:
        return a
    call = Call(a)
    if not call.per_sample and not (k == 3 and ndim == 2):  # (B,) -> (1, B): the batch axis would move
        raise TraceError(
            f"numpy.atleast_{k}d of a batch of shape {tuple(a.shape)} would move the batch axis; write f for one "
            "sample with per_sample=True"
        )
    new_shape = getattr(np, f"atleast_{k}d")(np.empty(_shape(a), dtype=np.bool_)).shape
    return sh.reshape(a, new_shape)


def _vstack(tup: Any, dtype: Any = None, casting: Any = "same_kind") -> Any:
    arrays = list(tup)
    if not Call(*arrays).per_sample:
        raise TraceError(
            "numpy.vstack joins along axis 0, the batch axis; use numpy.concatenate(..., axis=1) or numpy.stack(..., axis=1), or write f for one sample with per_sample=True"
        )
    return sh.concatenate([_atleast_one(a, 2) for a in arrays], axis=0)


def _column_stack(tup: Any) -> Any:
    arrays = list(tup)
    per_sample = Call(*arrays).per_sample
    vector = 1 if per_sample else 2  # the number of axes f sees on a vector (column) operand
    columns = [sh.expand_dims(a, -1) if full_ndim(a) < vector else a for a in arrays]
    return sh.concatenate(columns, axis=-1)


def _take(a: Any, indices: Any, axis: Any = None, out: Any = None, mode: Any = "raise") -> Any:
    _no_out("take", out)
    if mode != "raise":
        raise TraceError(f"numpy.take with mode={mode!r} does not trace")
    if axis is None:
        a, axis = _ravel(a), -1
    (per_axis,) = sample_axes(axis, full_ndim(a), Call(a), "numpy.take")
    lead = per_axis + (0 if Call(a).per_sample else 1)
    return sh.take(a, (slice(None),) * lead + (np.asarray(indices),))


def _split(ary: Any, indices_or_sections: Any, axis: Any = 0) -> Any:
    ndim = full_ndim(ary)
    call = Call(ary)
    (per_axis,) = sample_axes(axis, ndim, call, "numpy.split")
    full_axis = per_axis + (0 if call.per_sample else 1)
    length = ary.shape[full_axis]
    if isinstance(indices_or_sections, numbers.Integral):
        if length % indices_or_sections:
            raise ValueError("array split does not result in an equal division")
        sections = int(indices_or_sections)
        bounds = [length // sections * k for k in range(1, sections)]
    else:
        bounds = [int(i) for i in indices_or_sections]
    edges = [0, *bounds, length]
    return [
        sh.take(ary, (slice(None),) * full_axis + (slice(lo, hi),)) for lo, hi in zip(edges[:-1], edges[1:])
    ]


def _tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    a_ndim, b_ndim = full_ndim(a), full_ndim(b)
    axes_a: list[Any]
    axes_b: list[Any]
    if isinstance(axes, numbers.Integral):
        axes_a, axes_b = list(range(a_ndim - int(axes), a_ndim)), list(range(int(axes)))
    else:
        axes_a, axes_b = ([x] if isinstance(x, numbers.Integral) else list(x) for x in axes)
    axes_a = [int(x) % a_ndim for x in axes_a]
    axes_b = [int(x) % b_ndim for x in axes_b]
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    sa = [next(letters) for _ in range(a_ndim)]
    sb = [next(letters) for _ in range(b_ndim)]
    for i, j in zip(axes_a, axes_b):
        sb[j] = sa[i]
    out = [c for i, c in enumerate(sa) if i not in axes_a] + [c for j, c in enumerate(sb) if j not in axes_b]
    return la.einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", a, b)


def _average(
    a: Any, axis: Any = None, weights: Any = None, returned: Any = False, keepdims: bool = False
) -> Any:
    if weights is not None or returned:
        raise TraceError(
            "numpy.average with weights or returned=True does not trace; write sum(a * w, axis) / sum(w, axis)"
        )
    _numpy_axis_check(a, axis, "average")
    return red.mean(a, axis, keepdims)


def _vector_norm(x: Any, /, *, axis: Any = None, keepdims: bool = False, ord: Any = 2) -> Any:  # noqa: A002
    _numpy_axis_check(x, axis, "linalg.vector_norm")
    return red.norm(x, ord, axis, keepdims)


def _matrix_norm(x: Any, /, *, keepdims: bool = False, ord: Any = "fro") -> Any:  # noqa: A002
    if ord != "fro":
        raise TraceError("numpy.linalg.matrix_norm: matrix norms other than 'fro' do not trace")
    return red.norm(x, "fro", (-2, -1), keepdims)


def _transpose_last(a: Any) -> Any:
    return sh.swapaxes(a, -1, -2)


def _einsum(subscripts: Any, *operands: Any, out: Any = None, **unused: Any) -> Any:
    _no_out("einsum", out)
    return la.einsum(subscripts, *operands)


NUMPY_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    np.sum: _reduction("reduce_sum", "sum"),
    np.prod: _reduction("reduce_prod", "prod"),
    np.max: _reduction("reduce_max", "max"),
    np.min: _reduction("reduce_min", "min"),
    np.amax: _reduction("reduce_max", "amax"),
    np.amin: _reduction("reduce_min", "amin"),
    np.mean: _mean,
    np.var: _var,
    np.std: _std,
    np.argmax: _arg(red.argmax, "argmax"),
    np.argmin: _arg(red.argmin, "argmin"),
    np.cumsum: _cumsum,
    np.where: _where,
    np.clip: _clip,
    np.dot: _dot,
    np.inner: _inner,
    np.outer: _outer,
    np.cross: lambda a, b, axisa=-1, axisb=-1, axisc=-1, axis=None: la.cross(
        a, b, -1 if axis is None else axis
    ),
    np.einsum: _einsum,
    np.transpose: _transpose,
    np.swapaxes: sh.swapaxes,
    np.moveaxis: sh.moveaxis,
    np.reshape: _reshape,
    np.squeeze: _squeeze,
    np.expand_dims: sh.expand_dims,
    np.broadcast_to: lambda array, shape, subok=False: sh.broadcast_to(array, shape),
    np.stack: _stack,
    np.concatenate: _concatenate,
    np.hstack: _hstack,
    np.flip: _flip,
    np.roll: sh.roll,
    np.tile: sh.tile,
    np.repeat: sh.repeat,
    np.pad: _pad,
    np.triu: sh.triu,
    np.tril: sh.tril,
    np.diagonal: _diagonal,
    np.diag: _diag,
    np.trace: _trace,
    np.diff: _diff,
    np.copy: _copy,
    np.real: _copy,
    np.conj: _copy,
    np.conjugate: _copy,
    np.linalg.det: la.det,
    np.linalg.slogdet: _slogdet,
    np.linalg.inv: la.inv,
    np.linalg.solve: la.numpy_solve,
    np.linalg.cholesky: lambda a, upper=False: (
        la.cholesky(a) if not upper else _transpose_last(la.cholesky(a))
    ),
    np.linalg.matrix_power: la.matrix_power,
    np.linalg.norm: _norm,
    np.linalg.vector_norm: _vector_norm,
    np.linalg.matrix_norm: _matrix_norm,
    np.linalg.matmul: la.matmul,
    np.linalg.outer: _linalg_outer,
    np.linalg.cross: lambda x1, x2, /, *, axis=-1: la.cross(x1, x2, axis),
    np.linalg.matrix_transpose: _transpose_last,
    np.matrix_transpose: _transpose_last,
    np.linalg.trace: lambda x, /, *, offset=0, dtype=None: _trace(x, offset, -2, -1, dtype),
    np.linalg.diagonal: lambda x, /, *, offset=0: sh.diagonal(x, offset, -2, -1),
    np.linalg.tensordot: lambda x1, x2, /, *, axes=2: _tensordot(x1, x2, axes),
    np.tensordot: _tensordot,
    np.ndim: _ndim,
    np.shape: _shape,
    np.size: _size,
    np.result_type: _result_type,
    np.iscomplexobj: _is_complex_object,
    np.isrealobj: lambda x: not _is_complex_object(x),
    np.zeros_like: _like(0),
    np.ones_like: _like(1),
    np.empty_like: _like(0),  # zeros: never uninitialised memory in a result
    np.full_like: _full_like,
    np.round: _round,
    np.around: _round,
    np.ravel: _ravel,
    np.atleast_1d: _atleast(1),
    np.atleast_2d: _atleast(2),
    np.atleast_3d: _atleast(3),
    np.vstack: _vstack,
    np.column_stack: _column_stack,
    np.take: _take,
    np.split: _split,
    np.average: _average,
}


def _array_function(self: Any, func: Any, types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    handler = NUMPY_FUNCTIONS.get(func)
    if handler is None:
        name = getattr(func, "__module__", "numpy").replace("numpy.linalg._linalg", "numpy.linalg")
        raise TraceError(
            f"{name}.{func.__name__} has no derivative rule in batchjac, so f does not trace; the NumPy "
            "functions that trace are listed in the README (batchjac.exact.ops.array_methods.NUMPY_FUNCTIONS)"
        )
    return handler(*args, **kwargs)


# --------------------------------------------------------------------------------------
# Operators and methods
# --------------------------------------------------------------------------------------


def _binary(function: Any, reflected: bool = False) -> Callable[[Any, Any], Any]:
    if reflected:
        return lambda self, other: function(other, self)
    return lambda self, other: function(self, other)


def _pow(self: Any, other: Any) -> Any:
    return ew.power(self, other)


def _rpow(self: Any, other: Any) -> Any:
    return ew.power(other, self)


def _untraceable(symbol: str) -> Callable[..., NoReturn]:
    def operator(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise TraceError(
            f"the operator {symbol} has no derivative rule in batchjac (it is piecewise constant or not arithmetic)"
        )

    return operator


def _getitem(self: Any, key: Any) -> Any:
    return sh.take(self, key)


def _method_reduction(function: Any, what: str) -> Callable[..., Any]:
    """``x.sum()`` and kin: NumPy's methods, so ``axis=None`` includes the batch axis (refused in
    batched mode, as for ``numpy.sum(x)``)."""

    def method(
        self: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False, **unused: Any
    ) -> Any:
        _no_out(what, out)
        _numpy_axis_check(self, axis, f"ndarray.{what}")
        result = function(self, axis, keepdims)
        return sh.astype(result, dtype) if dtype is not None else result

    return method


def _reshape_method(self: Any, *shape: Any, order: str = "C") -> Any:
    if order != "C":
        raise TraceError("reshape with order other than 'C' does not trace")
    return sh.reshape(self, shape[0] if len(shape) == 1 else shape)


def _flatten(self: Any, order: str = "C") -> Any:
    call = Call(self)
    if not call.per_sample:
        raise TraceError(
            "flatten/ravel of a batch would merge samples; use x.reshape(len(x), -1), or per_sample=True"
        )
    return sh.reshape(self, (-1,))


def _T(self: Any) -> Any:
    return sh._transpose(self, None, numpy_semantics=True)


def _mT(self: Any) -> Any:
    return sh.swapaxes(self, -1, -2)


def _transpose_method(self: Any, *axes: Any) -> Any:
    if not axes or axes == (None,):
        return sh._transpose(self, None, numpy_semantics=True)
    return sh._transpose(self, axes[0] if len(axes) == 1 else axes, numpy_semantics=True)


def _astype(self: Any, dtype: Any, *args: Any, **kwargs: Any) -> Any:
    return sh.astype(self, dtype)


def _clip_method(self: Any, min: Any = None, max: Any = None, out: Any = None, **kwargs: Any) -> Any:  # noqa: A002
    _no_out("clip", out)
    return ew.clip(self, min, max)


def _var_method(
    self: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: bool = False
) -> Any:
    return _var(self, axis, dtype, out, ddof, keepdims)


def _std_method(
    self: Any, axis: Any = None, dtype: Any = None, out: Any = None, ddof: Any = 0, keepdims: bool = False
) -> Any:
    return _std(self, axis, dtype, out, ddof, keepdims)


def _zero_imag(self: Any) -> Any:
    return ew.FUNCTIONS["multiply"](self, 0.0)


def _arg_method(function: Callable[[Any, Any], Any], what: str) -> Callable[..., Any]:
    def method(self: Any, axis: Any = None, out: Any = None, **unused: Any) -> Any:
        _no_out(what, out)
        return function(self, axis)

    return method


def _round_method(self: Any, decimals: Any = 0, out: Any = None) -> Any:
    _no_out("round", out)
    return ew.FUNCTIONS["round"](self) if decimals == 0 else _untraceable("round(decimals=...)")(self)


METHODS: dict[str, Callable[..., Any]] = {
    "__add__": _binary(ew.FUNCTIONS["add"]),
    "__radd__": _binary(ew.FUNCTIONS["add"], True),
    "__sub__": _binary(ew.FUNCTIONS["subtract"]),
    "__rsub__": _binary(ew.FUNCTIONS["subtract"], True),
    "__mul__": _binary(ew.FUNCTIONS["multiply"]),
    "__rmul__": _binary(ew.FUNCTIONS["multiply"], True),
    "__truediv__": _binary(ew.FUNCTIONS["divide"]),
    "__rtruediv__": _binary(ew.FUNCTIONS["divide"], True),
    "__pow__": _pow,
    "__rpow__": _rpow,
    "__matmul__": _binary(la.matmul),
    "__rmatmul__": _binary(la.matmul, True),
    "__neg__": lambda self: ew.FUNCTIONS["negative"](self),
    "__pos__": lambda self: self,
    "__abs__": lambda self: ew.FUNCTIONS["abs"](self),
    "__gt__": lambda self, other: ew.compare("gt", self, other),
    "__ge__": lambda self, other: ew.compare("ge", self, other),
    "__lt__": lambda self, other: ew.compare("lt", self, other),
    "__le__": lambda self, other: ew.compare("le", self, other),
    "__eq__": lambda self, other: ew.compare("eq", self, other),
    "__ne__": lambda self, other: ew.compare("ne", self, other),
    "__and__": lambda self, other: ew.logical("logical_and", self, other),
    "__rand__": lambda self, other: ew.logical("logical_and", other, self),
    "__or__": lambda self, other: ew.logical("logical_or", self, other),
    "__ror__": lambda self, other: ew.logical("logical_or", other, self),
    "__xor__": lambda self, other: ew.logical("logical_xor", self, other),
    "__invert__": lambda self: ew.logical("logical_not", self),
    "__getitem__": _getitem,
    "__contains__": lambda self, value: _untraceable("in")(self),
    "__array_ufunc__": _array_ufunc,
    "__array_function__": _array_function,
    "reshape": _reshape_method,
    "sum": _method_reduction(red.sum, "sum"),
    "mean": _method_reduction(red.mean, "mean"),
    "prod": _method_reduction(red.prod, "prod"),
    "max": _method_reduction(red.amax, "max"),
    "min": _method_reduction(red.amin, "min"),
    "var": _var_method,
    "std": _std_method,
    "cumsum": _cumsum,
    "argmax": _arg_method(red.argmax, "argmax"),
    "argmin": _arg_method(red.argmin, "argmin"),
    "dot": lambda self, b, out=None: _dot(self, b, out),
    "transpose": _transpose_method,
    "swapaxes": lambda self, a1, a2: sh.swapaxes(self, a1, a2),
    "squeeze": lambda self, axis=None: sh.squeeze(self, axis),
    "flatten": _flatten,
    "ravel": _flatten,
    "astype": _astype,
    "clip": _clip_method,
    "diagonal": lambda self, offset=0, axis1=0, axis2=1: sh.diagonal(self, offset, axis1, axis2),
    "trace": lambda self, offset=0, axis1=0, axis2=1, dtype=None, out=None: _trace(
        self, offset, axis1, axis2, dtype, out
    ),
    "round": _round_method,
    "copy": lambda self, *a, **k: self,
    "conj": lambda self: self,
    "conjugate": lambda self: self,
    "__mod__": _untraceable("%"),
    "__rmod__": _untraceable("%"),
    "__floordiv__": _untraceable("//"),
    "__rfloordiv__": _untraceable("//"),
    "__divmod__": _untraceable("divmod"),
    "__rdivmod__": _untraceable("divmod"),
    "__lshift__": _untraceable("<<"),
    "__rshift__": _untraceable(">>"),
}
PROPERTIES: dict[str, Callable[[Any], Any]] = {
    "T": _T,
    "mT": _mT,
    "real": lambda self: self,
    "imag": _zero_imag,
}


def _unknown_attribute(self: Any, name: str) -> NoReturn:
    if name.startswith("__"):
        raise AttributeError(name)
    raise TraceError(
        f"traced arrays have no method or attribute {name!r} that traces; use batchjac's or NumPy's "
        "functions (the README lists those that trace)"
    )


def attach() -> None:
    """Give :class:`Tracer` its operators, methods and NumPy protocols (done on import)."""
    for name, function in METHODS.items():
        setattr(Tracer, name, function)
    for name, getter in PROPERTIES.items():
        setattr(Tracer, name, property(getter))
    Tracer.__getattr__ = _unknown_attribute  # type: ignore[method-assign]  # declared on Tracer for mypy


attach()
