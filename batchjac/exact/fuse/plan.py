"""The decision: compile a program into one fused kernel, or assemble its structured chain.

:func:`plan_fusion` lowers the program once per structure (its hash and the differentiated
inputs; the batch size, weights and literal values do not matter) and compares two
per-sample costs, both counted in scalar operations of the fused kernel (about a
nanosecond each on one CPU core):

- **fused**: the operations of the generated code of the cheaper mode (its statements,
  their arithmetic and the iterations of its loops): the value code, the tangent (forward)
  or adjoint (reverse) updates that the static sparsity leaves, and the stores;
- **chain**: the structured path runs NumPy passes per primitive (:data:`CHAIN_EQUATION_NS`),
  writes every value and every per-sample local-Jacobian entry to memory and reads it back
  (:data:`CHAIN_ENTRY_NS`; a local Jacobian shared by the batch, such as a weight matrix's,
  is stored once and not counted), multiplies the local Jacobians as batched products
  without their sparsity (:data:`CHAIN_PRODUCT_NS` per multiply-add), and pays a fixed cost
  per primitive and call (:data:`CHAIN_CALL_NS`, shared by the batch); converted to
  operations of fused code (:data:`FUSED_NS` each) to compare.

``fuse="auto"`` takes the fused kernel when the program is fusable and its cost is the
lower. Programs over the size limits (:data:`MAX_PARTIALS` local partial derivatives, or
:data:`MAX_STATEMENTS` generated statements per sample) are not fusable: numba compiles
unrolled code at a few hundred statements a second (the W4 kinematics, ~250 statements,
in about 2 s; 3,000 statements take 10 to 30 s), and such per-sample sizes are where the
chain's GEMMs win anyway (the MLP 64->256^3->10 has 150,000 partials per sample).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from batchjac.exact.fuse.codegen import (
    ELEMENTWISE,
    FORWARD,
    REVERSE,
    Analysis,
    analyse,
    element_body,
    sample_body,
)
from batchjac.exact.fuse.lower import Tape, elementwise_program, lower, needed_equations
from batchjac.exact.fuse.scalar import Unsupported
from batchjac.exact.ir import Equation, Program, Var
from batchjac.exact.primitives.elementwise import ElementwisePrimitive, Select
from batchjac.exact.primitives.linalg import (
    Det,
    Einsum,
    Inv,
    LogAbsDet,
    MatMul,
    SoftmaxFamily,
    Solve,
    _matrix_shapes,
)

MAX_PARTIALS = 5_000
MAX_STATEMENTS = 3_000
# The cost model, in nanoseconds per sample, fitted to measurements on a 2-core CPU (the
# W4 kinematics, small MLPs, softmax, 3 x 3 determinants, W5; float64, B = 10^4): an
# operation of the fused code ~0.6 ns; the chain ~40 ns per primitive (its NumPy passes),
# ~10 ns per value or per-sample local-Jacobian entry stored and read back, ~2 ns per
# multiply-add of its small batched products, and ~80 µs per primitive and call (Python and
# the structured types), shared by the batch.
FUSED_NS = 0.6
CHAIN_EQUATION_NS = 40.0
CHAIN_ENTRY_NS = 10.0
CHAIN_PRODUCT_NS = 2.0
CHAIN_CALL_NS = 80_000.0

_LOWERED: OrderedDict = OrderedDict()
_LOWERED_SIZE = 256


@dataclass(frozen=True)
class FusionDecision:
    """Whether and how a program compiles into one fused kernel, and which path
    ``fuse="auto"`` takes.

    ``mode`` is ``"forward"``, ``"reverse"`` or ``"elementwise"`` (None when not fusable);
    ``fused_operations`` and ``chain_operations`` are the estimated costs per sample (see
    :mod:`batchjac.exact.fuse.plan`); ``path`` is ``"fused"`` or ``"chain"``: what
    ``fuse="auto"`` picks; ``reason`` says why, in words.
    """

    fusable: bool
    mode: str | None
    path: str
    reason: str
    fused_operations: int | None
    chain_operations: int
    forward_operations: int | None = None
    reverse_operations: int | None = None
    statements: int | None = None
    device: str = "cpu"
    dtype: str = "float64"

    def explain(self) -> str:
        """``path: fused (...)`` or ``path: chain (...)``, then the figures.

        >>> import numpy as np, batchjac as bj
        >>> program = bj.trace(lambda x: np.linalg.cholesky(x), np.eye(2)[None])
        >>> print(plan_fusion(program, program.inputs, 1, np.float64).explain())
        path: chain (not fusable: cholesky has no fused rule yet (its derivative needs triangular solves per sample))
        """
        if not self.fusable:
            return f"path: chain (not fusable: {self.reason})"
        return "\n".join([
            f"path: {self.path} ({self.reason})",
            f"fused {self.mode} mode: ~{self.fused_operations} operations per sample; tangent updates "
            f"{self.forward_operations} (forward), adjoint updates {self.reverse_operations} (reverse)",
            f"structured chain: ~{self.chain_operations} operations per sample",
        ])  # fmt: skip

    @property
    def why(self) -> str:
        """Why the path: the reason, said as the chain's ``AssemblyPlan.reason`` reads it."""
        return self.reason if self.fusable else f"not fusable: {self.reason}"

    def plan(self) -> Any:
        """The decision as an :class:`~batchjac.exact.interpret.jacobian.AssemblyPlan` of the
        fused path (``J.plan`` of a fused result)."""
        from batchjac.exact.interpret.jacobian import AssemblyPlan

        return AssemblyPlan(steps=self.explain().splitlines()[1:], path="fused", reason=self.reason)


@dataclass
class Lowered:
    """A program lowered for one set of differentiated inputs (or why it cannot be)."""

    tape: Tape | None
    analysis: Analysis | None
    mode: str | None
    reason: str
    statements: int = 0
    chain: tuple = (0.0, 0.0, 0)  # (memory-bound entries, product multiply-adds, equations)
    work: int = 0  # operations per sample of the generated code (per entry when flat)
    body: tuple | None = None  # the generated body of ``mode`` (codegen.sample_body / element_body)


def _rough_partials(eq: Equation, active: set[Var]) -> int:
    """An upper estimate of an equation's local partial derivatives w.r.t. its operands that
    depend on the differentiated inputs, from shapes alone."""
    p, out = eq.primitive, eq.out
    if out not in active:
        return 0
    operands = [o for o in eq.inputs if isinstance(o, Var)]
    varying = [o for o in operands if o in active]
    if isinstance(p, ElementwisePrimitive | Select):
        return out.size * len(varying)
    if isinstance(p, MatMul):
        return out.size * _matrix_shapes(operands[0].shape, operands[1].shape)[0][-1] * len(varying)
    if isinstance(p, Einsum):
        sizes: dict = {}
        for letters, o in zip(eq.kwargs["spec"].split("->")[0].split(","), operands):
            sizes.update(zip(letters, o.shape))
        return math.prod(sizes.values()) * len(operands)
    if isinstance(p, SoftmaxFamily):
        return out.size * operands[0].shape[eq.kwargs["axis"]]
    if isinstance(p, Inv):
        return out.size * out.shape[-1] ** 2
    if isinstance(p, Solve):
        n = operands[0].shape[0]
        return out.size * (n + n * n)
    if isinstance(p, Det | LogAbsDet):
        return operands[0].size
    return sum(o.size for o in operands)


def lowered(program: Program, wrt: Sequence[Var]) -> Lowered:
    """The lowering of ``program`` w.r.t. ``wrt``, cached by structure."""
    key = (program.key, tuple(v.index for v in wrt))
    found = _LOWERED.get(key)
    if found is not None:
        _LOWERED.move_to_end(key)
        return found
    found = _lower(program, list(wrt))
    _LOWERED[key] = found
    if len(_LOWERED) > _LOWERED_SIZE:
        _LOWERED.popitem(last=False)
    return found


def _lower(program: Program, wrt: Sequence[Var]) -> Lowered:
    output = program.outputs[0]
    if output.dtype.kind != "f":
        return Lowered(None, None, None, f"the output has dtype {output.dtype}, not floating")
    if any(v not in program.inputs for v in wrt):
        return Lowered(None, None, None, "a differentiated variable is not an input of the program")
    flat = elementwise_program(program, wrt) is None  # one loop over entries: sizes do not matter
    needed = [program.equations[k] for k in needed_equations(program, output)]
    active = program.active(wrt)
    rough = 0 if flat else sum(_rough_partials(eq, active) for eq in needed)
    if rough > MAX_PARTIALS:
        return Lowered(
            None, None, None,
            f"size limit: about {rough} local partial derivatives per sample (fused up to {MAX_PARTIALS})",
        )  # fmt: skip
    try:
        tape = lower(program, wrt, flat=flat, max_partials=MAX_PARTIALS)
    except Unsupported as err:
        return Lowered(None, None, None, str(err))
    analysis = analyse(tape)
    if flat:
        body = element_body(tape, analysis)
        mode, statements, work = ELEMENTWISE, body[1], body[1]
    else:
        # the cheaper mode by the operations of its generated code (codegen.work): forward,
        # an update per nonzero tangent entry; reverse, per nonzero adjoint entry
        candidates = []
        for mode in (FORWARD, REVERSE):
            generated = sample_body(tape, analysis, mode)
            statements, work = generated[2], generated[3]
            candidates.append((statements > MAX_STATEMENTS, work, statements, mode, generated))
        _, work, statements, mode, body = min(candidates, key=lambda c: c[:4])
    if statements > MAX_STATEMENTS:
        return Lowered(
            None, None, None,
            f"size limit: about {statements} generated statements per sample (fused up to {MAX_STATEMENTS})",
        )  # fmt: skip
    return Lowered(tape, analysis, mode, "", statements, _chain_work(program, wrt, tape), work, body)


def _chain_work(program: Program, wrt: Sequence[Var], tape: Tape) -> tuple[float, float, int]:
    """What the structured chain does per sample: (entries written and read back,
    multiply-adds of the products, equations with local Jacobians)."""
    structural = tape.partial_count * (tape.output.size if tape.flat else 1)
    active = program.active(wrt)
    per_entry = tape.output.size if tape.flat else 1  # a flat tape counts one entry of each variable
    entries, equations = 0, 0
    for k in needed_equations(program, tape.output):
        eq = program.equations[k]
        if eq.out not in active:
            continue
        equations += 1
        entries += eq.out.size + tape.equation_partials.get(k, 0) * per_entry
    rows, columns = tape.output.size, sum(v.size for v in wrt)
    return entries, structural * min(rows, columns), equations


def plan_fusion(
    program: Program, wrt: Sequence[Var], batch: int, dtype: Any, device: str = "cpu"
) -> FusionDecision:
    """Can ``program`` (its output 0) and its Jacobian w.r.t. ``wrt`` be computed by one
    fused kernel, in which mode, and should ``fuse="auto"`` take it for ``batch`` samples?

    ``wrt``: program inputs (``program.inputs`` for all); ``dtype``: the output's;
    ``device``: ``"cpu"`` or ``"gpu"``. The lowering is cached by the program's structure,
    so a repeated call costs a dictionary look-up.

    >>> import numpy as np, batchjac as bj
    >>> program = bj.trace(lambda x: np.tanh(np.exp(x) * x) + x, np.zeros((2, 6)))
    >>> decision = plan_fusion(program, program.inputs, 10_000, np.float64)
    >>> decision.fusable, decision.mode, decision.path
    (True, 'elementwise', 'fused')
    >>> program = bj.trace(lambda q: np.sum(np.sin(np.cumsum(q, axis=-1)), axis=-1), np.zeros((2, 6)))
    >>> plan_fusion(program, program.inputs, 10_000, np.float64).mode  # one output, six inputs
    'reverse'
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device: expected 'cpu' or 'gpu', got {device!r}")
    found = lowered(program, wrt)
    dtype = np.dtype(dtype).name
    analysis = found.analysis
    if found.tape is None or analysis is None:
        return FusionDecision(False, None, "chain", found.reason, None, 0, device=device, dtype=dtype)
    scale = found.tape.output.size if found.tape.flat else 1
    fused = found.work * scale
    entries, products, equations = found.chain
    nanoseconds = (
        CHAIN_EQUATION_NS * equations + CHAIN_ENTRY_NS * entries + CHAIN_PRODUCT_NS * products
        + CHAIN_CALL_NS * equations / max(int(batch), 1)
    )  # fmt: skip
    chain = int(nanoseconds / FUSED_NS)  # in operations of fused code
    path = "fused" if fused <= chain else "chain"
    if path == "fused":
        reason = f"one fused {found.mode}-mode kernel: ~{fused} operations per sample against ~{chain} for the chain"
    else:
        reason = f"the structured chain: ~{chain} operations per sample against ~{fused} for a fused kernel"
    return FusionDecision(
        True, found.mode, path, reason, fused, chain, analysis.forward_ops * scale, analysis.reverse_ops * scale,
        found.statements, device, dtype,
    )  # fmt: skip
