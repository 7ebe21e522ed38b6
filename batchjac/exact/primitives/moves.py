"""Primitives that move entries: reshape, transpose, indexing, broadcasting, flips, rolls,
tiles, repeats, diagonals, padding, concatenation, and the gather / scatter-add pair.

A move is linear and picks, for every output entry, one input entry or nothing (a zero):
``out.flat[r] = x.flat[index[r]]``. Each primitive here only says how to build that index
map from the per-sample shape and its parameters (by applying the NumPy operation to
``arange(size)``, so the map is right by construction); the value, the local Jacobian (a
``Gather``, or a selection with zero rows) and the reverse-mode rule (a scatter-add with
the same map) are shared. Index maps are computed once per shape and cached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from batchjac.exact import lax
from batchjac.exact.ir import Atom
from batchjac.exact.primitives import jacobians
from batchjac.exact.primitives.base import IndexMap, JacobianContext, Primitive, lift, size_of, unlift
from batchjac.structured.types import Identity, Jacobian


def _arange(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(size_of(shape), dtype=np.int64).reshape(shape)


def _lead(values: Sequence[Any], batched: Sequence[bool]) -> int:
    return max((v.shape[0] for v, b in zip(values, batched) if b), default=1)


_DEVICE_INDEX: dict[tuple[int, str], tuple[npt.NDArray[Any], Any]] = {}


def device_index(xp: Any, index: np.ndarray) -> Any:
    """``index`` on the namespace's device, copied there once per map (not per call)."""
    if xp is np:
        return index
    key = (id(index), xp.__name__)
    found = _DEVICE_INDEX.get(key)
    if found is None or found[0] is not index:
        found = (index, xp.asarray(index))
        _DEVICE_INDEX[key] = found
    return found[1]


def gather_values(xp: Any, x: Any, batched: bool, index: np.ndarray) -> Any:
    """``x.flat[index]`` per sample (``-1``: zero), of ``index``'s shape."""
    lead = x.shape[0] if batched else 1
    flat = x.reshape(lead, size_of(x.shape[1:] if batched else x.shape))  # explicit: B may be 0
    full = index.ravel()
    if full.size and full.min() < 0:
        picked = flat[:, device_index(xp, np.maximum(full, 0))]
        picked = xp.where(device_index(xp, full >= 0), picked, xp.zeros((), dtype=x.dtype))
    else:
        picked = flat[:, device_index(xp, full)]
    return unlift(picked.reshape((lead, *index.shape)), batched)


class Move(Primitive):
    """A primitive whose output entry ``r`` is input entry ``index[r]`` (or zero)."""

    def index_map(self, in_shape: tuple[int, ...], *args: Any, **params: Any) -> npt.NDArray[Any]:
        raise NotImplementedError(self.name)

    def index(self, in_shape: tuple[int, ...], params: dict[str, Any]) -> npt.NDArray[np.int64]:
        return _cached_index(self, tuple(in_shape), tuple(sorted(params.items())))

    def abstract(self, inputs: Sequence[Atom], **params: Any) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return self.index(inputs[0].shape, params).shape, inputs[0].dtype

    def fast(
        self, xp: Any, x: Any, batched: bool, in_shape: tuple[int, ...], *args: Any, **params: Any
    ) -> Any:
        """The value by a NumPy view where one exists (None: gather through the map)."""
        return None

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], **params: Any) -> Any:
        x, b = values[0], batched[0]
        in_shape = x.shape[1:] if b else x.shape
        out = self.fast(xp, x, b, tuple(in_shape), **params)
        if out is not None:
            return out
        return gather_values(xp, x, b, self.index(in_shape, params))

    def jacobian(self, ctx: JacobianContext, i: int, **params: Any) -> Jacobian:
        index = self.index(ctx.inputs[0].shape, params)
        return jacobians.selection(index, ctx.inputs[0].size, ctx.batch, ctx.dtype, ctx.xp)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, *args: Any, **params: Any) -> Any:
        in_shape = lax.shape(inputs[0])
        return lax.scatter_add(cotangent, self.index(in_shape, params), in_shape)


@functools.lru_cache(maxsize=1024)
def _cached_index(
    primitive: Move, in_shape: tuple[int, ...], params: tuple[tuple[str, Any], ...]
) -> npt.NDArray[np.int64]:
    index = np.array(
        primitive.index_map(in_shape, **dict(params)), dtype=np.int64, order="C"
    )  # 0-d stays 0-d
    index.setflags(write=False)
    return index


class Transpose(Move):
    name = "transpose"

    def index_map(self, in_shape: tuple[int, ...], perm: tuple[int, ...]) -> npt.NDArray[Any]:
        return np.transpose(_arange(in_shape), perm)

    def fast(self, xp: Any, x: Any, batched: bool, in_shape: tuple[int, ...], perm: tuple[int, ...]) -> Any:
        return unlift(xp.transpose(lift(xp, x, batched, len(in_shape)), (0, *(p + 1 for p in perm))), batched)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, perm: tuple[int, ...]) -> Any:
        return lax.transpose(cotangent, np.argsort(perm))


class BroadcastTo(Move):
    name = "broadcast_to"

    def index_map(self, in_shape: tuple[int, ...], shape: tuple[int, ...]) -> npt.NDArray[Any]:
        return np.broadcast_to(_arange(in_shape), shape)

    def fast(self, xp: Any, x: Any, batched: bool, in_shape: tuple[int, ...], shape: tuple[int, ...]) -> Any:
        lifted = lift(xp, x, batched, len(shape))
        return unlift(xp.broadcast_to(lifted, (lifted.shape[0], *shape)), batched)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, shape: tuple[int, ...]) -> Any:
        return lax.unbroadcast(cotangent, lax.shape(inputs[0]))


class Key:
    """A per-sample NumPy index (slices, integers, None, Ellipsis, constant integer or
    boolean arrays) as a hashable static parameter."""

    __slots__ = ("items", "basic")

    def __init__(self, key: Any) -> None:
        key = key if isinstance(key, tuple) else (key,)
        items: list[tuple[Any, ...]] = []
        for k in key:
            if isinstance(k, slice):
                items.append(("slice", k.start, k.stop, k.step))
            elif k is None:
                items.append(("none",))
            elif k is Ellipsis:
                items.append(("ellipsis",))
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                items.append(("int", int(k)))
            else:
                array = np.asarray(k)
                if array.dtype == np.bool_:
                    items.append(("bool", IndexMap(array.astype(np.int64)), array.shape))
                elif array.dtype.kind in "iu":
                    items.append(("array", IndexMap(array), array.shape))
                else:
                    raise IndexError(
                        f"index: only integers, slices, None, Ellipsis and integer or boolean arrays are valid, got {k!r}"
                    )
        self.items = tuple(items)
        self.basic = all(item[0] in ("slice", "none", "ellipsis", "int") for item in items)

    def numpy_key(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for item in self.items:
            kind = item[0]
            if kind == "slice":
                out.append(slice(*item[1:]))
            elif kind == "none":
                out.append(None)
            elif kind == "ellipsis":
                out.append(Ellipsis)
            elif kind == "int":
                out.append(item[1])
            elif kind == "array":
                out.append(item[1].array.reshape(item[2]))
            else:
                out.append(item[1].array.reshape(item[2]).astype(bool))
        return tuple(out)

    def structural_key(self) -> tuple[Any, ...]:
        return tuple(
            item[:1] + tuple(i.structural_key() if isinstance(i, IndexMap) else i for i in item[1:])
            for item in self.items
        )

    def describe(self) -> str:
        parts = []
        for item in self.items:
            kind = item[0]
            if kind == "slice":
                parts.append(
                    ":".join("" if v is None else str(v) for v in item[1:3])
                    + (f":{item[3]}" if item[3] is not None else "")
                )
            elif kind == "int":
                parts.append(str(item[1]))
            else:
                parts.append({"none": "None", "ellipsis": "...", "array": "<ints>", "bool": "<mask>"}[kind])
        return "[" + ", ".join(parts) + "]"

    def __hash__(self) -> int:
        return hash(self.structural_key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and self.structural_key() == other.structural_key()


class GetItem(Move):
    name = "getitem"

    def index_map(self, in_shape: tuple[int, ...], key: Key) -> npt.NDArray[Any]:
        return _arange(in_shape)[key.numpy_key()]

    def fast(self, xp: Any, x: Any, batched: bool, in_shape: tuple[int, ...], key: Key) -> Any:
        if not key.basic:
            return None  # advanced indices through the map keep the batch axis first
        lifted = lift(xp, x, batched, len(in_shape))
        return unlift(lifted[(slice(None),) + key.numpy_key()], batched)


class IndexMapMove(Move):
    """A move given by a function of the per-sample shape and parameters."""

    def __init__(self, name: str, build: Callable[..., Any]) -> None:
        super().__init__(name)
        self.build = build

    def index_map(self, in_shape: tuple[int, ...], **params: Any) -> npt.NDArray[Any]:
        return self.build(_arange(in_shape), **params)


def _with_zeros(build: Callable[..., Any]) -> Callable[..., npt.NDArray[Any]]:
    """An index map whose new entries are zeros: built on ``arange + 1`` and shifted back."""

    def index_map(a: npt.NDArray[Any], **params: Any) -> npt.NDArray[Any]:
        return build(a + 1, **params) - 1

    return index_map


MOVES = {
    "flip": IndexMapMove("flip", lambda a, axes: np.flip(a, axes)),
    "roll": IndexMapMove("roll", lambda a, shift, axis: np.roll(a, shift, axis)),
    "tile": IndexMapMove("tile", lambda a, reps: np.tile(a, reps)),
    "repeat": IndexMapMove("repeat", lambda a, repeats, axis: np.repeat(a, repeats, axis)),
    "diagonal": IndexMapMove(
        "diagonal", lambda a, offset, axis1, axis2: np.diagonal(a, offset, axis1, axis2)
    ),
    "pad": IndexMapMove(
        "pad", lambda a, pad_width, mode: _with_zeros(np.pad)(a, pad_width=pad_width, mode=mode)
    ),
    "diag": IndexMapMove("diag", _with_zeros(lambda a, k: np.diag(a, k))),
    "gather": IndexMapMove("gather", lambda a, index: index.array),
}
TRANSPOSE, BROADCAST_TO, GETITEM = Transpose(), BroadcastTo(), GetItem()


class Reshape(Primitive):
    """A new per-sample shape of the same entries (row-major): Jacobian ``Identity``."""

    name = "reshape"

    def abstract(
        self, inputs: Sequence[Atom], shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], np.dtype[Any]]:
        if size_of(shape) != inputs[0].size:
            raise ValueError(f"reshape: cannot reshape a sample of shape {inputs[0].shape} into {shape}")
        return shape, inputs[0].dtype

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], shape: tuple[int, ...]) -> Any:
        x, b = values[0], batched[0]
        return x.reshape(((x.shape[0],) if b else ()) + tuple(shape))

    def jacobian(self, ctx: JacobianContext, i: int, shape: tuple[int, ...]) -> Jacobian:
        return Identity(ctx.out.size, ctx.batch, dtype=ctx.dtype, device=ctx.device)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, shape: tuple[int, ...]) -> Any:
        return lax.reshape(cotangent, lax.shape(inputs[0]))


RESHAPE = Reshape()


class ScatterAdd(Primitive):
    """``out.flat[index[r]] += g.flat[r]`` per sample, ``out`` of ``shape``: the transpose of
    a move (its reverse-mode rule), linear; its own transpose is the gather."""

    name = "scatter_add"

    def abstract(
        self, inputs: Sequence[Atom], index: IndexMap, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], np.dtype[Any]]:
        return tuple(shape), inputs[0].dtype

    def impl(
        self, xp: Any, values: Sequence[Any], batched: Sequence[bool], index: IndexMap, shape: tuple[int, ...]
    ) -> Any:
        g, b = values[0], batched[0]
        lead = g.shape[0] if b else 1
        flat_index = index.array.ravel()
        valid = flat_index >= 0
        g_flat = g.reshape(lead, flat_index.size)  # explicit: B may be 0
        if not valid.all():
            g_flat = g_flat[:, device_index(xp, np.flatnonzero(valid))]
        targets = flat_index[valid]
        out = xp.zeros((lead, size_of(shape)), dtype=g.dtype)
        if np.unique(targets).size == targets.size:
            out[:, device_index(xp, targets)] = g_flat
        else:
            xp.add.at(out.T, device_index(xp, targets), g_flat.T)
        return unlift(out.reshape((lead, *shape)), b)

    def jacobian(self, ctx: JacobianContext, i: int, index: IndexMap, shape: tuple[int, ...]) -> Jacobian:
        flat_index = index.array.ravel()
        rows = np.flatnonzero(flat_index >= 0)
        targets = flat_index[rows]
        order = np.argsort(targets, kind="stable")
        indptr = np.zeros(size_of(shape) + 1, dtype=np.int64)
        np.add.at(indptr, targets + 1, 1)
        np.cumsum(indptr, out=indptr)
        return jacobians.reduction(indptr, rows[order], ctx.inputs[0].size, ctx.batch, ctx.dtype, ctx.xp)

    def vjp(
        self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, index: IndexMap, shape: tuple[int, ...]
    ) -> Any:
        return lax.gather(cotangent, index.array)


SCATTER_ADD = ScatterAdd()


class Concatenate(Primitive):
    """Per-sample ``concatenate(operands, axis)``; the Jacobian w.r.t. each operand picks
    its block of rows (zero rows elsewhere)."""

    name = "concatenate"

    def abstract(self, inputs: Sequence[Atom], axis: int) -> tuple[tuple[int, ...], np.dtype[Any]]:
        shapes = [o.shape for o in inputs]
        first = shapes[0]
        for s in shapes[1:]:
            if len(s) != len(first) or any(a != b for k, (a, b) in enumerate(zip(s, first)) if k != axis):
                raise ValueError(f"concatenate: per-sample shapes {shapes} differ outside axis {axis}")
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes)
        dtypes = [np.empty((), o.dtype) for o in inputs]
        return tuple(out), np.result_type(*dtypes)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], axis: int) -> Any:
        lead = _lead(values, batched)
        rank = max(np.ndim(v) - b for v, b in zip(values, batched))
        parts = []
        for v, b in zip(values, batched):
            lifted = lift(xp, xp.asarray(v), b, rank)
            parts.append(xp.broadcast_to(lifted, (lead, *lifted.shape[1:])))
        return unlift(xp.concatenate(parts, axis=axis + 1), any(batched))

    @staticmethod
    def positions(shapes: Sequence[tuple[int, ...]], axis: int, i: int) -> np.ndarray:
        """The flat output position of every entry of operand ``i``."""
        maps, offset = [], 0
        for s in shapes:
            maps.append(_arange(s) + offset)
            offset += size_of(s)
        whole = np.concatenate(maps, axis=axis)
        start = sum(size_of(s) for s in shapes[:i])
        where = np.flatnonzero((whole.ravel() >= start) & (whole.ravel() < start + size_of(shapes[i])))
        out = np.empty(size_of(shapes[i]), dtype=np.int64)
        out[whole.ravel()[where] - start] = where
        return out.reshape(shapes[i])

    def jacobian(self, ctx: JacobianContext, i: int, axis: int) -> Jacobian:
        shapes = [o.shape for o in ctx.inputs]
        positions = self.positions(shapes, axis, i).ravel()
        index = np.full(ctx.out.size, -1, dtype=np.int64)
        index[positions] = np.arange(positions.size)
        return jacobians.selection(index, ctx.inputs[i].size, ctx.batch, ctx.dtype, ctx.xp)

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, axis: int) -> Any:
        shapes = [lax.shape(o) for o in inputs]
        return lax.gather(cotangent, self.positions(shapes, axis, i))


CONCATENATE = Concatenate()
