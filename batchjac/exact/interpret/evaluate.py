"""The values-only interpreter: run a program on arrays, or on the tracers of an outer trace.

Each equation goes through :func:`~batchjac.exact.tracer.bind`, so the same interpreter
computes values (NumPy or CuPy arrays) and, when its inputs are tracers of an enclosing
trace, records the program into that trace (this is how ``bj.grad`` and ``bj.jacobian``
nest). Values are freed after their last use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from batchjac.exact.ir import Literal, Program, Var
from batchjac.exact.tracer import Batched, Tracer, bind


def operand(value: Any, var: Var) -> Any:
    """A value in the form :func:`bind` takes: batched arrays wrapped, tracers as they are."""
    if isinstance(value, (Tracer, Batched)) or not var.batched:
        return value
    return Batched(value)


def plain(value: Any) -> Any:
    """The array (or tracer) inside an operand."""
    return value.array if isinstance(value, Batched) else value


def evaluate(
    program: Program, inputs: Sequence[Any], consts: Sequence[Any] | None = None, *, keep: Iterable[Var] = ()
) -> tuple[list[Any], dict[Var, Any]]:
    """The outputs of ``program`` on ``inputs`` (one per ``program.inputs``; arrays with the
    batch axis first where the input is batched, or tracers) and ``consts`` (default: the
    traced constant values). Returns ``(outputs, env)``: outputs in operand form, and the
    values of the variables in ``keep`` (for the reverse sweep)."""
    consts = program.const_values if consts is None else consts
    env: dict[Var, Any] = {}
    for var, value in zip(program.inputs, inputs):
        env[var] = operand(value, var)
    for var, value in zip(program.consts, consts):
        env[var] = operand(value, var)
    last = program.last_uses()
    keep = set(keep)
    for i, eq in enumerate(program.equations):
        args = [o.value if isinstance(o, Literal) else env[o] for o in eq.inputs]
        env[eq.out] = bind(eq.primitive, args, dict(eq.params))
        for o in eq.inputs:
            if isinstance(o, Var) and last.get(o) == i and o not in keep:
                env.pop(o, None)
    return [env[v] for v in program.outputs], env
