"""The program a traced function records: variables, equations, a printable listing, a hash.

A :class:`Program` is what ``bj.trace(f, x)`` returns and what every interpreter of
``batchjac.exact`` reads (values only, values and structured Jacobians, gradients, fused
kernels, sparsity). It is written *per sample*: each :class:`Var` has the shape of one
sample and a flag ``batched`` saying whether it carries the batch axis (an input of ``f``,
or anything computed from one) or is shared by the batch (a weight matrix); the batch size
``B`` appears nowhere, so one program serves every batch size.

Constants are inputs of the program (``Program.consts``), not baked into it: the values of
a weight matrix travel beside the program (``Program.const_values``), and the structural
hash (``Program.hash``) sees only their shapes and dtypes. Python numbers in ``f``
(``2.0 * x``) are :class:`Literal` operands, whose values the hash ignores too; static
parameters of a primitive (axes, shapes, an exponent ``p`` of ``x ** p``) are part of the
structure and of the hash.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import DTypeLike

if TYPE_CHECKING:  # the primitives import this module
    from batchjac.exact.primitives.base import Primitive


_DTYPE_CODES: dict[Any, str] = {}  # np.dtype -> its .str (made once per dtype, not per variable)


class Var:
    """One value of a program: per-sample ``shape``, ``dtype``, ``batched`` flag.

    ``index`` numbers the variables of a program in the order they were created (inputs,
    then constants, then each equation's result); names in listings come from it.
    """

    __slots__ = ("index", "shape", "dtype", "batched", "size", "aval", "__weakref__")

    def __init__(self, index: int, shape: Iterable[Any], dtype: DTypeLike, batched: bool):
        self.index = index
        self.shape = shape = tuple(map(int, shape))
        # tracing makes one per operation: a known dtype's code is looked up, not made
        known: np.dtype[Any] | None = dtype if isinstance(dtype, np.dtype) else None
        code = _DTYPE_CODES.get(known) if known is not None else None
        if known is None or code is None:
            known = np.dtype(dtype)
            code = _DTYPE_CODES.setdefault(known, known.str)
        self.dtype = known
        self.batched = batched = batched is True or bool(batched)
        self.size = math.prod(shape)  # entries per sample
        # what the structural key records of a variable (see Program.key)
        self.aval = (index, shape, code, batched)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def type_text(self) -> str:
        """``f32[B,64]`` for a batched float32 vector of 64 per sample, ``f64[3,3]`` shared."""
        dims = (["B"] if self.batched else []) + [str(s) for s in self.shape]
        return f"{_short_dtype(self.dtype)}[{','.join(dims)}]"

    def __repr__(self) -> str:
        return f"Var({self.index}, {self.type_text()})"


class Literal:
    """A Python number used as an operand (``2.0`` in ``2.0 * x``); weakly typed as in NumPy."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    @property
    def shape(self) -> tuple[int, ...]:
        return ()

    @property
    def size(self) -> int:
        return 1

    @property
    def batched(self) -> bool:
        return False

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(type(self.value)) if not isinstance(self.value, bool) else np.dtype(bool)

    def __repr__(self) -> str:
        return f"Literal({self.value!r})"


Atom = Union[Var, Literal]  # an operand of an equation


class Equation:
    """``out = primitive(*inputs, **params)``: one step of a program (read-only by
    convention; a plain class with slots: tracing makes one per operation)."""

    __slots__ = ("primitive", "inputs", "params", "out")

    def __init__(
        self, primitive: Primitive, inputs: tuple[Atom, ...], params: tuple[tuple[str, Any], ...], out: Var
    ):
        self.primitive = primitive
        self.inputs = inputs
        self.params = params  # sorted (name, value) pairs; values hashable
        self.out = out

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def __repr__(self) -> str:
        return f"Equation({self.primitive.name}, {self.inputs!r}, {self.params!r}, {self.out!r})"


def _short_dtype(dtype: DTypeLike) -> str:
    dtype = np.dtype(dtype)
    return {"f": "f", "i": "i", "u": "u", "b": "bool", "c": "c"}.get(dtype.kind, dtype.kind) + (
        "" if dtype.kind == "b" else str(8 * dtype.itemsize)
    )


def _param_text(value: Any) -> str:
    described = getattr(value, "describe", None)
    if callable(described):
        return str(described())
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, np.dtype):
        return str(value)
    return repr(value)


class StructuralKey(tuple):  # type: ignore[type-arg]
    """:attr:`Program.key`: a tuple that computes its hash once (several caches look it up
    per call) and is interned, so that a look-up finds an equal key by identity."""

    _hash: int

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # hashes differ between processes
        return (_structural_key, tuple(self))


_INTERNED: dict[StructuralKey, StructuralKey] = {}
_INTERNED_SIZE = 4096


def _structural_key(*parts: Any) -> StructuralKey:
    key = StructuralKey(parts)
    key._hash = tuple.__hash__(key)
    found = _INTERNED.get(key)
    if found is not None:
        return found
    if len(_INTERNED) >= _INTERNED_SIZE:
        _INTERNED.pop(next(iter(_INTERNED)))
    _INTERNED[key] = key
    return key


def _ref(operand: Atom) -> Any:
    """An operand in the structural key: a variable's index, a literal's dtype (not its value)."""
    return operand.index if type(operand) is Var else ("literal", operand.dtype.str)


def _param_key(value: Any) -> Any:
    """A hashable, process-independent description of a static parameter."""
    key = getattr(value, "structural_key", None)
    if callable(key):
        return key()
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (tuple, list)):
        return tuple(_param_key(v) for v in value)
    return value


class Program:
    """A traced function: ``inputs`` (the differentiated arguments and other traced ones),
    ``consts`` (arrays ``f`` used, as inputs whose values are ``const_values``),
    ``equations`` and ``outputs``.

    ``print(program)`` gives a listing, one line per equation with per-sample shapes
    (``B`` marks the batch axis); ``program.hash`` is structural: equal for two traces of
    one function on different weights or batch sizes, different for a different graph.

    >>> import numpy as np, batchjac as bj
    >>> W = np.ones((4, 3))
    >>> program = bj.trace(lambda x: bj.tanh(bj.linear(x, W)), np.ones((2, 3)))
    >>> len(program.equations), program.outputs[0].type_text()
    (2, 'f64[B,4]')
    """

    def __init__(
        self,
        inputs: Iterable[Var],
        consts: Iterable[Var],
        const_values: Iterable[Any],
        equations: Iterable[Equation],
        outputs: Iterable[Var],
        *,
        input_names: Sequence[str | None] | None = None,
        mode: str = "batched",
    ):
        self.inputs = tuple(inputs)
        self.consts = tuple(consts)
        self.const_values = tuple(const_values)
        self.equations = tuple(equations)
        self.outputs = tuple(outputs)
        self.input_names = tuple(input_names) if input_names is not None else None
        self.mode = mode
        self._key: tuple[Any, ...] | None = None
        self._digest: str | None = None

    # -- structure ------------------------------------------------------------------------
    @property
    def key(self) -> tuple[Any, ...]:
        """The structure as a tuple (primitives, wiring, static parameters, per-sample shapes
        and dtypes; not constant values, literal values or the batch size): equal tuples are
        equal structures. In-process caches (assembly plans, lowerings, kernels found before)
        are keyed by it, a dictionary look-up hashing it in C; :attr:`hash` digests it."""
        if self._key is None:
            self._key = _structural_key(
                tuple(v.aval for v in self.inputs),
                tuple(v.aval for v in self.consts),
                tuple(
                    (eq.primitive.name, tuple(map(_ref, eq.inputs)), _param_key(eq.params) if eq.params else (), eq.out.aval)
                    for eq in self.equations
                ),
                tuple(v.index for v in self.outputs),
            )  # fmt: skip
        return self._key

    @property
    def hash(self) -> str:
        """A structural digest (hex) of :attr:`key`: primitives, wiring, static parameters,
        per-sample shapes and dtypes; not constant values, literal values or the batch size.
        Stable across processes (it keys the on-disk kernel cache)."""
        if self._digest is None:
            self._digest = hashlib.sha256(repr(self.key).encode()).hexdigest()[:32]
        return self._digest

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Program) and self.key == other.key

    # -- listing --------------------------------------------------------------------------
    def _names(self) -> dict[Var, str]:
        names: dict[Var, str] = {}
        for i, v in enumerate(self.inputs):
            given = self.input_names[i] if self.input_names and i < len(self.input_names) else None
            names[v] = given or f"x{i}"
        for i, v in enumerate(self.consts):
            names[v] = f"c{i}"
        for i, eq in enumerate(self.equations):
            names.setdefault(eq.out, f"v{i + 1}")
        return names

    def __str__(self) -> str:
        names = self._names()

        def show(o: Atom) -> str:
            return repr(o.value) if isinstance(o, Literal) else names[o]

        head = ", ".join(f"{names[v]}: {v.type_text()}" for v in self.inputs)
        lines = [f"program({head})"]
        if self.consts:
            lines.append("  consts " + ", ".join(f"{names[v]}: {v.type_text()}" for v in self.consts))
        for eq in self.equations:
            params = ", ".join(f"{k}={_param_text(v)}" for k, v in eq.params)
            call = ", ".join(show(o) for o in eq.inputs) + (f"; {params}" if params else "")
            lines.append(f"  {names[eq.out]}: {eq.out.type_text()} = {eq.primitive.name}({call})")
        lines.append("  return " + ", ".join(show(v) for v in self.outputs))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<batchjac Program {self.hash[:12]}: {len(self.inputs)} input(s), {len(self.equations)} equation(s)>"

    # -- analysis -------------------------------------------------------------------------
    def last_uses(self) -> dict[Var, int]:
        """``{var: index of the last equation reading it}`` (outputs: ``len(equations)``)."""
        last: dict[Var, int] = {}
        for i, eq in enumerate(self.equations):
            for o in eq.inputs:
                if isinstance(o, Var):
                    last[o] = i
        for v in self.outputs:
            last[v] = len(self.equations)
        return last

    def active(self, wrt: Iterable[Var] | None = None) -> set[Var]:
        """The variables that depend on ``wrt`` (default: all inputs) through differentiable
        primitives: those whose derivative is not identically zero."""
        active = set(self.inputs if wrt is None else wrt)
        for eq in self.equations:
            if (
                eq.primitive.differentiable
                and eq.out.dtype.kind == "f"
                and any(o in active for o in eq.inputs if isinstance(o, Var))
            ):
                active.add(eq.out)
        return active
