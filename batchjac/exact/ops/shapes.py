"""Shapes and moves: reshape, transpose, indexing, stacking, flips, rolls, tiles, padding,
triangles and diagonals.

Every function here is linear and moves entries; its Jacobian is a ``Gather`` (or a
selection with zero rows), built from an index map and never as a 0/1 matrix. Shapes and
axes are those ``f`` sees: in batched mode the batch axis stays first and cannot be moved,
indexed or mixed with another axis (such calls raise, suggesting ``per_sample=True``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import DTypeLike

from batchjac.core.errors import TraceError
from batchjac.exact import lax
from batchjac.exact.ops.operands import (
    Call,
    as_operand_array,
    full_ndim,
    main,
    per_sample_shape,
    sample_axes,
    sample_axis,
    unwrap,
)
from batchjac.exact.primitives.base import REGISTRY, size_of
from batchjac.exact.primitives.moves import CONCATENATE, Key
from batchjac.exact.tracer import Batched, Tracer, bind

_PER_SAMPLE_HINT = "write f for one sample with per_sample=True, or keep the batch axis first"


def _move(name: str, x: Any, what: str | None = None, **params: Any) -> Any:
    call = Call(x)
    operand, _ = main(x, call)
    return unwrap(bind(REGISTRY[name], (operand,), params))


def reshape(x: Any, shape: int | Sequence[int], *more: int) -> Any:
    """Reshape keeping the batch axis: in batched mode ``shape`` is the full new shape, whose
    first entry is ``B`` or ``-1`` (as in NumPy). Jacobian ``Identity``.

    >>> import numpy as np, batchjac as bj
    >>> bj.reshape(np.zeros((2, 6)), (-1, 2, 3)).shape
    (2, 2, 3)
    """
    if more:  # reshape(x, B, 2, 3), as NumPy takes it
        shape = (cast(int, shape), *more)
    call = Call(x)
    operand, sample_shape = main(x, call)
    batch = operand.array.shape[0] if isinstance(operand, Batched) else call.batch
    new = per_sample_shape(shape, call, "reshape", batch)
    if -1 in new:
        known = size_of([d for d in new if d != -1])
        if list(new).count(-1) > 1 or (known == 0 or size_of(sample_shape) % known):
            raise ValueError(f"reshape: cannot reshape a sample of shape {sample_shape} into {new}")
        new = tuple(size_of(sample_shape) // known if d == -1 else d for d in new)
    return unwrap(lax.reshape(operand, new)) if new != tuple(sample_shape) else unwrap(operand)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Any:
    """Permute axes; in batched mode the batch axis stays first: ``axes`` is a full
    permutation starting with 0, and ``None`` reverses the axes of each sample.

    >>> import numpy as np, batchjac as bj
    >>> bj.transpose(np.zeros((5, 2, 3))).shape
    (5, 3, 2)
    """
    return _transpose(x, axes, numpy_semantics=False)


def _transpose(x: Any, axes: Sequence[int] | None, numpy_semantics: bool) -> Any:
    call = Call(x)
    operand, shape = main(x, call)
    ndim = full_ndim(x)
    if axes is None:
        if numpy_semantics and not call.per_sample and ndim > 1:
            raise TraceError(
                f"transpose (.T) of a batch would move the batch axis; use x.mT, numpy.swapaxes(x, -1, -2) or {_PER_SAMPLE_HINT}"
            )
        perm = tuple(reversed(range(len(shape))))
    else:
        axes = tuple(axes)
        if any(isinstance(a, bool) or not isinstance(a, numbers.Integral) for a in axes) or len(axes) != ndim:
            raise ValueError(f"transpose: axes must be a permutation of range({ndim}), got {axes}")
        if any(not -ndim <= a < ndim for a in axes):
            raise ValueError(f"transpose: axis out of range in {axes} for an array of {ndim} dimensions")
        axes = tuple(int(a) % ndim for a in axes)
        if sorted(axes) != list(range(ndim)):
            raise ValueError(f"transpose: axes must be a permutation of range({ndim}), got {axes}")
        if call.per_sample:
            perm = axes
        else:
            if axes[0] != 0:
                raise ValueError(
                    f"transpose: axes must be a permutation of range({ndim}) that keeps the batch axis 0 first, got {axes}"
                )
            perm = tuple(a - 1 for a in axes[1:])
    return unwrap(lax.transpose(operand, perm))


def swapaxes(x: Any, axis1: int, axis2: int) -> Any:
    """Swap two axes (neither the batch axis in batched mode).

    >>> import numpy as np, batchjac as bj
    >>> bj.swapaxes(np.zeros((5, 2, 3)), 1, 2).shape
    (5, 3, 2)
    """
    call = Call(x)
    operand, shape = main(x, call)
    a, b = (sample_axis(ax, full_ndim(x), call, "swapaxes") for ax in (axis1, axis2))
    perm = list(range(len(shape)))
    perm[a], perm[b] = perm[b], perm[a]
    return unwrap(lax.transpose(operand, perm))


def moveaxis(x: Any, source: int | Sequence[int], destination: int | Sequence[int]) -> Any:
    """Move axes to new positions (not the batch axis in batched mode).

    >>> import numpy as np, batchjac as bj
    >>> bj.moveaxis(np.zeros((5, 2, 3, 4)), 1, -1).shape
    (5, 3, 4, 2)
    """
    call = Call(x)
    operand, shape = main(x, call)
    ndim = full_ndim(x)
    src = [sample_axis(a, ndim, call, "moveaxis") for a in np.atleast_1d(source)]
    dst = [sample_axis(a, ndim, call, "moveaxis") for a in np.atleast_1d(destination)]
    if len(src) != len(dst):
        raise ValueError(
            f"moveaxis: source and destination must have the same number of axes, got {source} and {destination}"
        )
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError(f"moveaxis: repeated axis in source {source} or destination {destination}")
    perm = [a for a in range(len(shape)) if a not in src]
    for d, s in sorted(zip(dst, src)):
        perm.insert(d, s)
    return unwrap(lax.transpose(operand, tuple(perm)))


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Any:
    """Remove axes of length 1 of each sample (``None``: all of them; never the batch axis).

    >>> import numpy as np, batchjac as bj
    >>> bj.squeeze(np.zeros((5, 1, 3))).shape
    (5, 3)
    """
    call = Call(x)
    operand, shape = main(x, call)
    axes = (
        [i for i, d in enumerate(shape) if d == 1]
        if axis is None
        else sample_axes(axis, full_ndim(x), call, "squeeze")
    )
    for a in axes:
        if shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of a sample of shape {shape} does not have length 1")
    return unwrap(lax.reshape(operand, tuple(d for i, d in enumerate(shape) if i not in axes)))


def expand_dims(x: Any, axis: int | Sequence[int]) -> Any:
    """Insert an axis of length 1 (its position counted in the result, as in NumPy).

    >>> import numpy as np, batchjac as bj
    >>> bj.expand_dims(np.zeros((5, 3)), -1).shape
    (5, 3, 1)
    """
    call = Call(x)
    operand, shape = main(x, call)
    axes = (axis,) if isinstance(axis, (int, numbers.Integral)) else tuple(axis)
    positions = sample_axes(axes, full_ndim(x) + len(axes), call, "expand_dims")
    new = list(shape)
    for p in sorted(positions):
        new.insert(p, 1)
    return unwrap(lax.reshape(operand, tuple(new)))


def broadcast_to(x: Any, shape: int | Sequence[int]) -> Any:
    """Broadcast to ``shape`` (in batched mode the full shape, ``B`` first); Jacobian: a
    ``Gather`` that repeats entries.

    >>> import numpy as np, batchjac as bj
    >>> bj.broadcast_to(np.zeros((5, 1, 3)), (5, 4, 3)).shape
    (5, 4, 3)
    """
    call = Call(x)
    operand, _ = main(x, call)
    batch = operand.array.shape[0] if isinstance(operand, Batched) else call.batch
    new = per_sample_shape(shape, call, "broadcast_to", batch)
    if -1 in new:
        raise ValueError(f"broadcast_to: the shape must not contain -1, got {shape}")
    return unwrap(lax.broadcast_to(operand, new))


def _concat_operands(arrays: Any, call: Call, what: str) -> tuple[list[Any], list[tuple[int, ...]]]:
    if isinstance(arrays, (Tracer, np.ndarray)) or not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{what}: expected a sequence of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise ValueError(f"{what}: need at least one array")
    operands: list[Any] = []
    shapes: list[tuple[int, ...]] = []
    for i, a in enumerate(arrays):
        if isinstance(a, Tracer):
            operands.append(a)
            shapes.append(a.node.shape)
            continue
        a = as_operand_array(a, f"{what} operand {i}")
        if call.per_sample:
            operands.append(a)
            shapes.append(tuple(a.shape))
        elif a.ndim and call.batch is not None and a.shape[0] == call.batch:
            operands.append(Batched(a))
            shapes.append(tuple(a.shape[1:]))
        elif not call.traced:
            operands.append(Batched(a) if a.ndim else a)
            shapes.append(tuple(a.shape[1:]) if a.ndim else ())
        else:
            raise ValueError(
                f"{what}: operand {i} of shape {tuple(a.shape)} has no batch axis of length {call.batch}; "
                f"{_PER_SAMPLE_HINT}"
            )
    return operands, shapes


def concatenate(arrays: Any, axis: int = 0) -> Any:
    """Join arrays along an existing axis (not the batch axis in batched mode: NumPy's
    default ``axis=0`` is refused there; use ``axis=1`` or ``-1``).

    >>> import numpy as np, batchjac as bj
    >>> bj.concatenate([np.ones((2, 3)), np.zeros((2, 1))], axis=-1).shape
    (2, 4)
    """
    call = Call(*arrays) if isinstance(arrays, (list, tuple)) else Call(arrays)
    operands, shapes = _concat_operands(arrays, call, "concatenate")
    ndim = len(shapes[0]) + (0 if call.per_sample else 1)
    a = sample_axis(axis, ndim, call, "concatenate")
    return unwrap(bind(CONCATENATE, operands, {"axis": a}))


def stack(arrays: Any, axis: int = 0) -> Any:
    """Join arrays along a new axis (counted in the result; not the batch axis in batched
    mode: NumPy's default ``axis=0`` is refused there; use ``axis=1`` or ``-1``).

    >>> import numpy as np, batchjac as bj
    >>> bj.stack([np.ones(2), np.zeros(2)], axis=-1).shape
    (2, 2)
    """
    call = Call(*arrays) if isinstance(arrays, (list, tuple)) else Call(arrays)
    operands, shapes = _concat_operands(arrays, call, "stack")
    if len(set(shapes)) > 1:
        raise ValueError(f"stack: all arrays must have one per-sample shape, got {shapes}")
    ndim = len(shapes[0]) + 1 + (0 if call.per_sample else 1)
    a = sample_axis(axis, ndim, call, "stack")
    new = list(shapes[0])
    new.insert(a, 1)
    expanded = [lax.reshape(o, tuple(new)) for o in operands]
    return unwrap(bind(CONCATENATE, expanded, {"axis": a}))


def flip(x: Any, axis: int | Sequence[int] | None = None) -> Any:
    """Reverse the order of entries along axes (``None``: every axis of a sample in
    per-sample mode; refused in batched mode, where it would flip the batch).

    >>> import numpy as np, batchjac as bj
    >>> bj.flip(np.array([[1.0, 2.0]]), axis=-1).tolist()
    [[2.0, 1.0]]
    """
    call = Call(x)
    axes = sample_axes(axis, full_ndim(x), call, "flip", none_means_all=False)
    return _move("flip", x, axes=axes)


def roll(x: Any, shift: int | Sequence[int], axis: int | Sequence[int] | None = None) -> Any:
    """Roll entries along one axis (``None``: over the flattened sample in per-sample mode).

    >>> import numpy as np, batchjac as bj
    >>> bj.roll(np.array([[1.0, 2.0, 3.0]]), -1, axis=-1).tolist()
    [[2.0, 3.0, 1.0]]
    """
    call = Call(x)
    operand, shape = main(x, call)
    if axis is None:
        if not call.per_sample:
            sample_axes(None, 0, call, "roll", none_means_all=False)
        flat = lax.reshape(operand, (size_of(shape),))
        rolled = bind(REGISTRY["roll"], (flat,), {"shift": int(cast(int, shift)), "axis": 0})
        return unwrap(lax.reshape(rolled, shape))
    axes = sample_axes(axis, full_ndim(x), call, "roll")
    shifts = (shift,) * len(axes) if isinstance(shift, (int, numbers.Integral)) else tuple(shift)
    return unwrap(bind(REGISTRY["roll"], (operand,), {"shift": tuple(int(s) for s in shifts), "axis": axes}))


def tile(x: Any, reps: int | Sequence[int]) -> Any:
    """Repeat the whole array ``reps`` times along each axis (NumPy's ``tile``); in batched
    mode the batch axis must be repeated once.

    >>> import numpy as np, batchjac as bj
    >>> bj.tile(np.array([[1.0, 2.0]]), (1, 2)).tolist()
    [[1.0, 2.0, 1.0, 2.0]]
    """
    call = Call(x)
    operand, shape = main(x, call)
    counts = (reps,) if isinstance(reps, (int, numbers.Integral)) else tuple(int(r) for r in reps)
    ndim = full_ndim(x)
    if not call.per_sample:
        if len(counts) > ndim or (len(counts) == ndim and counts[0] != 1):
            raise ValueError(
                f"tile: the batch axis must be repeated once, got reps {counts} for {ndim} axes; {_PER_SAMPLE_HINT}"
            )
        counts = counts[1:] if len(counts) == ndim else counts
    return unwrap(bind(REGISTRY["tile"], (operand,), {"reps": counts}))


def repeat(x: Any, repeats: int | Sequence[int], axis: int | None = None) -> Any:
    """Repeat each entry ``repeats`` times along ``axis`` (``None``: the flattened sample in
    per-sample mode).

    >>> import numpy as np, batchjac as bj
    >>> bj.repeat(np.array([[1.0, 2.0]]), 2, axis=-1).tolist()
    [[1.0, 1.0, 2.0, 2.0]]
    """
    call = Call(x)
    operand, shape = main(x, call)
    counts = int(repeats) if isinstance(repeats, (int, numbers.Integral)) else tuple(int(r) for r in repeats)
    if axis is None:
        if not call.per_sample:
            sample_axes(None, 0, call, "repeat", none_means_all=False)
        operand, a = lax.reshape(operand, (size_of(shape),)), 0
    else:
        a = sample_axis(axis, full_ndim(x), call, "repeat")
    return unwrap(bind(REGISTRY["repeat"], (operand,), {"repeats": counts, "axis": a}))


PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(x: Any, pad_width: Any, mode: str = "constant", constant_values: Any = 0) -> Any:
    """Pad each sample, as ``numpy.pad`` does, in mode ``"constant"`` (with
    ``constant_values``), ``"edge"``, ``"reflect"``, ``"symmetric"`` or ``"wrap"``; in
    batched mode the batch axis is not padded. Jacobian: a selection (each entry copies one
    input entry, or is a constant: a zero row).

    >>> import numpy as np, batchjac as bj
    >>> bj.pad(np.array([[1.0]]), ((0, 0), (1, 1))).tolist()
    [[0.0, 1.0, 0.0]]
    >>> bj.pad(np.array([[1.0, 2.0]]), ((0, 0), (1, 1)), mode="reflect").tolist()
    [[2.0, 1.0, 2.0, 1.0]]
    """
    if mode not in PAD_MODES:
        raise TraceError(f"pad: mode={mode!r} does not trace; the modes that do: {', '.join(PAD_MODES)}")
    call = Call(x)
    operand, shape = main(x, call)
    ndim = full_ndim(x)
    widths: Any = np.asarray(pad_width, dtype=np.int64)
    if widths.size not in (1, 2, 2 * ndim) or (widths < 0).any():
        raise ValueError(
            f"pad: pad_width must be non-negative, one pair or one pair per axis ({ndim}), got {pad_width!r}"
        )
    widths = np.broadcast_to(
        widths.reshape(-1, 2) if widths.size > 1 else np.full((1, 2), widths.item()), (ndim, 2)
    )
    if not call.per_sample:
        if widths[0].any():
            raise ValueError(
                f"pad: the batch axis cannot be padded, got pad_width {widths[0].tolist()} for it"
            )
        widths = widths[1:]
    widths = tuple((int(a), int(b)) for a, b in widths)
    padded = bind(REGISTRY["pad"], (operand,), {"pad_width": widths, "mode": mode})
    values = np.asarray(constant_values, dtype=np.float64)
    if mode == "constant" and np.any(values != 0):
        if values.ndim == 2 and values.shape[0] == ndim and not call.per_sample:
            values = values[1:]  # the batch axis's pair (it is not padded)
        border = np.pad(
            np.zeros(shape), widths, constant_values=values if values.ndim < 2 else tuple(map(tuple, values))
        )
        padded = lax.add(padded, border.astype(lax.aval(padded)[1]))
    return unwrap(padded)


def _triangle(x: Any, k: int, lower: bool, what: str) -> Any:
    call = Call(x)
    operand, shape = main(x, call)
    if len(shape) < 2:
        raise ValueError(
            f"{what}: expected matrices (..., n, m) per sample, got per-sample shape {shape}; {_PER_SAMPLE_HINT}"
        )
    n, m = shape[-2:]
    mask = (np.tril(np.ones((n, m)), k) if lower else np.triu(np.ones((n, m)), k)).astype(
        lax.aval(operand)[1]
    )
    return unwrap(lax.mul(operand, mask))


def triu(x: Any, k: int = 0) -> Any:
    """The upper triangle of each matrix (last two axes of a sample); Jacobian: a diagonal
    0/1 mask.

    >>> import numpy as np, batchjac as bj
    >>> bj.triu(np.ones((1, 2, 2))).tolist()
    [[[1.0, 1.0], [0.0, 1.0]]]
    """
    return _triangle(x, k, lower=False, what="triu")


def tril(x: Any, k: int = 0) -> Any:
    """The lower triangle of each matrix (last two axes of a sample).

    >>> import numpy as np, batchjac as bj
    >>> bj.tril(np.ones((1, 2, 2))).tolist()
    [[[1.0, 0.0], [1.0, 1.0]]]
    """
    return _triangle(x, k, lower=True, what="tril")


def diagonal(x: Any, offset: int = 0, axis1: int = -2, axis2: int = -1) -> Any:
    """The diagonal of each matrix (axes ``axis1``, ``axis2`` of a sample, the last two by
    default), as a new last axis.

    >>> import numpy as np, batchjac as bj
    >>> bj.diagonal(np.arange(4.0).reshape(1, 2, 2)).tolist()
    [[0.0, 3.0]]
    """
    call = Call(x)
    ndim = full_ndim(x)
    a1, a2 = (sample_axis(a, ndim, call, "diagonal") for a in (axis1, axis2))
    return _move("diagonal", x, offset=int(offset), axis1=a1, axis2=a2)


def diag(v: Any, k: int = 0) -> Any:
    """Per sample: a vector becomes the matrix with it on diagonal ``k``; a matrix gives its
    diagonal ``k``.

    >>> import numpy as np, batchjac as bj
    >>> bj.diag(np.array([[1.0, 2.0]])).tolist()
    [[[1.0, 0.0], [0.0, 2.0]]]
    """
    call = Call(v)
    operand, shape = main(v, call)
    if len(shape) == 1:
        return unwrap(bind(REGISTRY["diag"], (operand,), {"k": int(k)}))
    if len(shape) == 2:
        return unwrap(bind(REGISTRY["diagonal"], (operand,), {"offset": int(k), "axis1": 0, "axis2": 1}))
    raise ValueError(f"diag: expected a vector or a matrix per sample, got per-sample shape {shape}")


def trace(x: Any, offset: int = 0, axis1: int = -2, axis2: int = -1) -> Any:
    """The trace of each matrix: the sum of :func:`diagonal`.

    >>> import numpy as np, batchjac as bj
    >>> bj.trace(np.arange(4.0).reshape(1, 2, 2)).tolist()
    [3.0]
    """
    from batchjac.exact.ops.reductions import sum as sum_

    return sum_(diagonal(x, offset, axis1, axis2), axis=-1)


def sample_key(key: Any, call: Call, ndim: int) -> tuple[Any, ...]:
    """The part of an index ``f`` gives that acts on one sample; in batched mode the batch
    axis must be kept whole (``x[:, ...]``, ``x[..., 0]``)."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if isinstance(k, Tracer):
            raise TraceError(
                "indexing with a traced array (a data-dependent index) does not trace; use bj.where or a constant index"
            )
    if call.per_sample:
        return key
    if key and key[0] is Ellipsis:
        if sum(k is not None for k in key[1:]) >= ndim:
            raise IndexError("index: the batch axis cannot be indexed; keep it with x[:, ...]")
        return key
    if key and isinstance(key[0], slice) and key[0] == slice(None):
        return key[1:]
    raise IndexError(
        f"index: the batch axis (axis 0) must be kept whole, e.g. x[:, ...]; got {key!r}; {_PER_SAMPLE_HINT}"
    )


def take(x: Any, key: Any) -> Any:
    """``x[key]``; in batched mode ``key`` keeps the batch axis whole (``x[:, 1:3]``,
    ``x[..., 0]``). Jacobian: a ``Gather`` (per sample). Advanced indices keep the batch
    axis first.

    >>> import numpy as np, batchjac as bj
    >>> bj.take(np.arange(6.0).reshape(2, 3), (slice(None), 0)).tolist()
    [0.0, 3.0]
    """
    call = Call(x)
    operand, shape = main(x, call)
    per_sample = Key(sample_key(key, call, full_ndim(x)))
    return unwrap(bind(REGISTRY["getitem"], (operand,), {"key": per_sample}))


def astype(x: Any, dtype: DTypeLike) -> Any:
    """``x`` in ``dtype``: the identity between floating types; an integer or boolean result
    is not differentiable.

    >>> import numpy as np, batchjac as bj
    >>> bj.astype(np.ones((1, 2)), np.float32).dtype
    dtype('float32')
    """
    call = Call(x)
    operand, _ = main(x, call)
    return unwrap(lax.convert(operand, dtype))
