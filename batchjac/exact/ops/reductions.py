"""Reductions: ``bj.sum``, ``mean``, ``var``, ``std``, ``prod``, ``amax``, ``amin``,
``argmax``, ``argmin``, ``cumsum``, ``logsumexp``, ``norm``, ``dot``.

Axes are those of the arrays ``f`` sees (:mod:`batchjac.exact.ops.operands`): in batched
mode ``axis=None`` means every axis of a sample for batchjac's functions, axis 0 (the
batch) is refused. The local Jacobian of a reduction is an index map: each output sums a
set of inputs with weights (see :mod:`batchjac.exact.primitives.reductions`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from batchjac.exact import lax
from batchjac.exact.ops.elementwise import FUNCTIONS, apply_rule
from batchjac.exact.ops.operands import Call, full_ndim, main, sample_axes, unwrap
from batchjac.exact.primitives.base import REGISTRY, size_of
from batchjac.exact.tracer import bind


def reduce(
    primitive: str,
    x: Any,
    axis: int | Sequence[int] | None,
    keepdims: bool,
    what: str,
    numpy_semantics: bool = False,
) -> Any:
    """``primitive`` over ``axis`` of ``x``; ``numpy_semantics``: ``axis=None`` includes the
    batch axis (refused in batched mode) instead of meaning every axis of a sample."""
    call = Call(x)
    operand, shape = main(x, call)
    axes = sample_axes(axis, full_ndim(x), call, what, none_means_all=not numpy_semantics)
    out = bind(REGISTRY[primitive], (operand,), {"axes": axes}) if axes else operand
    if keepdims:
        out = lax.reshape(out, tuple(1 if i in axes else d for i, d in enumerate(shape)))
    return unwrap(out)


def _count(x: Any, axis: int | Sequence[int] | None, what: str, numpy_semantics: bool = False) -> int:
    call = Call(x)
    operand, shape = main(x, call)
    axes = sample_axes(axis, full_ndim(x), call, what, none_means_all=not numpy_semantics)
    return size_of([shape[a] for a in axes])


def sum(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:  # noqa: A001 - the mathematical name
    """Sum over axes of each sample (all of them by default): ``(B, ...) -> (B, ...)``.

    Jacobian: each output sums its inputs (an index map, never a dense 0/1 matrix); for a
    full sum, ``1^T`` ``(1, n)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.sum(np.arange(6.0).reshape(2, 3)).tolist()
    [3.0, 12.0]
    """
    return reduce("reduce_sum", x, axis, keepdims, "sum")


def mean(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:
    """Mean over axes of each sample (all of them by default); the sum scaled by ``1/count``.

    >>> import numpy as np, batchjac as bj
    >>> bj.mean(np.arange(6.0).reshape(2, 3)).tolist()
    [1.0, 4.0]
    """
    count = _count(x, axis, "mean")
    return FUNCTIONS["multiply"](sum(x, axis, keepdims), 1.0 / count if count else np.nan)


def var(x: Any, axis: int | Sequence[int] | None = None, ddof: int = 0, keepdims: bool = False) -> Any:
    """Variance over axes of each sample: ``mean(|x - mean(x)|^2) * n / (n - ddof)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.var(np.array([[1.0, 3.0]])).tolist()
    [1.0]
    """
    count = _count(x, axis, "var")
    centred = FUNCTIONS["subtract"](x, mean(x, axis, keepdims=True))
    total = sum(FUNCTIONS["square"](centred), axis, keepdims)
    return FUNCTIONS["multiply"](total, 1.0 / (count - ddof) if count > ddof else np.inf)


def std(x: Any, axis: int | Sequence[int] | None = None, ddof: int = 0, keepdims: bool = False) -> Any:
    """Standard deviation over axes of each sample: ``sqrt(var)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.std(np.array([[1.0, 3.0]])).tolist()
    [1.0]
    """
    return FUNCTIONS["sqrt"](var(x, axis, ddof, keepdims))


def prod(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:
    """Product over axes of each sample; the derivative is the product of the other entries
    (exact with zeros).

    >>> import numpy as np, batchjac as bj
    >>> bj.prod(np.array([[2.0, 3.0]])).tolist()
    [6.0]
    """
    return reduce("reduce_prod", x, axis, keepdims, "prod")


def amax(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:
    """Largest entry over axes of each sample; the derivative goes to the largest entry
    (shared equally among ties).

    >>> import numpy as np, batchjac as bj
    >>> bj.amax(np.array([[2.0, 3.0]])).tolist()
    [3.0]
    """
    return reduce("reduce_max", x, axis, keepdims, "amax")


def amin(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:
    """Smallest entry over axes of each sample (see :func:`amax`).

    >>> import numpy as np, batchjac as bj
    >>> bj.amin(np.array([[2.0, 3.0]])).tolist()
    [2.0]
    """
    return reduce("reduce_min", x, axis, keepdims, "amin")


max = amax  # noqa: A001 - NumPy's names
min = amin  # noqa: A001


def logsumexp(x: Any, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:
    """``log(sum(exp(x)))`` over axes of each sample, without overflow; its derivative is
    the softmax of ``x`` over those axes.

    >>> import numpy as np, batchjac as bj
    >>> round(float(bj.logsumexp(np.zeros((1, 2)))[0]), 12) == round(float(np.log(2)), 12)
    True
    """
    return reduce("logsumexp", x, axis, keepdims, "logsumexp")


def _arg(primitive: str, x: Any, axis: int | None, what: str, numpy_semantics: bool = True) -> Any:
    call = Call(x)
    operand, shape = main(x, call)
    if axis is None:
        if not call.per_sample and numpy_semantics:
            sample_axes(None, 0, call, what, none_means_all=False)  # raises: it would mix samples
        operand = lax.reshape(operand, (size_of(shape),))
        axis_ = 0
    else:
        (axis_,) = sample_axes(axis, full_ndim(x), call, what)
    return unwrap(bind(REGISTRY[primitive], (operand,), {"axis": axis_}))


def argmax(x: Any, axis: int | None = None) -> Any:
    """Positions of the largest entries along ``axis`` (integers, not differentiable).

    >>> import numpy as np, batchjac as bj
    >>> bj.argmax(np.array([[2.0, 3.0, 1.0]]), axis=-1).tolist()
    [1]
    """
    return _arg("argmax", x, axis, "argmax")


def argmin(x: Any, axis: int | None = None) -> Any:
    """Positions of the smallest entries along ``axis`` (integers, not differentiable).

    >>> import numpy as np, batchjac as bj
    >>> bj.argmin(np.array([[2.0, 3.0, 1.0]]), axis=-1).tolist()
    [2]
    """
    return _arg("argmin", x, axis, "argmin")


def cumsum(x: Any, axis: int | None = None) -> Any:
    """Cumulative sum along ``axis`` of each sample (``None``: over the flattened sample in
    per-sample mode; refused in batched mode, where it would run over the batch). Jacobian:
    each output sums a prefix (an index map).

    >>> import numpy as np, batchjac as bj
    >>> bj.cumsum(np.array([[1.0, 2.0, 3.0]]), axis=-1).tolist()
    [[1.0, 3.0, 6.0]]
    """
    call = Call(x)
    operand, shape = main(x, call)
    if axis is None:
        if not call.per_sample:
            sample_axes(None, 0, call, "cumsum", none_means_all=False)
        operand, axis_ = lax.reshape(operand, (size_of(shape),)), 0
    else:
        (axis_,) = sample_axes(axis, full_ndim(x), call, "cumsum")
    return unwrap(bind(REGISTRY["cumsum"], (operand,), {"axis": axis_}))


def norm(x: Any, ord: Any = None, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Any:  # noqa: A002 - NumPy's name
    """Vector norm over axes of each sample (all of them by default: the Frobenius norm of
    a matrix): ``ord`` None or 2 (Euclidean), 1, ``inf``, ``-inf``, or any other number
    ``p`` (``sum(|x|^p)^(1/p)``). The derivative of the Euclidean norm at 0 is NaN (as
    ``sqrt``'s at 0 times 0).

    >>> import numpy as np, batchjac as bj
    >>> bj.norm(np.array([[3.0, 4.0]])).tolist()
    [5.0]
    """
    magnitude = FUNCTIONS["abs"](x)
    if ord in (None, 2, "fro"):
        return FUNCTIONS["sqrt"](sum(FUNCTIONS["square"](x), axis, keepdims))
    if ord == 1:
        return sum(magnitude, axis, keepdims)
    if ord == np.inf:
        return amax(magnitude, axis, keepdims)
    if ord == -np.inf:
        return amin(magnitude, axis, keepdims)
    if isinstance(ord, numbers.Real) and not isinstance(ord, bool) and ord != 0:
        return apply_rule(
            "power", sum(apply_rule("power", magnitude, p=float(ord)), axis, keepdims), p=1.0 / ord
        )
    raise ValueError(f"norm: ord must be None, 1, 2, 'fro', inf, -inf or a nonzero number, got {ord!r}")


def dot(a: Any, b: Any) -> Any:
    """Batched inner product over the last axis, other axes broadcast: ``sum(a * b, -1)``.

    ``dy/da = b^T`` and ``dy/db = a^T`` per sample.

    >>> import numpy as np, batchjac as bj
    >>> bj.dot(np.array([[5.0, 8.0, -1.0]]), np.array([1.0, 2.0, 3.0])).tolist()
    [18.0]
    """
    return sum(FUNCTIONS["multiply"](a, b), axis=-1)
