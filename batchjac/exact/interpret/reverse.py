"""Reverse mode as a program: vector-Jacobian products from the primitives' ``vjp`` rules.

The forward sweep evaluates the program (on arrays, or on tracers of an enclosing trace),
keeping the values the rules need; the backward sweep applies each primitive's ``vjp``
rule, written with traceable operations (:mod:`batchjac.exact.lax`). Run on tracers, the
whole computation is recorded as a new program: the gradient program, whose structured
Jacobian is the Hessian, and whose nesting gives ``bj.jacobian`` inside ``bj.jacobian``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from batchjac.exact import lax
from batchjac.exact.interpret.evaluate import evaluate
from batchjac.exact.ir import Literal, Program, Var


def forward(
    program: Program,
    inputs: Sequence[Any],
    consts: Sequence[Any] | None = None,
    wrt: Sequence[Var] | None = None,
) -> tuple[list[Any], dict[Var, Any], set[Var]]:
    """The forward sweep: ``(outputs, env, active)`` with every value the rules may read."""
    wrt = program.inputs if wrt is None else wrt
    active = program.active(wrt)
    keep = {o for eq in program.equations if eq.out in active for o in eq.inputs if isinstance(o, Var)}
    keep |= {eq.out for eq in program.equations if eq.out in active}
    outputs, env = evaluate(program, inputs, consts, keep=keep)
    return outputs, env, active


def backward(
    program: Program, env: dict[Var, Any], active: set[Var], cotangents: Sequence[Any], wrt: Sequence[Var]
) -> list[Any]:
    """The backward sweep: cotangents of ``wrt`` from those of the outputs (``None``: zero).

    ``cotangents`` has one entry per output of ``program`` (the output's per-sample shape;
    a plain array is shared by the batch). Inputs that the outputs do not depend on get
    zeros of their per-sample shape.
    """
    ct: dict[Var, Any] = {}
    for var, g in zip(program.outputs, cotangents):
        if g is not None and var in active:
            ct[var] = lax.add(ct[var], g) if var in ct else g
    for eq in reversed(program.equations):
        g = ct.pop(eq.out, None)
        if g is None or eq.out not in active:
            continue
        inputs = [o.value if isinstance(o, Literal) else env[o] for o in eq.inputs]
        params = dict(eq.params)
        for i, o in enumerate(eq.inputs):
            if not isinstance(o, Var) or o not in active:
                continue
            contribution = eq.primitive.vjp(g, i, inputs, env[eq.out], **params)
            if contribution is None:
                continue
            ct[o] = lax.add(ct[o], contribution) if o in ct else contribution
    return [ct[v] if v in ct else np.zeros(v.shape, dtype=v.dtype) for v in wrt]


def vjp(
    program: Program,
    inputs: Sequence[Any],
    cotangents: Sequence[Any],
    consts: Sequence[Any] | None = None,
    wrt: Sequence[Var] | None = None,
) -> tuple[list[Any], list[Any]]:
    """``(outputs, [u^T dF/dwrt for each of wrt])`` in one forward and one backward sweep."""
    wrt = list(program.inputs if wrt is None else wrt)
    outputs, env, active = forward(program, inputs, consts, wrt)
    return outputs, backward(program, env, active, cotangents, wrt)


def jacobian_rows(
    program: Program,
    inputs: Sequence[Any],
    consts: Sequence[Any] | None = None,
    wrt: Sequence[Var] | None = None,
) -> tuple[Any, list[Any]]:
    """The Jacobian of the single output w.r.t. each of ``wrt``, by one backward sweep per
    output entry (a traceable form: the rows are stacked with traced operations).
    Returns ``(output, [J_k of per-sample shape (*out_shape, *in_shape_k)])``."""
    wrt = list(program.inputs if wrt is None else wrt)
    (output,), env, active = forward(program, inputs, consts, wrt)
    out_var = program.outputs[0]
    m = out_var.size
    rows: list[list[Any]] = [[] for _ in wrt]
    for r in range(m):
        basis = np.zeros(m, dtype=out_var.dtype)
        basis[r] = 1.0
        grads = backward(program, env, active, [basis.reshape(out_var.shape)], wrt)
        for k, g in enumerate(grads):
            rows[k].append(lax.reshape(_as_sample(g, wrt[k]), (1, wrt[k].size)))
    jacobians: list[Any] = []
    for k, var in enumerate(wrt):
        if m == 0:
            jacobians.append(np.zeros((*out_var.shape, *var.shape), dtype=out_var.dtype))
            continue
        stacked = rows[k][0] if m == 1 else lax.concatenate(rows[k], axis=0)
        jacobians.append(lax.reshape(stacked, (*out_var.shape, *var.shape)))
    return output, jacobians


def _as_sample(g: Any, var: Var) -> Any:
    """A cotangent that came back as a constant (zero) in the variable's per-sample shape."""
    if isinstance(g, np.ndarray) and g.shape != var.shape:
        return np.broadcast_to(g, var.shape)
    return g
