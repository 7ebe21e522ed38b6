"""What a primitive is, and the helpers every family of primitives shares.

A :class:`Primitive` is declared once, with its rules beside it, as JAX declares
``tanh_p`` with its JVP: every interpreter of a :class:`~batchjac.exact.ir.Program` reads
these rules and nothing else.

- ``abstract(inputs, **params) -> (shape, dtype)``: the per-sample shape and dtype of the
  result (tracing needs nothing more).
- ``impl(xp, values, batched, **params)``: the value, on whole arrays (``batched[i]`` says
  whether ``values[i]`` has the batch axis first; a shared one has the per-sample shape).
- ``local_jacobians(ctx, wrt, **params) -> (value, {i: J})``: the value and the structured
  local Jacobian ``(B, out_size, in_size)`` with respect to each input ``i`` in ``wrt``
  (``Diagonal`` for element-wise rules, ``Gather`` for moves, ``Shared``/``Kronecker`` for
  products with constants, ...), computed in one pass where that pays.
- ``vjp(cotangent, i, inputs, out, **params)``: the cotangent of input ``i`` written with
  traceable operations (:mod:`batchjac.exact.lax`), so that reverse mode is itself a
  program: it gives gradients, Hessians (the Jacobian of the gradient program) and nesting.

Per-sample semantics: shapes and axes in ``params`` are those of one sample; ``impl``
places the batch axis itself (see :func:`lift`).
"""

from __future__ import annotations

import functools
import hashlib
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from batchjac.core.arrays import device_of
from batchjac.exact.ir import Atom, Literal, Var
from batchjac.structured.base import Jacobian

REGISTRY: dict[str, "Primitive"] = {}


class Primitive:
    """A primitive operation; subclasses give its rules (see the module docstring)."""

    name: str = "?"
    differentiable: bool = True  # False: the result does not depend smoothly on the inputs

    def __init__(self, name: str | None = None):
        if name is not None:
            self.name = name
        if self.name in REGISTRY:
            raise ValueError(f"primitive {self.name!r} is declared twice")
        REGISTRY[self.name] = self

    # The rules take the static parameters by keyword (``**params``, as an Equation stores
    # them); each primitive names its own. The signatures below end in ``*args: Any,
    # **params: Any`` so that a rule naming its parameters is a valid override of them.

    def abstract(
        self, inputs: Sequence[Atom], *args: Any, **params: Any
    ) -> tuple[tuple[int, ...], np.dtype[Any]]:
        raise NotImplementedError(self.name)

    def impl(self, xp: Any, values: Sequence[Any], batched: Sequence[bool], *args: Any, **params: Any) -> Any:
        raise NotImplementedError(self.name)

    def jacobian(self, ctx: JacobianContext, i: int, *args: Any, **params: Any) -> Jacobian:
        raise NotImplementedError(f"{self.name}: no structured Jacobian rule")

    def local_jacobians(
        self, ctx: JacobianContext, wrt: Iterable[int], *args: Any, **params: Any
    ) -> tuple[Any, dict[int, Jacobian]]:
        value = self.impl(ctx.xp, ctx.values, ctx.batched, **params)
        ctx.value = value
        return value, {i: self.jacobian(ctx, i, **params) for i in wrt}

    def vjp(self, cotangent: Any, i: int, inputs: Sequence[Any], out: Any, *args: Any, **params: Any) -> Any:
        raise NotImplementedError(f"{self.name}: no reverse-mode rule (second derivatives and nesting)")

    # Steps: an equation's work specialised, once per program structure, to its operands'
    # avals, the namespace and the backend (the structured interpreter's schedule). A step
    # takes the operand values as a list; what the avals settle is not looked at again.

    def value_step(self, inputs: Sequence[Atom], out: Var, xp: Any, **params: Any) -> Any:
        """The value alone: a function ``values -> value`` for these avals on ``xp`` (a
        literal's value comes in ``values``: see :meth:`jacobian_step`). The default is
        :meth:`impl` with the parameters and batch flags bound."""
        impl, batched = self.impl, tuple(isinstance(o, Var) and o.batched for o in inputs)
        return lambda values: impl(xp, values, batched, **params)

    def jacobian_step(
        self, inputs: Sequence[Atom], out: Var, wanted: tuple[int, ...], xp: Any, ops: Any, **params: Any
    ) -> Any:
        """The value and the local Jacobians w.r.t. the operands ``wanted``: a function
        ``(values, batch, operands) -> (value, {i: J})`` for these avals, namespace and
        backend. ``operands`` are the equation's atoms in the program being run: a step is
        shared by every program of one structure, whose literals may hold other values (a
        literal's dtype is structure, its value is not), so a step reads literals from there
        or from ``values``, never from ``inputs``. The default is :meth:`local_jacobians`
        with a :class:`JacobianContext` per call."""
        local, batched, dtype = (
            self.local_jacobians,
            tuple(isinstance(o, Var) and o.batched for o in inputs),
            out.dtype,
        )

        def step(
            values: Sequence[Any], batch: int, operands: Sequence[Atom]
        ) -> tuple[Any, dict[int, Jacobian]]:
            return local(
                JacobianContext(xp, values, batched, operands, out, batch, dtype, ops), wanted, **params
            )

        return step

    def unit_partial(self, inputs: Sequence[Atom], out: Var, i: int, *args: Any, **params: Any) -> bool:
        """True when the local Jacobian w.r.t. input ``i`` is the identity whatever the values
        (``x + c`` w.r.t. ``x``): the structured interpreter then passes the operand's own
        edges on instead of multiplying by it. A structural fact (the answer may not depend
        on values: plans are cached by structure)."""
        return False

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"

    def __reduce__(self) -> tuple[Any, tuple[str]]:  # singletons: pickle by name (Dask ships programs)
        return (primitive_named, (self.name,))


def primitive_named(name: str) -> Primitive:
    """The primitive declared as ``name`` (how a pickled primitive comes back: by name, the
    registry's own object; a rule registered by ``bj.register_elementwise`` after import is
    declared on first use)."""
    if name not in REGISTRY:
        from batchjac.exact.primitives.elementwise import ensure_rule  # the family above: lazily

        return ensure_rule(name)
    return REGISTRY[name]


class JacobianContext:
    """What a local-Jacobian rule sees: the equation's input values and avals, the batch,
    the namespace, and (once computed) the value of the result."""

    __slots__ = ("xp", "values", "batched", "inputs", "out", "batch", "value", "dtype", "ops")

    def __init__(
        self,
        xp: Any,
        values: Sequence[Any],
        batched: Sequence[bool],
        inputs: Sequence[Atom],
        out: Var,
        batch: int,
        dtype: npt.DTypeLike,
        ops: Any = None,
    ):
        self.xp = xp
        self.values = values
        self.batched = batched
        self.inputs = inputs
        self.out = out
        self.batch = batch
        self.value: Any = None
        self.dtype = np.dtype(dtype)
        self.ops = ops  # the backend serving the call (its elementwise primitive, ...)

    @property
    def device(self) -> str:
        if self.xp is np:
            return "cpu"
        arrays = [v for v in self.values if hasattr(v, "shape")]
        return device_of(arrays[0]) if arrays else "cpu"

    def per_sample(self, i: int) -> Any:
        """Input ``i`` as a ``(B, *shape)`` array (a shared input broadcast, without a copy)."""
        v = self.values[i]
        shape = self.inputs[i].shape
        if self.batched[i]:
            return v
        return self.xp.broadcast_to(v, (self.batch, *shape))

    def flat(self, i: int) -> Any:
        """Input ``i`` as ``(B, size)``, batched or broadcast."""
        v = self.per_sample(i)
        return v.reshape(self.batch, self.inputs[i].size)

    def out_flat(self) -> Any:
        v = self.value
        if not self.out.batched:
            v = self.xp.broadcast_to(v, (self.batch, *self.out.shape))
        return v.reshape(self.batch, self.out.size)


# --------------------------------------------------------------------------------------
# Shapes and dtypes
# --------------------------------------------------------------------------------------


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    first = shapes[0]
    if all(s == first for s in shapes[1:]):
        return tuple(first)
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError as err:
        raise ValueError(
            f"operands could not be broadcast together with per-sample shapes {' '.join(map(str, shapes))}"
        ) from err


def result_dtype(inputs: Iterable[Atom], floating: bool = True) -> np.dtype[Any]:
    """NumPy's promotion of the operands (Python numbers weak); integers become float64
    when ``floating``."""
    inputs = tuple(inputs)
    first = inputs[0] if inputs else None
    if type(first) is Var and first.dtype.kind == "f":  # the common case: variables of one float dtype
        dtype = first.dtype
        if all(type(o) is Var and o.dtype == dtype for o in inputs):
            return dtype
    dtype = _promote(
        tuple(o.dtype for o in inputs if isinstance(o, Var)),
        tuple(type(o.value) for o in inputs if isinstance(o, Literal)),
    )
    if floating and dtype.kind in "biu":
        return np.dtype(np.float64)
    return dtype


@functools.lru_cache(maxsize=1024)
def _promote(dtypes: tuple[np.dtype[Any], ...], literal_types: tuple[type, ...]) -> np.dtype[Any]:
    arrays = [np.empty((), dtype=d) for d in dtypes]
    literals = [t(0) for t in literal_types]
    return np.result_type(*arrays, *literals) if arrays else np.result_type(*literals)


def lift(xp: Any, value: Any, batched: bool, rank: int) -> Any:
    """``value`` with a leading batch axis (length 1 when shared) and ``rank`` per-sample
    axes (ones inserted after the batch axis, as NumPy's right-aligned broadcasting would).

    >>> lift(np, np.ones((2, 3)), False, 3).shape
    (1, 1, 2, 3)
    """
    if isinstance(value, numbers.Number):
        return value
    shape = value.shape[1:] if batched else value.shape
    lead = value.shape[0] if batched else 1
    return value.reshape((lead,) + (1,) * (rank - len(shape)) + tuple(shape))


def unlift(value: Any, batched: bool) -> Any:
    """Drop the leading batch axis of a shared result (see :func:`lift`). A result of
    numbers only (nothing was lifted, e.g. two 0-d cotangents of a reverse sweep) has no
    such axis and stays as it is.

    >>> unlift(np.ones((1, 2, 3)), False).shape, unlift(np.float64(2.0), False)
    ((2, 3), np.float64(2.0))
    """
    if batched or np.ndim(value) == 0:
        return value
    return value[0, ...]


def size_of(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64))


# --------------------------------------------------------------------------------------
# Index maps: static, hashable integer arrays (the parameters of the moving primitives)
# --------------------------------------------------------------------------------------


class IndexMap:
    """A read-only integer array used as a static parameter: hashed by content.

    Entry ``-1`` means "no input" (a zero, e.g. the padding of ``pad``).
    """

    __slots__ = ("array", "_digest")

    def __init__(self, array: npt.ArrayLike):
        array = np.array(array, dtype=np.int64, order="C")  # a copy; 0-d stays 0-d
        array.setflags(write=False)
        self.array = array
        self._digest = hashlib.sha256(array.tobytes() + repr(array.shape).encode()).hexdigest()[:16]

    def structural_key(self) -> tuple[Any, ...]:
        return ("index", self.array.shape, self._digest)

    def describe(self) -> str:
        return f"<index {self.array.shape}>"

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IndexMap) and other._digest == self._digest

    def __repr__(self) -> str:
        return self.describe()


@functools.lru_cache(maxsize=256)
def injective(index: IndexMap) -> bool:
    """True when no input entry is picked twice (entries ``-1`` aside)."""
    valid = index.array[index.array >= 0]
    return bool(np.unique(valid).size == valid.size)
