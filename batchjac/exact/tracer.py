"""Tracing: running ``f`` on :class:`Tracer` objects records a :class:`~batchjac.exact.ir.Program`.

A :class:`Trace` is one recording. Its tracers carry no values, only the per-sample shape,
dtype and batch flag of their :class:`~batchjac.exact.ir.Var`: tracing ``f`` costs a few
microseconds per operation whatever the batch size, and the values are computed afterwards
by an interpreter of the program. Traces nest (``bj.jacobian`` inside ``f``, ``bj.grad``
inside ``bj.jacobian``): an operation on tracers of several traces records into the
innermost one, where tracers of the outer traces are constants.

:func:`bind` is the one door from the operations above to the primitives below: given
operands (tracers, arrays, numbers) it records an equation when any operand is a tracer and
computes the value at once otherwise (eager evaluation of ``bj.exp`` on a plain array).

This module knows nothing of NumPy's protocols or of the operators of a traced array: the
ops layer (:mod:`batchjac.exact.ops`) attaches them to :class:`Tracer` from above.

Batch modes: in ``"batched"`` mode (the default of ``bj.jacobian``) a tracer shows the
shape ``(B, *sample_shape)`` and ``f`` is written for the whole batch; in ``"per_sample"``
mode it shows the sample's shape and ``f`` is written for one sample, as for ``jax.vmap``.
"""

from __future__ import annotations

import contextvars
import linecache
import numbers
import os
import sys
import types
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from batchjac.core.arrays import namespace
from batchjac.core.errors import TraceError
from batchjac.exact.ir import Atom, Equation, Literal, Program, Var

if TYPE_CHECKING:
    from batchjac.exact.primitives.base import Primitive

BATCHED = "batched"
PER_SAMPLE = "per_sample"
MODES = (BATCHED, PER_SAMPLE)

_stack: contextvars.ContextVar[tuple[Trace, ...]] = contextvars.ContextVar("batchjac_traces", default=())


class Batched:
    """An eager (untraced) array that carries the batch axis first, as an operand of
    :func:`bind`; a bare array operand is shared by the batch."""

    __slots__ = ("array",)

    def __init__(self, array: Any):
        self.array = array


class Trace:
    """One recording of a function: its inputs, constants and equations so far."""

    def __init__(self, mode: str = BATCHED, batch: int | None = None):
        if mode not in MODES:
            raise ValueError(f"mode: expected 'batched' or 'per_sample', got {mode!r}")
        self.mode = mode
        self.batch = batch
        self.level = len(_stack.get()) + 1
        self.inputs: list[Var] = []
        self.consts: list[Var] = []
        self.const_values: list[Any] = []
        self.equations: list[Equation] = []
        self._const_ids: dict[tuple[int, bool], tuple[Var, Any]] = {}
        self._count = 0
        self._token: contextvars.Token[tuple[Trace, ...]] | None = None

    # -- the active-trace stack -----------------------------------------------------------
    def __enter__(self) -> Trace:
        self._token = _stack.set(_stack.get() + (self,))
        return self

    def __exit__(self, *exc: object) -> None:  # exceptions propagate
        if self._token is not None:
            _stack.reset(self._token)

    @property
    def active(self) -> bool:
        return self in _stack.get()

    # -- variables ------------------------------------------------------------------------
    def _var(self, shape: Iterable[int], dtype: DTypeLike, batched: bool) -> Var:
        var = Var(self._count, shape, dtype, batched)
        self._count += 1
        return var

    def new_input(self, shape: Iterable[int], dtype: DTypeLike, batched: bool = True) -> Tracer:
        """A traced argument of per-sample ``shape``."""
        var = self._var(shape, dtype, batched)
        self.inputs.append(var)
        return Tracer(var, self)

    def new_const(self, value: Any, batched: bool) -> Tracer:
        """A traced argument that is not differentiated (per-sample data in per-sample mode)."""
        return Tracer(self.const_var(value, batched), self)

    def const_var(self, value: Any, batched: bool) -> Var:
        """The constant operand ``value`` (an array, or a tracer of an outer trace) as a
        variable of this trace; the same object used twice is one constant."""
        key = (id(value), batched)
        found = self._const_ids.get(key)
        if found is not None:
            return found[0]
        if isinstance(value, Tracer):
            shape, dtype = value.node.shape, value.node.dtype
        else:
            shape, dtype = (value.shape[1:] if batched else value.shape), value.dtype
            if batched and self.batch is not None and value.shape[0] != self.batch:
                raise ValueError(
                    f"a per-sample constant has {value.shape[0]} samples but the traced inputs have {self.batch}"
                )
        var = self._var(shape, dtype, batched)
        self.consts.append(var)
        self.const_values.append(value)
        self._const_ids[key] = (var, value)  # the value is kept alive, so its id stays unique
        return var

    def record(self, primitive: Primitive, inputs: Sequence[Atom], params: dict[str, Any]) -> Tracer:
        shape, dtype = primitive.abstract(inputs, **params)
        batched = False
        for o in inputs:
            if type(o) is Var and o.batched:
                batched = True
                break
        out = Var(self._count, shape, dtype, batched)
        self._count += 1
        self.equations.append(Equation(primitive, tuple(inputs), tuple(sorted(params.items())) if params else (), out))
        return Tracer(out, self)

    def program(self, outputs: Iterable[Any], input_names: Sequence[str | None] | None = None) -> Program:
        """The recorded program returning ``outputs`` (tracers of this trace, or constants)."""
        out_vars: list[Var] = []
        for o in outputs:
            if isinstance(o, Tracer) and o.recording is self:
                out_vars.append(o.node)
            else:
                raise TraceError(
                    "f returned an array that does not depend on its traced inputs through batchjac's "
                    "array functions or NumPy functions on traced arrays"
                )
        return Program(
            self.inputs, self.consts, self.const_values, self.equations, out_vars,
            input_names=input_names, mode=self.mode,
        )  # fmt: skip


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NUMPY = os.path.dirname(np.__file__)


def where_in_f() -> str:
    """`` (at file:line: source)`` of the innermost caller outside batchjac and NumPy: where in
    the user's ``f`` a call left the trace (for the error and for ``auto``'s warning)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith((_PACKAGE, _NUMPY)) and not filename.startswith("<__array_function__"):
            source = linecache.getline(filename, frame.f_lineno).strip()
            return (
                f" (at {os.path.basename(filename)}:{frame.f_lineno}: {source})"
                if source
                else f" (at {filename}:{frame.f_lineno})"
            )
        frame = frame.f_back
    return ""


class Tracer:
    """An array under tracing: a :class:`~batchjac.exact.ir.Var` of a :class:`Trace`.

    Its ``shape`` is ``(B, *sample_shape)`` in batched mode and the sample's shape in
    per-sample mode. Operators, array methods and NumPy's protocols are attached by
    :mod:`batchjac.exact.ops`; what cannot trace raises :class:`~batchjac.TraceError`.
    """

    __slots__ = ("node", "recording")

    def __init__(self, var: Var, trace: Trace):
        self.node = var
        self.recording = trace

    @property
    def shape(self) -> tuple[Any, ...]:  # the batch is None while tracing without a known batch
        if self.recording.mode == BATCHED and self.node.batched:
            return (self.recording.batch, *self.node.shape)
        return self.node.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.node.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d traced array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Traced({self.node.type_text()})"

    # -- what cannot trace ------------------------------------------------------------------
    def __bool__(self) -> bool:
        raise TraceError(
            "the truth value of a traced array is not known while tracing (an `if` or `while` on it); "
            "use bj.where (or numpy.where) for branches" + where_in_f()
        )

    def __float__(self) -> float:
        raise TraceError(
            "a traced array cannot be converted to a Python number (float(), int(), .item())" + where_in_f()
        )

    __int__ = __index__ = __complex__ = __float__

    def __iter__(self) -> Iterator[Any]:
        raise TraceError(
            "iterating over a traced array (a for loop, sum(t), list(t), unpacking) is not traced: in "
            "batched mode it would run over the samples; index it (t[:, i]) or use bj.sum / numpy.sum"
            + where_in_f()
        )

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TraceError(
            "a traced array cannot be written into (t[...] = v): build a new array instead, e.g. with "
            "numpy.where, numpy.concatenate or bj.where" + where_in_f()
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        raise TraceError(
            "a traced array was converted to a NumPy array (numpy.asarray, numpy.array or a function "
            "without a rule); f must use batchjac's or NumPy's traceable functions to be traced"
            + where_in_f()
        )

    __hash__ = None  # type: ignore[assignment]  # compared element-wise, like an array: unhashable

    if TYPE_CHECKING:  # attached by batchjac.exact.ops.array_methods (the ops layer, above)

        def __getattr__(self, name: str) -> Any: ...  # the array methods: t.sum(), t.T, ...
        def __getitem__(self, key: Any) -> Any: ...
        def __eq__(self, other: Any) -> Any: ...  # element-wise, as arrays compare
        def __ne__(self, other: Any) -> Any: ...
        def __add__(self, other: Any) -> Any: ...
        def __radd__(self, other: Any) -> Any: ...
        def __sub__(self, other: Any) -> Any: ...
        def __rsub__(self, other: Any) -> Any: ...
        def __mul__(self, other: Any) -> Any: ...
        def __rmul__(self, other: Any) -> Any: ...
        def __truediv__(self, other: Any) -> Any: ...
        def __rtruediv__(self, other: Any) -> Any: ...
        def __pow__(self, other: Any) -> Any: ...
        def __rpow__(self, other: Any) -> Any: ...
        def __matmul__(self, other: Any) -> Any: ...
        def __rmatmul__(self, other: Any) -> Any: ...
        def __gt__(self, other: Any) -> Any: ...
        def __ge__(self, other: Any) -> Any: ...
        def __lt__(self, other: Any) -> Any: ...
        def __le__(self, other: Any) -> Any: ...
        def __and__(self, other: Any) -> Any: ...
        def __rand__(self, other: Any) -> Any: ...
        def __or__(self, other: Any) -> Any: ...
        def __ror__(self, other: Any) -> Any: ...
        def __xor__(self, other: Any) -> Any: ...
        def __neg__(self) -> Any: ...
        def __pos__(self) -> Any: ...
        def __abs__(self) -> Any: ...
        def __invert__(self) -> Any: ...


def current_trace() -> Trace | None:
    """The innermost active trace, or None."""
    stack = _stack.get()
    return stack[-1] if stack else None


def trace_of(*values: Any) -> Trace | None:
    """The innermost trace among the tracers in ``values`` (None if there are none)."""
    found = None
    for v in values:
        if isinstance(v, Tracer) and (found is None or v.recording.level > found.level):
            found = v.recording
    return found


def is_traced(value: object) -> bool:
    return isinstance(value, Tracer)


_LEAKED = (
    "a traced array from an earlier call was used (it leaked out of f, e.g. into a global or a "
    "closure); traced arrays only live while f is being traced: pass the value as an argument"
)


def bind(primitive: Primitive, operands: Sequence[Any], params: dict[str, Any] | None = None) -> Any:
    """Apply ``primitive`` to ``operands`` with static ``params``.

    ``operands`` are tracers, :class:`Batched` arrays (the batch axis first), plain arrays
    (shared by the batch, in the per-sample shape) or Python numbers. With a tracer among
    them the equation is recorded in the innermost trace (and a tracer returned); otherwise
    the value is computed now and returned as a :class:`Batched` array when any operand is
    batched, a plain array otherwise.
    """
    params = params or {}
    trace = None  # the innermost trace among the operands (trace_of, inline: called per operation)
    for o in operands:
        if isinstance(o, Tracer) and (trace is None or o.recording.level > trace.level):
            trace = o.recording
    if trace is None:
        return _eager(primitive, operands, params)
    stack = _stack.get()
    inputs: list[Atom] = []
    if trace not in stack:
        raise TraceError(_LEAKED)
    for o in operands:
        if isinstance(o, Tracer):
            if o.recording is trace:
                inputs.append(o.node)
                continue
            if o.recording not in stack:
                raise TraceError(_LEAKED)
            inputs.append(trace.const_var(o, o.node.batched))
        elif type(o) is np.ndarray:  # a constant shared by the batch (the common case, first)
            inputs.append(trace.const_var(o, False))
        elif isinstance(o, Batched):
            inputs.append(trace.const_var(o.array, True))
        elif isinstance(o, np.generic):  # NumPy scalars are typed (NEP 50): a 0-d constant
            inputs.append(trace.const_var(np.asarray(o), False))
        elif isinstance(o, (numbers.Number, np.bool_)):
            inputs.append(Literal(o))
        else:
            inputs.append(trace.const_var(o, False))
    return trace.record(primitive, inputs, params)


def _eager(primitive: Primitive, operands: Sequence[Any], params: dict[str, Any]) -> Any:
    values: list[Any] = []
    batched: list[bool] = []
    for o in operands:
        if isinstance(o, Batched):
            values.append(o.array)
            batched.append(True)
        else:
            values.append(o)
            batched.append(False)
    arrays = [v for v in values if not isinstance(v, (numbers.Number, np.bool_))]
    xp = namespace(*arrays) if arrays else np
    out = primitive.impl(xp, values, tuple(batched), **params)
    return Batched(out) if any(batched) else out
