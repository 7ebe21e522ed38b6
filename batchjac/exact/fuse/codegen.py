"""From a :class:`~batchjac.exact.fuse.lower.Tape` to the Python source of one numba module.

:func:`analyse` finds the live entries (those the output needs), the *static sparsity* of
the tangents (forward: the set of input columns each entry depends on, propagated through
the structural partials) and of the adjoints (reverse: the set of output entries that
depend on each entry), and counts the updates each mode needs per sample: forward, the
sum over partials ``(out, in)`` of the columns ``in`` depends on; reverse, the sum over
partials of the outputs that depend on ``out``. A tangent or adjoint entry known to be zero
is never stored or computed, and a partial that is 1 (or an entry of a constant, such as
``A`` in ``A x``) reaching a seed costs no statement: the tangent is an alias (the
kinematics' ``cumsum`` tangents are triangular; ``A x + g(x)`` copies ``A`` by a loop). The
work of each mode is then counted on its generated code (:func:`work`: statements, their
arithmetic operations and the iterations of their loops).

The module holds one *body*, generated once and compiled for either target: ``sample(b,
...)`` computes the value and Jacobian of sample ``b`` (unrolled: one local per entry), or,
for element-wise programs, ``element(...)`` returns the value and the diagonal derivatives
of one entry. Around it, a kernel: ``@njit(parallel=True)`` with ``prange`` on the CPU,
``@cuda.jit`` with one thread per sample (or entry) on the GPU. The names the body uses
(``exp``, ``f64``, ...) are bound by the target's header; square-matrix helpers (an LU
with partial pivoting) are generated beside the body when the program needs them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from batchjac.exact.fuse.lower import SUM_CHUNK, Load, Tape, is_name
from batchjac.exact.fuse.scalar import MINUS_ONE, ONE, constant

FORWARD, REVERSE, ELEMENTWISE = "forward", "reverse", "elementwise"
CPU, CUDA = "cpu", "cuda"


def bits(mask: int) -> Iterator[int]:
    """The positions of the set bits of ``mask``, increasing."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


@dataclass
class Analysis:
    """Live code, tangent and adjoint sparsity, and operation counts per sample."""

    live: list  # live nodes, in order
    loads: list  # names of live loads
    forward: dict  # name -> bitmask of the input columns it depends on
    reverse: dict  # name -> bitmask of the output entries that depend on it
    forward_ops: int  # tangent updates: over partials (out, in), the columns ``in`` depends on
    reverse_ops: int  # adjoint updates: over partials (out, in), the outputs depending on ``out``


def analyse(tape: Tape) -> Analysis:
    live_names = {ref for ref in tape.outputs if is_name(ref)}
    live = []
    for node in reversed(tape.nodes):
        if any(o in live_names for o in node.outs):
            live.append(node)
            live_names |= node.reads | node.dreads
            live_names.update(p[1] for p in node.partials)
    live.reverse()
    forward = {name: 1 << column for name, column in tape.seeds.items()}
    forward_ops = 0
    for node in live:
        for out, source, _ in node.partials:
            mask = forward.get(source, 0)
            if mask:
                forward[out] = forward.get(out, 0) | mask
                forward_ops += mask.bit_count()
    reverse: dict = {}
    for r, ref in enumerate(tape.outputs):
        if is_name(ref) and forward.get(ref):
            reverse[ref] = reverse.get(ref, 0) | (1 << r)
    reverse_ops = 0
    for node in reversed(live):
        for out, source, _ in node.partials:
            if forward.get(source) and reverse.get(out):
                reverse[source] = reverse.get(source, 0) | reverse[out]
                reverse_ops += reverse[out].bit_count()
    loads = [name for name in tape.loads if name in live_names]
    return Analysis(live, loads, forward, reverse, forward_ops, reverse_ops)


# --------------------------------------------------------------------------------------
# Products and sums of partials and tangents
# --------------------------------------------------------------------------------------


def _wrapped(text: str) -> str:
    return text if is_name(text) or (text.startswith("(") and text.endswith(")")) else f"({text})"


def times(partial: str, tangent: str) -> str:
    """``partial * tangent``, either of which may be :data:`ONE` / :data:`MINUS_ONE`."""
    if tangent == ONE:
        return partial
    if partial == ONE:
        return tangent
    if tangent == MINUS_ONE:
        return ONE if partial == MINUS_ONE else f"(-{_wrapped(partial)})"
    if partial == MINUS_ONE:
        return f"(-{_wrapped(tangent)})"
    return f"{_wrapped(partial)} * {_wrapped(tangent)}"


_OPERATOR = re.compile(r" [-+*/] | [-+*/]= ")  # binary operators in generated code (unary minus aside)
_ELEMENT = re.compile(r"^[A-Za-z_]\w*\[\d+\]$")  # an entry of a kernel argument: c0[17]
_CALL = re.compile(r"\b([A-Za-z_]\w*)\(([A-Za-z_]\w*)\)")
_CALL_LINE = re.compile(r"^(\w+) = \(?([A-Za-z_]\w*\([A-Za-z_]\w*\))\)?$")


class Emitter:
    """Lines of a body, with fresh names and the typed constants of the Jacobian.

    Every value is computed before any derivative, so that a partial derivative can reuse
    any value of the program: ``-sin(v1_2)``, the derivative of ``cos(v1_2)``, becomes
    ``-v3_2`` when the program computes ``v3_2 = sin(v1_2)`` (numba calls the C library's
    ``sin`` through a pointer, which LLVM cannot recognise as the same pure call).
    """

    def __init__(self, tape: Tape, analysis: Analysis):
        self.tape = tape
        self.analysis = analysis
        self.dtype = tape.dtype
        self.lines: list = []
        self._count = 0
        self.work = 0  # iterations of the loops emitted (their bodies are one statement each)
        self.calls: dict[str, str] = {}  # argument -> the function called on it
        for node in analysis.live:
            for line in node.lines:
                found = _CALL_LINE.match(line)
                if found and found.group(2) not in self.calls:
                    self.calls[found.group(2)] = found.group(1)

    def reuse(self, partial: str) -> str:
        """``partial`` with every one-argument call the program computed replaced by its value."""
        if partial in (ONE, MINUS_ONE):
            return partial
        return _CALL.sub(lambda m: self.calls.get(m.group(0), m.group(0)), partial)

    def fresh(self, prefix: str) -> str:
        # An underscore keeps these names apart from the lowering's own (t1, p2, q3, ...).
        self._count += 1
        return f"_{prefix}{self._count}"

    def text(self, term: str) -> str:
        """A term as code (markers become typed constants)."""
        if term == ONE:
            return constant(1, self.dtype)
        if term == MINUS_ONE:
            return constant(-1, self.dtype)
        return term

    def define(self, name: str, terms: list) -> str:
        """A reference to the sum of ``terms``: an alias for one plain term (a local, a
        marker, or an entry of a constant argument such as ``c0[17]``), else ``name``
        assigned (in chunks for long sums)."""
        if len(terms) == 1 and (
            terms[0] in (ONE, MINUS_ONE) or is_name(terms[0]) or _ELEMENT.match(terms[0])
        ):
            return terms[0]
        texts = [self.text(t) for t in terms]
        partial = None
        for start in range(0, len(texts), SUM_CHUNK):
            chunk = texts[start : start + SUM_CHUNK]
            target = name if start + SUM_CHUNK >= len(texts) else self.fresh("s")
            self.lines.append(f"{target} = {' + '.join(([partial] if partial else []) + chunk)}")
            partial = target
        return name

    def hoisted(self, partial: str, uses: int) -> str:
        """``partial`` as a local when it is an expression used more than once."""
        if uses < 2 or partial in (ONE, MINUS_ONE) or is_name(partial):
            return partial
        name = self.fresh("p")
        self.lines.append(f"{name} = {partial}")
        return name

    def sum_or_zero(self, terms: list) -> str:
        if not terms:
            return constant(0, self.dtype)
        if len(terms) <= SUM_CHUNK:
            return " + ".join(self.text(t) for t in terms)
        return self.define(self.fresh("s"), terms)

    # -- forward mode --------------------------------------------------------------------
    def forward(self) -> dict:
        """Values and tangents of every live node; returns ``{(name, column): reference}``."""
        forward = self.analysis.forward
        tangent = {(name, column): ONE for name, column in self.tape.seeds.items()}
        for node in self.analysis.live:
            self.lines += node.lines
            self.work += node.work
        for node in self.analysis.live:
            active = [p for p in node.partials if forward.get(p[1])]
            if not active:
                continue
            self.lines += node.dlines
            by_out = defaultdict(list)
            for out, source, partial in active:
                by_out[out].append((source, self.hoisted(self.reuse(partial), forward[source].bit_count())))
            for out, sources in by_out.items():
                for column in bits(forward[out]):
                    terms = [times(p, tangent[(s, column)]) for s, p in sources if forward[s] >> column & 1]
                    tangent[(out, column)] = self.define(f"d{column}_{out}", terms)
        return tangent

    # -- reverse mode --------------------------------------------------------------------
    def reverse(self) -> dict:
        """Values, then one adjoint sweep carrying every output row at once (only the rows
        that depend on each entry); returns ``{(seed name, row): [terms]}``."""
        forward, reverse = self.analysis.forward, self.analysis.reverse
        for node in self.analysis.live:
            self.lines += node.lines
            self.work += node.work
        contributions = defaultdict(list)
        for r, ref in enumerate(self.tape.outputs):
            if is_name(ref) and forward.get(ref):
                contributions[(ref, r)].append(ONE)
        for node in reversed(self.analysis.live):
            active = [p for p in node.partials if forward.get(p[1]) and reverse.get(p[0])]
            if not active:
                continue
            adjoint = {}
            for out in node.outs:
                for r in bits(reverse.get(out, 0)):
                    terms = contributions.pop((out, r), None)
                    if terms:
                        adjoint[(out, r)] = self.define(f"a{r}_{out}", terms)
            self.lines += node.dlines
            for out, source, partial in active:
                rows = [r for r in bits(reverse[out]) if (out, r) in adjoint]
                partial = self.hoisted(self.reuse(partial), len(rows))
                for r in rows:
                    contributions[(source, r)].append(times(partial, adjoint[(out, r)]))
        return contributions

    # -- stores --------------------------------------------------------------------------
    def store_sample(self, jacobian: Callable[[Any, int, int], Any]) -> None:
        """``y[b, r]`` and ``J<i>[b, r, c]`` (zeros written too) from ``jacobian(ref, r,
        column)`` (a term list, a reference, or None for a structural zero). Each store is
        a statement numba types and lowers, so blocks are written by loops: a Jacobian whose
        entries are mostly entries of one constant at an affine position (``A`` of ``A x +
        g(x)``) is copied from it by a loop and the other entries written after; one with
        many zeros is zeroed by a loop first."""
        tape = self.tape
        for r, ref in enumerate(tape.outputs):
            self.lines.append(f"y[b, {r}] = {ref}")
        offset = 0
        m = len(tape.outputs)
        sizes = {array: var.size for array, _, _, var in tape.arrays}
        for i, size in enumerate(tape.wrt_sizes):
            entries = {}
            for r, ref in enumerate(tape.outputs):
                for c in range(size):
                    found = jacobian(ref, r, offset + c)
                    if found:
                        entries[(r, c)] = found
            written = self._affine_block(f"J{i}", entries, m, size, sizes)
            if m * size - len(entries) - len(written) > 4 and not written:
                self.work += m * size
                row, column = self.fresh("r"), self.fresh("c")
                self.lines += [
                    f"for {row} in range({m}):",
                    f"    for {column} in range({size}):",
                    f"        J{i}[b, {row}, {column}] = {constant(0, self.dtype)}",
                ]
                self.lines += [f"J{i}[b, {r}, {c}] = {self._entry(e)}" for (r, c), e in entries.items()]
            else:
                self.lines += [
                    f"J{i}[b, {r}, {c}] = {self._entry(entries.get((r, c)))}"
                    for r in range(m)
                    for c in range(size)
                    if (r, c) not in written
                ]
            offset += size

    def _affine_block(self, target: str, entries: dict, m: int, n: int, sizes: dict) -> set:
        """Write by a loop the entries ``(r, c)`` that read ``K[base + r * sr + c * sc]`` of one
        constant ``K`` (at least a quarter of the block); returns the positions it wrote."""
        by_array: dict = defaultdict(dict)
        for (r, c), found in entries.items():
            hit = _ELEMENT.match(found) if isinstance(found, str) else None
            if hit:
                array, index = found[:-1].split("[")
                by_array[array][(r, c)] = int(index)
        if not by_array:
            return set()
        array, positions = max(by_array.items(), key=lambda item: len(item[1]))
        if len(positions) < max(32, m * n // 4):
            return set()
        fit = _affine_fit(positions)
        if fit is None:
            return set()
        base, sr, sc = fit
        corners = [base + r * sr + c * sc for r in (0, m - 1) for c in (0, n - 1)]
        if min(corners) < 0 or max(corners) >= sizes.get(array, 0):
            return set()
        row, column = self.fresh("r"), self.fresh("c")
        self.lines += [
            f"for {row} in range({m}):",
            f"    for {column} in range({n}):",
            f"        {target}[b, {row}, {column}] = {array}[{base} + {row} * {sr} + {column} * {sc}]",
        ]
        self.work += m * n
        return set(positions)

    def _entry(self, found: Any) -> str:
        if found is None:
            return constant(0, self.dtype)
        if isinstance(found, list):
            return self.sum_or_zero(found)
        return self.text(found)


def _affine_fit(positions: dict) -> tuple[int, int, int] | None:
    """``(base, sr, sc)`` with ``index == base + r * sr + c * sc`` for every ``(r, c) ->
    index`` of ``positions``, or None."""
    rows, columns = defaultdict(list), defaultdict(list)
    for (r, c), index in positions.items():
        rows[r].append((c, index))
        columns[c].append((r, index))
    sc = 0
    for members in rows.values():
        if len(members) > 1:
            (c0, k0), (c1, k1) = sorted(members)[:2]
            sc = (k1 - k0) // (c1 - c0)
            break
    sr = 0
    for members in columns.values():
        if len(members) > 1:
            (r0, k0), (r1, k1) = sorted(members)[:2]
            sr = (k1 - k0) // (r1 - r0)
            break
    (r0, c0), k0 = next(iter(positions.items()))
    base = k0 - r0 * sr - c0 * sc
    if all(index == base + r * sr + c * sc for (r, c), index in positions.items()):
        return base, sr, sc
    return None


# --------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------


@dataclass
class Signature:
    """The array arguments of a kernel, in order: ``("input", i)``, ``("const", j)`` or
    ``("lits",)`` (batched ones ``(B, size)``, shared ones flat; element-wise kernels take
    every array flat and index it per entry, per sample or once)."""

    arguments: list


def _array_arguments(tape: Tape, analysis: Analysis) -> tuple[list[tuple[Any, ...]], list[str]]:
    used = {tape.loads[name].array for name in analysis.loads} | tape.direct_arrays
    arguments: list[tuple[Any, ...]] = []
    names: list[str] = []
    for array, kind, position, _ in tape.arrays:
        if array in used:
            arguments.append((kind, position))
            names.append(array)
    if "lits" in used:
        arguments.append(("lits",))
        names.append("lits")
    return arguments, names


def _load_line(name: str, load: Load) -> str:
    if load.batched:
        return f"{name} = {load.array}[b, {load.index}]"
    return f"{name} = {load.array}[{load.index}]"


def sample_body(tape: Tape, analysis: Analysis, mode: str) -> tuple[Any, ...]:
    """``(source of sample(b, ...), Signature, statements, work)`` (:func:`work`)."""
    emitter = Emitter(tape, analysis)
    emitter.lines += [_load_line(name, tape.loads[name]) for name in analysis.loads]
    if mode == REVERSE:
        contributions = emitter.reverse()
        seeds = {column: name for name, column in tape.seeds.items()}
        emitter.store_sample(
            lambda ref, r, column: contributions.get((seeds[column], r)) if column in seeds else None
        )
    else:
        tangent = emitter.forward()
        emitter.store_sample(lambda ref, r, column: tangent.get((ref, column)) if is_name(ref) else None)
    arguments, names = _array_arguments(tape, analysis)
    outputs = ["y", *(f"J{i}" for i in range(len(tape.wrt_sizes)))]
    head = f"def sample(b, {', '.join([*names, *outputs])}):"
    return _function(head, emitter.lines), Signature(arguments), len(emitter.lines), work(emitter)


def element_body(tape: Tape, analysis: Analysis) -> tuple[Any, ...]:
    """``(source of element(...) -> (value, d0, d1, ...), statements)`` for an element-wise
    (flat) tape, forward mode."""
    emitter = Emitter(tape, analysis)
    tangent = emitter.forward()
    (ref,) = tape.outputs
    results = [ref] + [
        emitter.text(
            tangent.get((ref, column), constant(0, tape.dtype)) if is_name(ref) else constant(0, tape.dtype)
        )
        for column in range(len(tape.wrt_sizes))
    ]
    emitter.lines.append(f"return ({', '.join(results)},)")
    parameters = list(analysis.loads)
    head = f"def element({', '.join(parameters)}):"
    return _function(head, emitter.lines), len(emitter.lines)


def work(emitter: Emitter) -> int:
    """Operations per sample of the generated code: one per statement and per binary
    operator in it, plus the iterations of its loops."""
    return sum(1 + len(_OPERATOR.findall(line)) for line in emitter.lines) + emitter.work


def _function(head: str, lines: list) -> str:
    body = lines or ["pass"]
    return head + "\n" + "\n".join("    " + line for line in body) + "\n"


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------

HEADERS = {
    CPU: """import numpy as np
from numba import njit, prange

from batchjac.exact.fuse.cpu_math import *  # noqa: F403 - the names of the scalar forms

# The body is only called from the kernel: no Python wrappers. The kernel's one loop is a
# prange over calls of the body: the other parallel passes only cost compile time (~1 s).
body_jit = njit(cache=True, error_model="numpy", no_cpython_wrapper=True, no_cfunc_wrapper=True)
_PARALLEL = dict(prange=True, comprehension=False, reduction=False, inplace_binop=False, numpy=False,
                 stencil=False, setitem=False, fusion=False)
kernel_jit = njit(parallel=_PARALLEL, cache=True, error_model="numpy")
serial_jit = njit(cache=True, error_model="numpy")
""",
    CUDA: """import numpy as np
from numba import cuda

from batchjac.kernels.numba_fused import body_jit, kernel_jit, scalar_namespace

globals().update(scalar_namespace())
""",
}
LOCAL_ARRAYS = {CPU: "np.empty", CUDA: "cuda.local.array"}
LOOPS = {CPU: "for {i} in prange({n}):", CUDA: "for {i} in range(cuda.grid(1), {n}, cuda.gridsize(1)):"}
SERIAL_LOOP = "for {i} in range({n}):"

# A partial-pivoting LU of a small matrix, in place (as LAPACK's getrf: a zero pivot is
# skipped, so a singular matrix factors too and its determinant is 0), and what is built
# on it; written once, compiled for the CPU and the GPU.
LU_HELPERS = """
@body_jit
def lu_factor(A, n, P):
    sign = 1.0
    for i in range(n):
        P[i] = i
    for k in range(n):
        p = k
        best = abs(A[k, k])
        for i in range(k + 1, n):
            if abs(A[i, k]) > best:
                best = abs(A[i, k])
                p = i
        if p != k:
            for j in range(n):
                t = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = t
            q = P[k]
            P[k] = P[p]
            P[p] = q
            sign = -sign
        pivot = A[k, k]
        if pivot != 0.0:
            for i in range(k + 1, n):
                f = A[i, k] / pivot
                A[i, k] = f
                for j in range(k + 1, n):
                    A[i, j] -= f * A[k, j]
    return sign


@body_jit
def lu_solve(A, P, n, rhs, x):
    for i in range(n):
        s = rhs[P[i]]
        for j in range(i):
            s -= A[i, j] * x[j]
        x[i] = s
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(i + 1, n):
            s -= A[i, j] * x[j]
        x[i] = s / A[i, i]


@body_jit
def lu_inverse(A, P, n, V, rhs, x):
    for c in range(n):
        for i in range(n):
            rhs[i] = 1.0 if i == c else 0.0
        lu_solve(A, P, n, rhs, x)
        for i in range(n):
            V[i, c] = x[i]


@body_jit
def cofactors(A, n, C, M, Q):
    # C[i, j] = (-1)^(i+j) det(A without row i and column j): exact for singular A too
    for i in range(n):
        for j in range(n):
            for r in range(n - 1):
                rr = r if r < i else r + 1
                for c in range(n - 1):
                    M[r, c] = A[rr, c if c < j else c + 1]
            d = lu_factor(M, n - 1, Q)
            for r in range(n - 1):
                d *= M[r, r]
            C[i, j] = d if (i + j) % 2 == 0 else -d
"""


@dataclass
class Generated:
    """The source of one module and what calling its ``kernel`` needs."""

    source: str
    signature: Signature
    statements: int


def module_source(
    tape: Tape, analysis: Analysis, mode: str, target: str, title: str, body: Any = None
) -> Generated:
    """The module: header, helpers, the body (``@body_jit``), ``kernel`` (``@kernel_jit``)
    and, on the CPU, ``serial_kernel``: the same loop without threads, for calls too small to
    pay for waking them. ``body``: the body's source when generated before (the planner
    generates it to measure it)."""
    loops = {"kernel": LOOPS[target]}
    if target == CPU:
        loops["serial_kernel"] = SERIAL_LOOP
    if mode == ELEMENTWISE:
        body, statements = body or element_body(tape, analysis)
        kernels, signature = _element_kernels(tape, analysis, loops)
    else:
        body, signature, statements, _ = body or sample_body(tape, analysis, mode)
        kernels = _sample_kernels(tape, analysis, loops)
    parts = [
        f"# Generated by batchjac.exact.fuse: {title}.\n# Do not edit: delete the file to regenerate it.\n",
        HEADERS[target],
        LU_HELPERS if "lu" in tape.helpers else "",
        "\n@body_jit\n" + body,
        *(
            f"\n@{'kernel_jit' if name == 'kernel' else 'serial_jit'}\n{text}"
            for name, text in kernels.items()
        ),
    ]
    source = "\n".join(parts).replace("LOCAL_ARRAY(", LOCAL_ARRAYS[target] + "(")
    return Generated(source, signature, statements)


def _sample_kernels(tape: Tape, analysis: Analysis, loops: dict) -> dict:
    """``name(B, arrays..., y, J0, ...)`` for each loop: ``sample(b, ...)`` for every ``b``."""
    _, names = _array_arguments(tape, analysis)
    outputs = ["y", *(f"J{i}" for i in range(len(tape.wrt_sizes)))]
    arguments = ", ".join([*names, *outputs])
    return {
        name: f"def {name}(B, {arguments}):\n    {loop.format(i='b', n='B')}\n        sample(b, {arguments})\n"
        for name, loop in loops.items()
    }


def _element_kernels(
    tape: Tape, analysis: Analysis, loops: dict[str, str]
) -> tuple[dict[str, str], Signature]:
    """``name(total, n, arrays..., y, D0, ...)`` for each loop: ``total = B * n`` entries;
    shared scalars and literals are read before the loop."""
    n = tape.output.size
    arguments, names = _array_arguments(tape, analysis)
    by_array = {array: var for array, _, _, var in tape.arrays}
    access = {}
    for array in names:
        var = by_array.get(array)
        if var is None or var.size != n:
            access[array] = "sample" if var is not None and var.batched else "shared"
        else:
            access[array] = "entry" if var.batched else "broadcast"
    hoisted, parameters = [], []
    for name in analysis.loads:
        load = tape.loads[name]
        how = access[load.array]
        if how == "shared":
            hoisted.append(f"{name} = {load.array}[{load.index}]")
            parameters.append(name)
        else:
            parameters.append({"entry": f"{load.array}[k]", "broadcast": f"{load.array}[k % n]",
                               "sample": f"{load.array}[k // n]"}[how])  # fmt: skip
    outputs = ["y", *(f"D{i}" for i in range(len(tape.wrt_sizes)))]
    results = [f"r{i}" for i in range(len(outputs))]
    kernels = {}
    for name, loop in loops.items():
        lines = [*hoisted, loop.format(i="k", n="total")]
        lines.append(f"    {', '.join(results)}, = element({', '.join(parameters)})")
        lines += [f"    {o}[k] = {r}" for o, r in zip(outputs, results)]
        kernels[name] = _function(f"def {name}(total, n, {', '.join([*names, *outputs])}):", lines)
    return kernels, Signature(arguments)
