"""From a user's call to a primitive's operands: batch modes, axes and constants.

The public array functions accept what NumPy accepts, and mean what NumPy means on the
arrays ``f`` sees. In *batched* mode (the default, and every call on plain arrays) those
are whole batches: axis 0 is the batch, a reduction's axes are counted with it, and a
constant array of the operation's full rank whose leading length is ``B`` holds one entry
per sample. In *per-sample* mode (``per_sample=True``) ``f`` sees one sample and a constant
is shared by the batch. This module turns both into the per-sample form of the program:
operands (tracers, :class:`~batchjac.exact.tracer.Batched` arrays, shared arrays,
numbers) and per-sample axes; what would mix samples raises.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from batchjac.core.arrays import as_array
from batchjac.core.errors import TraceError
from batchjac.exact.tracer import BATCHED, PER_SAMPLE, Batched, Tracer, trace_of


class Call:
    """The batch mode and size of one call of a public array function."""

    __slots__ = ("recording", "mode", "batch")

    def __init__(self, *args: Any):
        flat: list[Any] = []
        for a in args:
            if isinstance(a, (list, tuple)):
                flat.extend(a)
            else:
                flat.append(a)
        self.recording = trace_of(*flat)
        self.mode = self.recording.mode if self.recording is not None else BATCHED
        self.batch = self.recording.batch if self.recording is not None else None

    @property
    def per_sample(self) -> bool:
        return self.mode == PER_SAMPLE

    @property
    def traced(self) -> bool:
        return self.recording is not None


def is_number(a: Any) -> bool:
    if type(a) is np.ndarray or isinstance(a, Tracer):
        return False  # the common cases, before the (slower) abstract-class check
    return isinstance(a, (numbers.Number, np.bool_)) and not isinstance(a, np.ndarray)


def as_operand_array(a: Any, name: str) -> Any:
    """A non-traced operand as an array (float or integer or boolean data)."""
    a = as_array(a, name)
    if a.dtype.kind not in "fiub":
        raise TypeError(
            f"{name}: expected real numbers (floating, integer or boolean data), got dtype {a.dtype}"
        )
    return a


def full_ndim(a: Any) -> int:
    """The number of axes ``f`` sees on ``a``."""
    if isinstance(a, Tracer):
        return len(a.shape)
    return np.ndim(a)


def main(x: Any, call: Call, name: str = "x") -> tuple[Any, tuple[int, ...]]:
    """The operand an operation acts on (``bj.sum(x)``, ``bj.exp(x)``): a tracer as it is;
    a plain array carries the batch axis in batched mode and is shared in per-sample mode.
    Returns ``(operand, per-sample shape)``."""
    if isinstance(x, Tracer):
        return x, x.node.shape
    if isinstance(x, Batched):
        return x, tuple(x.array.shape[1:])
    x = as_operand_array(x, name)
    if call.per_sample:
        return x, tuple(x.shape)
    if x.ndim == 0:
        raise ValueError(f"{name}: expected an array with a batch axis (B, ...), got a 0-d array")
    return Batched(x), tuple(x.shape[1:])


def unwrap(result: Any) -> Any:
    """A result for the caller: tracers stay, eager results lose their batch wrapper."""
    return result.array if isinstance(result, Batched) else result


def elementwise_operands(args: Sequence[Any], call: Call, what: str) -> list[Any]:
    """Operands of an element-wise (broadcasting) operation.

    Batched mode: the operation's full rank ``R`` is the largest number of axes among the
    operands; a traced operand must have all ``R`` (else its batch axis would meet another
    axis: mixing samples); a constant of rank ``R`` holds one entry per sample when its
    leading length is ``B`` and is shared when it is 1; lower-rank constants are shared.
    Without any tracer (plain arrays) the values follow NumPy's broadcasting exactly.
    """
    operands: list[Any] = []
    if not call.traced:
        for i, a in enumerate(args):
            operands.append(
                a if is_number(a) or isinstance(a, Batched) else as_operand_array(a, f"{what} operand {i}")
            )
        return operands
    if call.per_sample:
        for i, a in enumerate(args):
            operands.append(
                a if isinstance(a, Tracer) or is_number(a) else as_operand_array(a, f"{what} operand {i}")
            )
        return operands
    arrays = [
        a if isinstance(a, Tracer) or is_number(a) else as_operand_array(a, f"{what} operand {i}")
        for i, a in enumerate(args)
    ]
    rank = max(full_ndim(a) for a in arrays if not is_number(a))
    batch = call.batch
    for i, a in enumerate(arrays):
        if is_number(a):
            operands.append(a)
        elif isinstance(a, Tracer):
            if a.node.batched and len(a.shape) != rank:
                raise ValueError(
                    f"{what}: a traced operand of shape {a.shape} broadcasts against an operand with {rank} axes "
                    "along its batch axis, which would mix samples; give it the same number of axes (e.g. x[:, None])"
                )
            operands.append(a)
        elif a.ndim == rank and rank > 0:
            if a.shape[0] == batch and batch != 1:
                operands.append(Batched(a))
            elif a.shape[0] == 1:
                operands.append(a[0])
            else:
                raise ValueError(
                    f"{what}: operand {i} of shape {tuple(a.shape)} does not broadcast against the batch: "
                    f"its leading axis meets the batch axis (B = {batch}) and must be {batch} or 1"
                )
        else:
            operands.append(a)
    return operands


def sample_axes(
    axis: Any, ndim: int, call: Call, what: str, *, none_means_all: bool = True
) -> tuple[int, ...]:
    """Per-sample axes of ``axis`` given against ``ndim`` axes that ``f`` sees.

    Batched mode: axis 0 is the batch axis (refused: it would mix samples) and the others
    count down by one; ``None`` means every per-sample axis for batchjac's own functions
    (``none_means_all``) and is refused for NumPy's (whose ``None`` includes the batch).
    """
    batched = not call.per_sample
    if axis is None:
        if batched and not none_means_all:
            raise TraceError(
                f"{what} with axis=None would reduce over the batch axis too; give the axes of one sample "
                "(e.g. axis=-1), or write f for one sample with per_sample=True"
            )
        return tuple(range(ndim - 1 if batched else ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out: list[int] = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"{what}: axis must be an integer or a tuple of integers, got {axis!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{what}: axis {a} is out of range for an array of {ndim} dimensions")
        a %= ndim
        if batched:
            if a == 0:
                raise ValueError(
                    f"{what}: axis 0 is the batch axis; acting along it would mix samples "
                    "(write f for one sample with per_sample=True to count axes from the sample)"
                )
            a -= 1
        out.append(a)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def sample_axis(axis: Any, ndim: int, call: Call, what: str) -> int:
    return sample_axes(axis, ndim, call, what)[0]


def new_axis(axis: Any, result_ndim: int, call: Call, what: str) -> int:
    """The per-sample position of a new axis given against ``result_ndim`` axes (stack,
    expand_dims)."""
    return sample_axis(axis, result_ndim, call, what)


def per_sample_shape(shape: Any, call: Call, what: str, batch_size: int | None = None) -> tuple[int, ...]:
    """A full shape given by ``f`` (``reshape``, ``broadcast_to``) as a per-sample shape: in
    batched mode its first entry must be ``B`` (or -1 for reshape)."""
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    if call.per_sample:
        return shape
    batch = call.batch if batch_size is None else batch_size
    if not shape or shape[0] not in (batch, -1):
        raise ValueError(
            f"{what}: the new shape must keep the batch axis first ({batch}, ...), got {shape}; "
            "write f for one sample with per_sample=True to give per-sample shapes"
        )
    return shape[1:]
