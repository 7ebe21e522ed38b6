"""Lowering a program to scalar code: every per-sample entry of every variable a local scalar.

The result is a :class:`Tape`: a list of :class:`Node` objects, each a few lines of Python
that define some entries (``v12_3 = tanh(v11_3)``) with the *structural* partial derivative
of each defined entry with respect to each entry it reads (``(v12_3, v11_3, "1 - y*y")``).
Forward and reverse mode are generated from the same tape (:mod:`batchjac.exact.fuse.codegen`),
and the static sparsity of tangents and adjoints follows from which partials exist.

Entries are *references*: the name of a local (``x0_3``, ``v7_0``), or a constant's text
(``f64(0.0)``, a padding zero). Moves (transpose, indexing, broadcast, reshape, concatenate,
cumsum's first entry) define no code at all: their entries are references to their input's
entries, through each primitive's own index map (``Move.index``, ``Concatenate.positions``).
Input entries, constant entries and literals are *loads* from the kernel's array arguments
(``x0[b, 3]``, ``c1[5]``, ``lits[2]``): literal values travel in ``lits``, never in the code,
because the program's hash, which keys the kernel cache, ignores them.

In *flat* mode (an element-wise program, :func:`elementwise_program`) every variable is one
scalar: the code is the per-element body of one loop over all ``B * n`` entries.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchjac.exact.fuse.scalar import (
    MINUS_ONE,
    ONE,
    Unsupported,
    cast,
    constant,
    fill,
    function_name,
    rule_code,
)
from batchjac.exact.ir import Literal, Program, Var
from batchjac.exact.primitives.base import size_of
from batchjac.exact.primitives.elementwise import Boolean, Convert, ElementwisePrimitive, Select
from batchjac.exact.primitives.jacobians import broadcast_index
from batchjac.exact.primitives.linalg import (
    Det,
    Einsum,
    Inv,
    LogAbsDet,
    MatMul,
    SignDet,
    SoftmaxFamily,
    Solve,
    _matrix_shapes,
)
from batchjac.exact.primitives.moves import Concatenate, Move, Reshape, ScatterAdd
from batchjac.exact.primitives.reductions import (
    ArgChooser,
    CumSum,
    LogSumExp,
    ReduceChooser,
    ReduceProd,
    ReduceSum,
    reduction_pattern,
)

# Sums longer than this are split over temporaries (a long `a + b + ...` nests deeply in
# Python's parser and in numba's IR).
SUM_CHUNK = 32
# Square matrices (det, inv, solve) up to this order are compiled (a loop per sample).
MAX_MATRIX_ORDER = 8

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_ENTRY = re.compile(r"^(v|x|c|t|m|s|d|e|p|q|n|w|A|V|C|g|cv)\d")  # names of entries and temporaries
_COMPARISONS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}


@dataclass
class Node:
    """Lines defining the entries ``outs``; ``partials`` are ``(out, in, expression)`` with
    ``expression`` :data:`ONE`, :data:`MINUS_ONE` or Python text, valid after ``lines``
    and ``dlines`` (lines only the derivatives need)."""

    outs: tuple
    lines: list
    reads: frozenset
    partials: list = field(default_factory=list)
    dlines: list = field(default_factory=list)
    dreads: frozenset = frozenset()
    work: int = 0  # operations in the loops of ``lines`` (a looped product, an LU)


@dataclass
class Load:
    """Entry ``index`` of kernel argument ``array`` (batched: one row per sample)."""

    array: str
    index: int
    batched: bool
    dtype: np.dtype


@dataclass
class Tape:
    """A program lowered to scalar code for the Jacobian of ``output`` w.r.t. ``wrt``."""

    nodes: list
    loads: dict  # name -> Load
    seeds: dict  # name of an entry of a differentiated input -> its column
    outputs: list  # the output's entries (references)
    wrt_sizes: list  # entries per differentiated input (columns, in order)
    arrays: list  # (argument name, "input" | "const", position, Var) for each array argument used
    literal_count: int
    output: Var
    flat: bool
    helpers: set
    direct_arrays: set  # kernel arguments read by index in loops (no loads)
    partial_count: int
    equation_partials: dict  # equation number -> its partials that differ between samples

    @property
    def columns(self) -> int:
        return sum(self.wrt_sizes)

    @property
    def dtype(self) -> np.dtype:
        return self.output.dtype


def is_name(ref: str) -> bool:
    return ref.isidentifier()


def literal_operands(program: Program) -> list:
    """Every literal operand of ``program`` in equation order: ``lits`` holds their values
    in this order (the same walk at compile time and at call time)."""
    return [
        (k, i)
        for k, eq in enumerate(program.equations)
        for i, o in enumerate(eq.inputs)
        if isinstance(o, Literal)
    ]


def needed_equations(program: Program, output: Var) -> list:
    """Indices of the equations ``output`` depends on, in program order."""
    needed, wanted = [], {output}
    for k in range(len(program.equations) - 1, -1, -1):
        eq = program.equations[k]
        if eq.out in wanted:
            needed.append(k)
            wanted.update(o for o in eq.inputs if isinstance(o, Var))
    return needed[::-1]


# --------------------------------------------------------------------------------------
# Element-wise programs
# --------------------------------------------------------------------------------------

_ELEMENTWISE_KINDS = (ElementwisePrimitive, Select, Boolean, Convert, Reshape)


def elementwise_program(program: Program, wrt: Sequence[Var]) -> str | None:
    """None when the Jacobian of ``program`` (output 0) w.r.t. ``wrt`` is diagonal and one
    flat loop over the entries computes it: element-wise primitives (and reshapes) only,
    every variable of the output's size (or a scalar broadcast to it), every differentiated
    input batched and of the output's shape. Otherwise the reason it is not."""
    output = program.outputs[0]
    n = output.size
    if n <= 1:
        return "the output has at most one entry per sample"
    for v in wrt:
        if v.shape != output.shape or not v.batched:
            return f"a differentiated input of shape {v.shape} differs from the output's {output.shape}"
    for k in needed_equations(program, output):
        eq = program.equations[k]
        if not isinstance(eq.primitive, _ELEMENTWISE_KINDS):
            return f"{eq.primitive.name} is not element-wise"
        for o in (*eq.inputs, eq.out):
            if not isinstance(o, Var) or o.size == 1:
                continue
            if o.size != n:
                return f"{eq.primitive.name} has an operand of {o.size} entries, the output {n}"
            if isinstance(eq.primitive, ElementwisePrimitive | Select | Boolean) and o is not eq.out:
                if not np.array_equal(broadcast_index(o.shape, eq.out.shape), np.arange(n)):
                    return f"{eq.primitive.name} broadcasts an operand of shape {o.shape} to {eq.out.shape}"
    return None


# --------------------------------------------------------------------------------------
# Lowering
# --------------------------------------------------------------------------------------


class Lowering:
    """Builds the :class:`Tape` of ``program``'s output 0 w.r.t. ``wrt`` (program inputs)."""

    def __init__(
        self, program: Program, wrt: Sequence[Var], *, flat: bool = False, max_partials: int | None = None
    ) -> None:
        self.program = program
        self.wrt = list(wrt)
        self.flat = flat
        self.max_partials = max_partials
        self.nodes: list[Node] = []
        self.loads: dict[str, Load] = {}
        self.seeds: dict[str, int] = {}
        self.env: dict[Var, list] = {}
        self.helpers: set = set()
        self.partial_count = 0
        self.equation_partials: dict = {}
        self.expressions: dict = {}  # (expression, dtype) -> the entry holding it (common subexpressions)
        self._equation = -1
        self._fresh = itertools.count()
        self.literal_slot = {key: j for j, key in enumerate(literal_operands(program))}
        self.arrays: list[Any] = []
        self.direct_arrays: set = set()  # arrays the code reads by index (a looped product), not by loads
        offset = 0
        columns = {}
        for v in self.wrt:
            columns[v] = offset
            offset += self.size(v)
        for i, v in enumerate(program.inputs):
            self._array_var(f"x{i}", "input", i, v, columns.get(v))
        for j, v in enumerate(program.consts):
            self._array_var(f"c{j}", "const", j, v, None)

    # -- variables and references ------------------------------------------------------
    def shape(self, var: Var) -> tuple[int, ...]:
        return () if self.flat else var.shape

    def size(self, var: Var) -> int:
        return 1 if self.flat else var.size

    def _array_var(self, array: str, kind: str, position: int, var: Var, column: Any) -> None:
        if var.dtype.kind not in "fiub":
            raise Unsupported(f"{kind} {position} has dtype {var.dtype}")
        names = [f"{array}_{k}" for k in range(self.size(var))]
        for k, name in enumerate(names):
            self.loads[name] = Load(array, k, var.batched, var.dtype)
            if column is not None:
                self.seeds[name] = column + k
        self.env[var] = names
        self.arrays.append((array, kind, position, var))

    def fresh(self, prefix: str = "t") -> str:
        return f"{prefix}{next(self._fresh)}"

    def entry(self, var: Var, k: int) -> str:
        return f"v{var.index}_{k}"

    def operand(self, k_eq: int, eq: Any, i: int, k: int, dtype: Any) -> tuple[str, str | None, str | None]:
        """``(text, differentiable name or None, name read or None)`` of entry ``k`` of
        operand ``i`` of equation ``eq`` (number ``k_eq``), as ``dtype``."""
        o = eq.inputs[i]
        name: str | None
        if isinstance(o, Literal):
            name = f"L{self.literal_slot[(k_eq, i)]}"
            if name not in self.loads:
                self.loads[name] = Load("lits", self.literal_slot[(k_eq, i)], False, np.dtype(np.float64))
            dtype = np.dtype(dtype)
            text = (
                f"({name} != 0.0)"
                if dtype.kind == "b"
                else name
                if dtype == np.float64
                else f"{cast(dtype)}({name})"
            )
            return text, None, name
        ref = self.env[o][k]
        name = ref if is_name(ref) else None
        differentiable = name if name is not None and (name not in self.loads or name in self.seeds) else None
        return convert(ref, o.dtype, dtype), differentiable, name

    def node(
        self,
        eq: Any,
        outs: Sequence[str],
        lines: Sequence[str],
        reads: Iterable[Any],
        partials: Sequence[Any] = (),
        dlines: Sequence[str] = (),
        dreads: Iterable[Any] = (),
        work: int = 0,
    ) -> list[Any]:
        """Add a node; returns the references of ``outs``: for a one-line node whose
        expression was computed before, the earlier entry (and no node is added)."""
        if len(outs) == 1 and len(lines) == 1:
            expression = lines[0].split(" = ", 1)[1]
            known = self.expressions.get((expression, eq.out.dtype.str))
            if known is not None:
                return [known]
            self.expressions[(expression, eq.out.dtype.str)] = outs[0]
        differentiable = eq.primitive.differentiable and eq.out.dtype.kind == "f"
        partials = [p for p in partials if p[1] is not None] if differentiable else []
        self.partial_count += len(partials)
        per_sample = sum(1 for p in partials if not self._shared(p[2]))
        self.equation_partials[self._equation] = self.equation_partials.get(self._equation, 0) + per_sample
        if self.max_partials is not None and self.partial_count > self.max_partials:
            raise Unsupported(
                f"size limit: more than {self.max_partials} local partial derivatives per sample "
                f"(reached at {eq.primitive.name} {eq.out.type_text()})"
            )
        self.nodes.append(
            Node(
                tuple(outs),
                list(lines),
                frozenset(r for r in reads if r),
                partials,
                list(dlines),
                frozenset(r for r in dreads if r) if partials else frozenset(),
                work,
            )  # fmt: skip
        )
        return list(outs)

    def _shared(self, partial: str) -> bool:
        """True when a partial derivative is the same for every sample (it reads shared
        constants and literals only): the chain stores such a local Jacobian once."""
        if partial in (ONE, MINUS_ONE):
            return True
        arrays = {array: var.batched for array, _, _, var in self.arrays}
        for name in _IDENTIFIER.findall(partial):
            load = self.loads.get(name)
            if name in arrays:
                if arrays[name]:
                    return False
            elif (load is not None and load.batched) or (load is None and _ENTRY.match(name)):
                return False
        return True

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Tape:
        output = self.program.outputs[0]
        for k in needed_equations(self.program, output):
            eq = self.program.equations[k]
            if eq.out.dtype.kind not in "fiub":
                raise Unsupported(f"{eq.primitive.name} gives dtype {eq.out.dtype}")
            lower = _LOWERINGS.get(type(eq.primitive)) or next(
                (f for kind, f in _LOWERINGS.items() if isinstance(eq.primitive, kind)), None
            )
            if lower is None:
                raise Unsupported(f"{eq.primitive.name} has no fused rule")
            self._equation = k
            self.env[eq.out] = lower(self, k, eq)
        return Tape(
            nodes=self.nodes, loads=self.loads, seeds=self.seeds, outputs=list(self.env[output]),
            wrt_sizes=[self.size(v) for v in self.wrt], arrays=self.arrays,
            literal_count=len(self.literal_slot), output=output, flat=self.flat, helpers=self.helpers,
            direct_arrays=self.direct_arrays,
            partial_count=self.partial_count, equation_partials=self.equation_partials,
        )  # fmt: skip


def convert(ref: str, source: Any, target: Any) -> str:
    """``ref`` (of dtype ``source``) as ``target``."""
    source, target = np.dtype(source), np.dtype(target)
    if source == target:
        return ref
    if target.kind == "b":
        return f"({ref} != 0)"
    return f"{cast(target)}({ref})"


def sum_text(terms: Sequence[Any], dtype: Any) -> str:
    """``a + b + ...`` (a typed zero for no terms)."""
    return " + ".join(terms) if terms else constant(0, dtype)


def chunked_sum(low: Lowering, target: str, terms: list[Any], dtype: Any) -> list[str]:
    """Lines assigning the sum of ``terms`` to ``target``, in chunks of :data:`SUM_CHUNK`."""
    if len(terms) <= SUM_CHUNK:
        return [f"{target} = {sum_text(terms, dtype)}"]
    lines, partial = [], None
    for start in range(0, len(terms), SUM_CHUNK):
        chunk = terms[start : start + SUM_CHUNK]
        name = target if start + SUM_CHUNK >= len(terms) else low.fresh("s")
        lines.append(f"{name} = {' + '.join(([partial] if partial else []) + chunk)}")
        partial = name
    return lines


def product_text(factors: list[Any], dtype: Any) -> str:
    return " * ".join(factors) if factors else constant(1, dtype)


# --------------------------------------------------------------------------------------
# Element-wise rules, select, comparisons, conversion
# --------------------------------------------------------------------------------------


def _operand_indices(low: Lowering, eq: Any) -> list[Any]:
    out_shape = low.shape(eq.out)
    return [None if isinstance(o, Literal) else broadcast_index(low.shape(o), out_shape) for o in eq.inputs]


def lower_elementwise(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    value, partials = rule_code(eq.primitive.name, dtype.str, eq.params)
    indices = _operand_indices(low, eq)
    names = ("x",) if len(eq.inputs) == 1 else ("u", "v")
    refs = []
    for r in range(low.size(eq.out)):
        args = [
            low.operand(k_eq, eq, i, 0 if idx is None else int(idx[r]), dtype)
            for i, idx in enumerate(indices)
        ]
        out = low.entry(eq.out, r)
        mapping = {n: a[0] for n, a in zip(names, args)}
        reads = [a[2] for a in args]
        node_partials = []
        for (_, name, _), partial in zip(args, partials):
            node_partials.append(
                (out, name, partial if partial in (ONE, MINUS_ONE) else fill(partial, {**mapping, "y": out}))
            )
        refs += low.node(
            eq, [out], [f"{out} = {fill(value, mapping)}"], reads, node_partials, dreads=[*reads, out]
        )
    return refs


def lower_select(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    indices = _operand_indices(low, eq)
    one, zero = constant(1, dtype), constant(0, dtype)
    refs = []
    for r in range(low.size(eq.out)):
        c, a, b = (
            low.operand(k_eq, eq, i, 0 if idx is None else int(idx[r]), np.bool_ if i == 0 else dtype)
            for i, idx in enumerate(indices)
        )
        out = low.entry(eq.out, r)
        partials = [
            (out, a[1], f"({one} if {c[0]} else {zero})"),
            (out, b[1], f"({zero} if {c[0]} else {one})"),
        ]
        reads = [c[2], a[2], b[2]]
        refs += low.node(
            eq, [out], [f"{out} = ({a[0]} if {c[0]} else {b[0]})"], reads, partials, dreads=reads
        )
    return refs


def lower_boolean(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    name = eq.primitive.name
    operands = [o for o in eq.inputs if isinstance(o, Var)]
    dtype = np.result_type(*(o.dtype for o in operands)) if operands else np.dtype(np.float64)
    indices = _operand_indices(low, eq)
    refs = []
    for r in range(low.size(eq.out)):
        args = [
            low.operand(k_eq, eq, i, 0 if idx is None else int(idx[r]), dtype)
            for i, idx in enumerate(indices)
        ]
        t = [a[0] for a in args]
        if name in _COMPARISONS:
            expression = f"({t[0]} {_COMPARISONS[name]} {t[1]})"
        elif name == "logical_and":
            expression = f"(bool({t[0]}) and bool({t[1]}))"
        elif name == "logical_or":
            expression = f"(bool({t[0]}) or bool({t[1]}))"
        elif name == "logical_xor":
            expression = f"(bool({t[0]}) != bool({t[1]}))"
        elif name == "logical_not":
            expression = f"(not bool({t[0]}))"
        elif name == "isnan":
            expression = f"({t[0]} != {t[0]})"
        elif name in ("isinf", "isfinite"):
            expression = f"{name}({t[0]})" if dtype.kind == "f" else ("False" if name == "isinf" else "True")
        else:
            raise Unsupported(f"{name} has no fused rule")
        out = low.entry(eq.out, r)
        refs += low.node(eq, [out], [f"{out} = {expression}"], [a[2] for a in args])
    return refs


def lower_convert(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    source, target = eq.inputs[0].dtype, eq.out.dtype
    if source == target:
        return list(low.env[eq.inputs[0]])
    refs = []
    for r, ref in enumerate(low.env[eq.inputs[0]]):
        out = low.entry(eq.out, r)
        name = ref if is_name(ref) else None
        if source.kind == "b" and target.kind == "f":
            text = f"({constant(1, target)} if {ref} else {constant(0, target)})"
        else:
            text = convert(ref, source, target)
        refs += low.node(
            eq, [out], [f"{out} = {text}"], [name], [(out, name, ONE)] if source.kind == "f" else []
        )
    return refs


# --------------------------------------------------------------------------------------
# Moves, reshape, concatenate, scatter-add
# --------------------------------------------------------------------------------------


def lower_move(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    source = low.env[eq.inputs[0]]
    index = eq.primitive.index(eq.inputs[0].shape, eq.kwargs).ravel()
    zero = constant(0, eq.out.dtype)
    return [source[i] if i >= 0 else zero for i in index.tolist()]


def lower_reshape(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    return list(low.env[eq.inputs[0]])


def lower_concatenate(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    shapes = [o.shape for o in eq.inputs]
    refs = [None] * eq.out.size
    for i, o in enumerate(eq.inputs):
        positions = Concatenate.positions(shapes, eq.kwargs["axis"], i).ravel()
        for k, position in enumerate(positions.tolist()):
            ref = low.env[o][k]
            if o.dtype != eq.out.dtype:
                out = low.fresh("cv")
                name = ref if is_name(ref) else None
                (ref,) = low.node(
                    eq, [out], [f"{out} = {convert(ref, o.dtype, eq.out.dtype)}"], [name], [(out, name, ONE)]
                )
            refs[position] = ref
    return refs


def _sums(low: Lowering, eq: Any, groups: Sequence[Sequence[Any]], source: Any) -> list[Any]:
    """Output ``r`` is the sum of ``source`` entries ``groups[r]``: a reference when one."""
    dtype = eq.out.dtype
    refs = []
    for r, members in enumerate(groups):
        terms = [source[i] for i in members]
        if len(terms) == 1:
            refs.append(terms[0])
            continue
        out = low.entry(eq.out, r)
        names = [t if is_name(t) else None for t in terms]
        refs += low.node(
            eq, [out], chunked_sum(low, out, terms, dtype), names, [(out, n, ONE) for n in names]
        )
    return refs


def lower_scatter_add(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    index = eq.kwargs["index"].array.ravel()
    groups: list[list[Any]] = [[] for _ in range(size_of(eq.kwargs["shape"]))]
    for position, target in enumerate(index.tolist()):
        if target >= 0:
            groups[target].append(position)
    return _sums(low, eq, groups, low.env[eq.inputs[0]])


# --------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------


def _reduction_groups(var: Var, axes: Sequence[int]) -> list[Any]:
    indptr, indices = reduction_pattern(var.shape, tuple(axes))
    return [indices[indptr[r] : indptr[r + 1]].tolist() for r in range(len(indptr) - 1)]


def _running_choice(low: Lowering, terms: list, greater: bool) -> tuple[Any, ...]:
    """Lines computing the NaN-propagating max (or min) of ``terms``; ``(lines, name)``."""
    op = ">" if greater else "<"
    lines, best = [], low.fresh("m")
    lines.append(f"{best} = {terms[0]}")
    for t in terms[1:]:
        nxt = low.fresh("m")
        lines.append(f"{nxt} = ({t} if ({t} {op} {best} or {t} != {t}) else {best})")
        best = nxt
    return lines, best


def _checked_groups(eq: Any, groups: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    if any(len(g) == 0 for g in groups):
        raise Unsupported(f"{eq.primitive.name} over an empty axis")
    return groups


def lower_reduce_sum(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    return _sums(low, eq, _reduction_groups(eq.inputs[0], eq.kwargs["axes"]), low.env[eq.inputs[0]])


def lower_reduce_choice(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    source = low.env[eq.inputs[0]]
    greater = eq.primitive.name == "reduce_max"
    refs = []
    for r, members in enumerate(_checked_groups(eq, _reduction_groups(eq.inputs[0], eq.kwargs["axes"]))):
        terms = [source[i] for i in members]
        out = low.entry(eq.out, r)
        lines, best = _running_choice(low, terms, greater)
        lines.append(f"{out} = {best}")
        count, inverse = low.fresh("n"), low.fresh("w")
        one, zero = constant(1, dtype), constant(0, dtype)
        dlines = [
            f"{count} = {' + '.join(f'({one} if {t} == {out} else {zero})' for t in terms)}",
            f"{inverse} = {one} / {count}",
        ]
        names = [t if is_name(t) else None for t in terms]
        partials = [(out, n, f"({inverse} if {t} == {out} else {zero})") for n, t in zip(names, terms)]
        low.node(eq, [out], lines, names, partials, dlines, [*names, out])
        refs.append(out)
    return refs


def lower_reduce_prod(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    source = low.env[eq.inputs[0]]
    refs = []
    for r, members in enumerate(_reduction_groups(eq.inputs[0], eq.kwargs["axes"])):
        terms = [source[i] for i in members]
        out = low.entry(eq.out, r)
        names = [t if is_name(t) else None for t in terms]
        # the product of the others, exact with zeros: exclusive prefix and suffix products
        prefix: list[Any] = []
        suffix: list[Any] = [None] * len(terms)
        dlines: list[Any] = []
        running = None
        for t in terms:
            prefix.append(running)
            name = low.fresh("p")
            dlines.append(f"{name} = {t if running is None else f'{running} * {t}'}")
            running = name
        running = None
        for j in range(len(terms) - 1, -1, -1):
            suffix[j] = running
            name = low.fresh("q")
            dlines.append(f"{name} = {terms[j] if running is None else f'{running} * {terms[j]}'}")
            running = name
        partials = [
            (out, n, product_text([f for f in (prefix[j], suffix[j]) if f], dtype))
            for j, n in enumerate(names)
        ]
        refs += low.node(eq, [out], [f"{out} = {product_text(terms, dtype)}"], names, partials, dlines, names)
    return refs


def lower_logsumexp(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    exp = function_name("exp", dtype)
    source = low.env[eq.inputs[0]]
    refs = []
    for r, members in enumerate(_checked_groups(eq, _reduction_groups(eq.inputs[0], eq.kwargs["axes"]))):
        terms = [source[i] for i in members]
        out = low.entry(eq.out, r)
        lines, top = _running_choice(low, terms, True)
        shift, total = low.fresh("m"), low.fresh("s")
        lines.append(f"{shift} = ({top} if isfinite({top}) else {constant(0, dtype)})")
        lines += chunked_sum(low, total, [f"{exp}({t} - {shift})" for t in terms], dtype)
        lines.append(f"{out} = log({total}) + {shift}")
        names = [t if is_name(t) else None for t in terms]
        partials = [(out, n, f"{exp}({t} - {out})") for n, t in zip(names, terms)]
        low.node(eq, [out], lines, names, partials, dreads=[*names, out])
        refs.append(out)
    return refs


def lower_cumsum(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    source = low.env[eq.inputs[0]]
    shape = eq.inputs[0].shape
    axis = eq.kwargs["axis"]
    n = shape[axis]
    lines = np.moveaxis(np.arange(size_of(shape)).reshape(shape), axis, -1).reshape(-1, n)
    refs = [None] * size_of(shape)
    for line in lines.tolist():
        running = None
        for position in line:
            term = source[position]
            if running is None:
                refs[position] = running = term
                continue
            out = low.entry(eq.out, position)
            names = [running if is_name(running) else None, term if is_name(term) else None]
            (refs[position],) = low.node(
                eq, [out], [f"{out} = {running} + {term}"], names, [(out, m, ONE) for m in names]
            )
            running = refs[position]
    return refs


def lower_argchoice(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    source = low.env[eq.inputs[0]]
    axis = eq.kwargs["axis"]
    greater = eq.primitive.name == "argmax"
    op = ">" if greater else "<"
    refs = []
    for r, members in enumerate(_checked_groups(eq, _reduction_groups(eq.inputs[0], (axis,)))):
        terms = [source[i] for i in members]
        out = low.entry(eq.out, r)
        best, where = low.fresh("m"), low.fresh("i")
        lines = [f"{best} = {terms[0]}", f"{where} = {constant(0, np.int64)}"]
        for j, t in enumerate(terms[1:], start=1):
            update, nb, nw = low.fresh("u"), low.fresh("m"), low.fresh("i")
            # the first maximum; the first NaN wins over everything, as in NumPy
            lines.append(f"{update} = ({t} {op} {best}) or ({t} != {t} and {best} == {best})")
            lines.append(f"{nb} = ({t} if {update} else {best})")
            lines.append(f"{nw} = ({constant(j, np.int64)} if {update} else {where})")
            best, where = nb, nw
        lines.append(f"{out} = {where}")
        low.node(eq, [out], lines, [t for t in terms if is_name(t)])
        refs.append(out)
    return refs


# --------------------------------------------------------------------------------------
# Products, softmax
# --------------------------------------------------------------------------------------


def _stack_map(stack_shape: tuple[int, ...], out_stack: tuple[int, ...]) -> np.ndarray:
    """The flat stack index of an operand for every flat stack index of the result."""
    return np.broadcast_to(
        np.arange(size_of(stack_shape)).reshape(stack_shape) if stack_shape else np.zeros((), dtype=np.int64),
        out_stack,
    ).ravel()


def _product_node(low: Lowering, eq: Any, out: Any, terms: Sequence[Any], dtype: Any) -> Any:
    """``out = sum over terms of the product of each term's factors``; ``terms`` are lists of
    operand triples ``(text, name, read)``; partials by the product rule. Returns the
    reference of ``out``."""
    lines = chunked_sum(low, out, [product_text([f[0] for f in term], dtype) for term in terms], dtype)
    partials: dict = {}
    reads = set()
    for term in terms:
        for j, (_, name, read) in enumerate(term):
            reads.add(read)
            if name is None:
                continue
            others = [f[0] for p, f in enumerate(term) if p != j]
            partials.setdefault(name, []).append(product_text(others, dtype) if others else ONE)
    merged = []
    for name, parts in partials.items():
        if len(parts) == 1:
            merged.append((out, name, parts[0]))
        else:
            merged.append(
                (out, name, "(" + " + ".join(constant(1, dtype) if p == ONE else p for p in parts) + ")")
            )
    (ref,) = low.node(eq, [out], lines, reads, merged, dreads=reads)
    return ref


# A product with a constant matrix of at least this many multiply-adds per sample is a loop
# over the constant (its entries read in place) instead of unrolled code.
LOOPED_PRODUCT = 256


def lower_matmul(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    a, b = eq.inputs
    sa2, sb2, out_shape, _ = _matrix_shapes(a.shape, b.shape)
    p, q, r = sa2[-2], sa2[-1], sb2[-1]
    stack = out_shape[:-2]
    looped = _looped_product(low, k_eq, eq, sa2, sb2)
    if looped is not None:
        return looped
    a_stack, b_stack = _stack_map(sa2[:-2], stack), _stack_map(sb2[:-2], stack)
    refs: list[Any] = []
    for s in range(size_of(stack)):
        for i in range(p):
            for k in range(r):
                out = low.entry(eq.out, len(refs))
                terms = [
                    [
                        low.operand(k_eq, eq, 0, (int(a_stack[s]) * p + i) * q + j, dtype),
                        low.operand(k_eq, eq, 1, (int(b_stack[s]) * q + j) * r + k, dtype),
                    ]
                    for j in range(q)
                ]
                refs.append(_product_node(low, eq, out, terms, dtype))
    return refs


def _looped_product(
    low: Lowering, k_eq: int, eq: Any, sa2: tuple[int, ...], sb2: tuple[int, ...]
) -> list[Any] | None:
    """``X @ K`` or ``K @ X`` with ``K`` a constant matrix of the program (shared by the
    batch) as loops that read ``K`` in place: ``O(p + q + r)`` statements for ``p q r``
    multiply-adds. The partial derivative of an output entry w.r.t. an entry of ``X`` is an
    entry of ``K`` (``c0[k]``): tangents through it cost no statements. None when the
    product is small or neither operand is such a constant."""
    a, b = eq.inputs
    if len(sa2) != 2 or len(sb2) != 2 or sa2[0] * sa2[1] * sb2[1] < LOOPED_PRODUCT or low.flat:
        return None
    arrays = {var: array for array, kind, _, var in low.arrays if kind == "const" and not var.batched}
    side = 1 if arrays.get(b) else 0 if arrays.get(a) else None
    if side is None or eq.out.dtype.kind != "f":
        return None
    dtype = eq.out.dtype
    constant_var = (a, b)[side]
    K = arrays[constant_var]
    low.direct_arrays.add(K)
    p, q, r = sa2[0], sa2[1], sb2[1]
    other = 1 - side
    other_shape = (p, q) if side == 1 else (q, r)
    size = other_shape[0] * other_shape[1]
    operands = [low.operand(k_eq, eq, other, k, dtype) for k in range(size)]
    X, V, w = low.fresh("X"), low.fresh("V"), low.fresh("w")
    i, j, k = low.fresh("i"), low.fresh("j"), low.fresh("k")
    lines = [f"{X} = LOCAL_ARRAY(({size},), {cast(dtype)})"]
    lines += [f"{X}[{t}] = {o[0]}" for t, o in enumerate(operands)]
    lines.append(f"{V} = LOCAL_ARRAY(({p * r},), {cast(dtype)})")
    row: Any  # a code string here, a row number below
    # row i of the result accumulates w * (row j of the right factor): the inner loop runs
    # along contiguous rows without a reduction, so LLVM vectorises it
    if side == 1:  # X (p, q) @ K (q, r)
        weight, row = f"{X}[{i} * {q} + {j}]", f"{K}[{j} * {r} + {k}]"
    else:  # K (p, q) @ X (q, r)
        weight, row = f"{K}[{i} * {q} + {j}]", f"{X}[{j} * {r} + {k}]"
    lines += [
        f"for {i} in range({p * r}):",
        f"    {V}[{i}] = {constant(0, dtype)}",
        f"for {i} in range({p}):",
        f"    for {j} in range({q}):",
        f"        {w} = {weight}",
        f"        for {k} in range({r}):",
        f"            {V}[{i} * {r} + {k}] += {w} * {row}",
    ]
    outs = [low.entry(eq.out, t) for t in range(p * r)]
    lines += [f"{o} = {V}[{t}]" for t, o in enumerate(outs)]
    partials = []
    for row in range(p):
        for col in range(r):
            out = outs[row * r + col]
            for inner in range(q):
                if side == 1:
                    source, element = operands[row * q + inner][1], inner * r + col
                else:
                    source, element = operands[inner * r + col][1], row * q + inner
                partials.append((out, source, f"{K}[{element}]"))
    reads = [o[2] for o in operands]
    low.node(eq, outs, lines, reads, partials, dreads=reads, work=p * q * r)
    return outs


def lower_einsum(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    ins, out_letters = eq.kwargs["spec"].split("->")
    ins = ins.split(",")
    sizes: dict = {}
    for letters, o in zip(ins, eq.inputs):
        for c, d in zip(letters, o.shape):
            sizes[c] = max(sizes.get(c, 1), d)
    summed = [c for c in dict.fromkeys("".join(ins)) if c not in out_letters]
    refs: list[Any] = []
    for out_index in itertools.product(*(range(sizes[c]) for c in out_letters)):
        out = low.entry(eq.out, len(refs))
        terms = []
        for sum_index in itertools.product(*(range(sizes[c]) for c in summed)):
            where = {**dict(zip(out_letters, out_index)), **dict(zip(summed, sum_index))}
            term = []
            for i, (letters, o) in enumerate(zip(ins, eq.inputs)):
                position = tuple(where[c] if d != 1 else 0 for c, d in zip(letters, o.shape))
                flat = int(np.ravel_multi_index(position, o.shape)) if o.shape else 0
                term.append(low.operand(k_eq, eq, i, flat, dtype))
            terms.append(term)
        refs.append(_product_node(low, eq, out, terms, dtype))
    return refs


def lower_softmax(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    exp = function_name("exp", dtype)
    log_form = eq.primitive.log
    shape = eq.inputs[0].shape
    axis = eq.kwargs["axis"]
    n = shape[axis]
    source = low.env[eq.inputs[0]]
    refs: list[Any] = [None] * size_of(shape)
    one = constant(1, dtype)
    for line in np.moveaxis(np.arange(size_of(shape)).reshape(shape), axis, -1).reshape(-1, n).tolist():
        terms = [source[position] for position in line]
        outs = [low.entry(eq.out, position) for position in line]
        lines, top = _running_choice(low, terms, True)
        shifted = [low.fresh("d") for _ in terms]
        lines += [f"{d} = {t} - {top}" for d, t in zip(shifted, terms)]
        total = low.fresh("s")
        if log_form:
            lines += chunked_sum(low, total, [f"{exp}({d})" for d in shifted], dtype)
            log_total = low.fresh("l")
            lines.append(f"{log_total} = log({total})")
            lines += [f"{o} = {d} - {log_total}" for o, d in zip(outs, shifted)]
        else:
            exps = [low.fresh("e") for _ in terms]
            lines += [f"{e} = {exp}({d})" for e, d in zip(exps, shifted)]
            lines += chunked_sum(low, total, exps, dtype)
            lines += [f"{o} = {e} / {total}" for o, e in zip(outs, exps)]
        names = [t if is_name(t) else None for t in terms]
        partials, dlines = [], []
        if log_form:
            probabilities = [low.fresh("p") for _ in outs]
            dlines = [f"{p} = {exp}({o})" for p, o in zip(probabilities, outs)]
            for i, o in enumerate(outs):
                for j, name in enumerate(names):
                    partials.append(
                        (o, name, f"{one} - {probabilities[j]}" if i == j else f"-{probabilities[j]}")
                    )
        else:
            for i, o in enumerate(outs):
                for j, name in enumerate(names):
                    partials.append((o, name, f"{o} - {o} * {o}" if i == j else f"-({o} * {outs[j]})"))
        low.node(eq, outs, lines, names, partials, dlines, [*names, *outs])
        for position, o in zip(line, outs):
            refs[position] = o
    return refs


# --------------------------------------------------------------------------------------
# Square matrices: a partial-pivoting LU per matrix, in a loop (helpers in codegen)
# --------------------------------------------------------------------------------------


def _order(eq: Any, var: Var) -> int:
    n = var.shape[-1]
    if n > MAX_MATRIX_ORDER:
        raise Unsupported(
            f"{eq.primitive.name} of {n} x {n} matrices (fused up to {MAX_MATRIX_ORDER} x {MAX_MATRIX_ORDER})"
        )
    if n == 0:
        raise Unsupported(f"{eq.primitive.name} of empty matrices")
    return n


def _matrix_lines(
    low: Lowering, entries: Sequence[Any], n: int, dtype: Any
) -> tuple[list[str], str, str, str]:
    """Lines copying ``entries`` (row-major ``n x n``) into a new local matrix and factoring
    it: ``(lines, matrix, permutation, sign)``."""
    A, P, sign = low.fresh("A"), low.fresh("P"), low.fresh("g")
    lines = [f"{A} = LOCAL_ARRAY(({n}, {n}), {cast(dtype)})", f"{P} = LOCAL_ARRAY(({n},), i64)"]
    lines += [f"{A}[{k // n}, {k % n}] = {e}" for k, e in enumerate(entries)]
    lines.append(f"{sign} = lu_factor({A}, {n}, {P})")
    low.helpers.add("lu")
    return lines, A, P, sign


def _inverse_lines(low: Lowering, A: Any, P: Any, n: int, dtype: Any) -> tuple[str, list[str]]:
    inverse, rhs, solution = low.fresh("V"), low.fresh("r"), low.fresh("z")
    low.helpers.add("lu")
    return inverse, [
        f"{inverse} = LOCAL_ARRAY(({n}, {n}), {cast(dtype)})",
        f"{rhs} = LOCAL_ARRAY(({n},), {cast(dtype)})",
        f"{solution} = LOCAL_ARRAY(({n},), {cast(dtype)})",
        f"lu_inverse({A}, {P}, {n}, {inverse}, {rhs}, {solution})",
    ]


def lower_square(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    x = eq.inputs[0]
    n = _order(eq, x)
    name = eq.primitive.name
    refs = []
    for s in range(size_of(x.shape[:-2])):
        base = s * n * n
        operands = [low.operand(k_eq, eq, 0, base + k, dtype) for k in range(n * n)]
        texts = [o[0] for o in operands]
        names = [o[1] for o in operands]
        reads = [o[2] for o in operands]
        lines, A, P, sign = _matrix_lines(low, texts, n, dtype)
        diagonal = [f"{A}[{k}, {k}]" for k in range(n)]
        if name == "inv":
            inverse, inv_lines = _inverse_lines(low, A, P, n, dtype)
            lines += inv_lines
            outs = [low.entry(eq.out, base + k) for k in range(n * n)]
            lines += [f"{o} = {inverse}[{k // n}, {k % n}]" for k, o in enumerate(outs)]
            partials = [
                (outs[i * n + j], names[k * n + l], f"-({outs[i * n + k]} * {outs[l * n + j]})")
                for i in range(n) for j in range(n) for k in range(n) for l in range(n)
            ]  # fmt: skip
            low.node(eq, outs, lines, reads, partials, dreads=outs, work=2 * n**3)
            refs += outs
            continue
        out = low.entry(eq.out, s)
        dlines = []
        if name == "det":
            lines.append(f"{out} = {cast(dtype)}({' * '.join([sign, *diagonal])})")
            cofactor, minor, permutation = low.fresh("C"), low.fresh("M"), low.fresh("Q")
            m = max(n - 1, 1)
            dlines = [
                f"{cofactor} = LOCAL_ARRAY(({n}, {n}), {cast(dtype)})",
                f"{minor} = LOCAL_ARRAY(({m}, {m}), {cast(dtype)})",
                f"{permutation} = LOCAL_ARRAY(({m},), i64)",
            ]
            original = low.fresh("A")
            dlines.append(f"{original} = LOCAL_ARRAY(({n}, {n}), {cast(dtype)})")
            dlines += [f"{original}[{k // n}, {k % n}] = {t}" for k, t in enumerate(texts)]
            dlines.append(f"cofactors({original}, {n}, {cofactor}, {minor}, {permutation})")
            partials = [(out, names[k], f"{cofactor}[{k // n}, {k % n}]") for k in range(n * n)]
        elif name == "logabsdet":
            lines.append(f"{out} = {cast(dtype)}({' + '.join(f'log(abs({d}))' for d in diagonal)})")
            inverse, dlines = _inverse_lines(low, A, P, n, dtype)
            partials = [(out, names[k], f"{inverse}[{k % n}, {k // n}]") for k in range(n * n)]
        else:  # sign_det
            signs = [f"(1.0 if {d} > 0.0 else (-1.0 if {d} < 0.0 else 0.0))" for d in diagonal]
            lines.append(f"{out} = {cast(dtype)}({' * '.join([sign, *signs])})")
            partials = []
        low.node(eq, [out], lines, reads, partials, dlines, reads, work=n**3 * (n if name == "det" else 1))
        refs.append(out)
    return refs


def lower_solve(low: Lowering, k_eq: int, eq: Any) -> list[Any]:
    dtype = eq.out.dtype
    A_var, b_var = eq.inputs
    n = _order(eq, A_var)
    vector = eq.kwargs.get("vector", True)
    if len(A_var.shape) != 2 or len(b_var.shape) != (1 if vector else 2):  # solve takes stacks now
        raise Unsupported("solve of stacks of matrices (one system per sample is fused)")
    columns = 1 if vector else b_var.shape[1]
    a_ops = [low.operand(k_eq, eq, 0, k, dtype) for k in range(n * n)]
    b_ops = [low.operand(k_eq, eq, 1, k, dtype) for k in range(n * columns)]
    lines, A, P, _ = _matrix_lines(low, [o[0] for o in a_ops], n, dtype)
    rhs, solution = low.fresh("r"), low.fresh("z")
    lines += [
        f"{rhs} = LOCAL_ARRAY(({n},), {cast(dtype)})",
        f"{solution} = LOCAL_ARRAY(({n},), {cast(dtype)})",
    ]
    outs = [low.entry(eq.out, k) for k in range(n * columns)]  # row-major (n,) or (n, k)
    for c in range(columns):
        lines += [f"{rhs}[{i}] = {b_ops[i * columns + c][0]}" for i in range(n)]
        lines.append(f"lu_solve({A}, {P}, {n}, {rhs}, {solution})")
        lines += [f"{outs[i * columns + c]} = {solution}[{i}]" for i in range(n)]
    inverse, dlines = _inverse_lines(low, A, P, n, dtype)
    partials = []
    for i in range(n):
        for c in range(columns):
            out = outs[i * columns + c]
            partials += [(out, b_ops[k * columns + c][1], f"{inverse}[{i}, {k}]") for k in range(n)]
            partials += [
                (out, a_ops[k * n + l][1], f"-({inverse}[{i}, {k}] * {outs[l * columns + c]})")
                for k in range(n) for l in range(n)
            ]  # fmt: skip
    reads = [o[2] for o in (*a_ops, *b_ops)]
    low.node(eq, outs, lines, reads, partials, dlines, [*reads, *outs], work=2 * n**3 + n * n * columns)
    return outs


_LOWERINGS = {
    ElementwisePrimitive: lower_elementwise,
    Select: lower_select,
    Boolean: lower_boolean,
    Convert: lower_convert,
    Reshape: lower_reshape,
    Concatenate: lower_concatenate,
    ScatterAdd: lower_scatter_add,
    ReduceSum: lower_reduce_sum,
    ReduceChooser: lower_reduce_choice,
    ReduceProd: lower_reduce_prod,
    LogSumExp: lower_logsumexp,
    CumSum: lower_cumsum,
    ArgChooser: lower_argchoice,
    MatMul: lower_matmul,
    Einsum: lower_einsum,
    SoftmaxFamily: lower_softmax,
    Det: lower_square,
    LogAbsDet: lower_square,
    SignDet: lower_square,
    Inv: lower_square,
    Solve: lower_solve,
    Move: lower_move,
}

# Primitives without a fused rule, and why (the planner reports the first one it meets).
UNSUPPORTED = {
    "cholesky": "cholesky has no fused rule yet (its derivative needs triangular solves per sample)"
}


def lower(
    program: Program, wrt: Sequence[Var], *, flat: bool = False, max_partials: int | None = None
) -> Tape:
    """The :class:`Tape` of ``program``'s output 0 w.r.t. ``wrt`` (some of its inputs).

    Raises :class:`~batchjac.exact.fuse.scalar.Unsupported` with the reason when a primitive
    has no fused rule or the program is too large."""
    for k in needed_equations(program, program.outputs[0]):
        reason = UNSUPPORTED.get(program.equations[k].primitive.name)
        if reason:
            raise Unsupported(reason)
    return Lowering(program, wrt, flat=flat, max_partials=max_partials).run()
