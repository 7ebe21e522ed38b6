"""Tracing a user's function into a program: arguments, pytrees, batch modes, outputs.

:func:`capture` runs ``f`` once on tracers and returns the :class:`Captured` program with
what is needed to map results back: which arguments were traced, the structure of each
(an argument may be a dict, list or tuple of arrays: a *pytree*, whose leaves are traced
one by one), the batch size, and the auxiliary outputs of ``has_aux=True``.

Batch modes: in batched mode ``f`` receives the differentiated arguments as traced batches
``(B, ...)`` and every other argument unchanged. In per-sample mode (``per_sample=True``)
``f`` receives one sample of every argument whose ``in_axes`` entry is 0 (traced, whether
differentiated or not) and the others (``in_axes`` None) whole, shared by the batch; a
differentiated shared argument gives per-sample gradients ``(B, *out, *param_shape)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batchjac.core.arrays import as_float_array
from batchjac.core.errors import TraceError
from batchjac.exact.ir import Program
from batchjac.exact.tracer import BATCHED, PER_SAMPLE, Trace, Tracer

# --------------------------------------------------------------------------------------
# Pytrees: nested dicts, lists and tuples of arrays
# --------------------------------------------------------------------------------------

# A tree's structure: (kind, dict keys or None, children's structures); kind "leaf" for an array.
TreeDef = tuple[str, Any, tuple[Any, ...]]


def flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """``(leaves, treedef)``: the arrays of a nested dict/list/tuple, in a fixed order."""
    leaves: list[Any] = []
    return leaves, _walk(tree, leaves)


# The recursions are module functions, not closures: a recursive closure is a reference
# cycle (the function, its cell), which would keep a whole trace alive until the garbage
# collector runs.
def _walk(node: Any, leaves: list[Any]) -> TreeDef:
    if isinstance(node, dict):
        keys = sorted(node, key=repr)
        return ("dict", tuple(keys), tuple(_walk(node[k], leaves) for k in keys))
    if isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
        return (type(node).__name__, None, tuple(_walk(c, leaves) for c in node))
    leaves.append(node)
    return ("leaf", None, ())


def unflatten(treedef: TreeDef, leaves: Iterable[Any]) -> Any:
    """The inverse of :func:`flatten`."""
    return _build(treedef, iter(leaves))


def _build(node: TreeDef, it: Iterator[Any]) -> Any:
    kind, keys, children = node
    if kind == "leaf":
        return next(it)
    built = [_build(c, it) for c in children]
    if kind == "dict":
        return dict(zip(keys, built))
    return tuple(built) if kind == "tuple" else built


def is_leaf(treedef: TreeDef) -> bool:
    return treedef[0] == "leaf"


# --------------------------------------------------------------------------------------
# Capture
# --------------------------------------------------------------------------------------


@dataclass
class Captured:
    """A traced call: ``program`` (output 0 is ``f``'s result; then the traced auxiliary
    outputs), ``batch``, the traced arguments' structures, and ``aux``'s."""

    program: Program
    batch: int
    argnums: tuple[int, ...]
    trees: list[TreeDef]  # treedef per differentiated argument
    leaves: list[Any]  # the differentiated leaves (arrays), in program-input order
    batched: list[bool]  # per program input: carries the batch axis
    aux_tree: TreeDef | None = None
    aux_leaves: list[Any] = field(default_factory=list)  # non-traced aux leaves, None where traced
    call_args: tuple[Any, ...] = ()


def _leaf_array(leaf: Any, where: str) -> Any:
    if isinstance(leaf, Tracer):
        return leaf
    return as_float_array(leaf, where)


def normalize_in_axes(in_axes: Any, n_args: int, per_sample: bool) -> tuple[int | None, ...]:
    """``in_axes`` as one entry (0 or None) per positional argument."""
    if in_axes is None:
        if per_sample:
            return (0,) * n_args
        return (0,) * n_args
    if isinstance(in_axes, numbers.Integral) and not isinstance(in_axes, bool):
        in_axes = (int(in_axes),) * n_args
    in_axes = tuple(in_axes)
    if len(in_axes) != n_args:
        raise ValueError(f"in_axes: expected one entry per argument ({n_args}), got {len(in_axes)}")
    for a in in_axes:
        if a not in (0, None) or isinstance(a, bool):
            raise ValueError(
                f"in_axes: each entry must be 0 (batched along axis 0) or None (shared), got {a!r}"
            )
    if not per_sample and any(a is None for a in in_axes):
        raise ValueError(
            "in_axes applies to per_sample=True; in batched mode every differentiated argument carries the batch axis"
        )
    return tuple(in_axes)


def batch_size(
    args: Sequence[Any], argnums: Sequence[int], in_axes: Sequence[int | None], per_sample: bool
) -> int:
    """The batch size: the leading length of the batched differentiated leaves (and, in
    per-sample mode, of every batched argument), all equal."""
    found: int | None = None
    first: str | None = None
    for i, a in enumerate(args):
        if i not in argnums and not (per_sample and in_axes[i] == 0):
            continue
        if per_sample and in_axes[i] is None:
            continue
        leaves, _ = flatten(a)
        for leaf in leaves:
            if isinstance(leaf, Tracer):  # a nested call: the enclosing trace's batch
                if leaf.node.batched:
                    found, first = (leaf.recording.batch, _name(i)) if found is None else (found, first)
                continue
            if not hasattr(leaf, "shape"):
                if i in argnums:
                    raise TypeError(f"{_name(i)}: expected an array (B, ...), got {type(leaf).__name__}")
                continue
            shape = leaf.shape
            if len(shape) == 0:
                raise ValueError(f"{_name(i)}: expected a batch (B, ...), got a 0-d array")
            if found is None:
                found, first = shape[0], _name(i)
            elif shape[0] != found:
                raise ValueError(f"{_name(i)}: batch size {shape[0]} differs from {first}'s {found}")
    if found is None:
        raise ValueError("per_sample=True needs at least one argument batched along axis 0 (in_axes entry 0)")
    return int(found)


def _name(i: int) -> str:
    return "x" if i == 0 else f"argument {i}"


def capture(
    f: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    argnums: Sequence[int],
    *,
    per_sample: bool = False,
    in_axes: Any = None,
    has_aux: bool = False,
    input_names: Sequence[str | None] | None = None,
) -> Captured:
    """Trace ``f(*args, **kwargs)`` with the arguments at ``argnums`` differentiated."""
    in_axes = normalize_in_axes(in_axes, len(args), per_sample)
    batch = batch_size(args, argnums, in_axes, per_sample)
    trace = Trace(PER_SAMPLE if per_sample else BATCHED, batch)
    call = list(args)
    trees: list[TreeDef] = []
    leaves_out: list[Any] = []
    batched: list[bool] = []
    with trace:
        for i in argnums:
            leaves, tree = flatten(args[i])
            traced = []
            for leaf in leaves:
                leaf = _leaf_array(leaf, _name(i))
                if isinstance(leaf, Tracer):  # a nested call: the enclosing trace's variable
                    is_batched, shape = leaf.node.batched, leaf.node.shape
                else:
                    is_batched = not (per_sample and in_axes[i] is None)
                    shape = tuple(leaf.shape[1:]) if is_batched else tuple(leaf.shape)
                traced.append(trace.new_input(shape, leaf.dtype, is_batched))
                leaves_out.append(leaf)
                batched.append(is_batched)
            trees.append(tree)
            call[i] = unflatten(tree, traced)
        if per_sample:
            for i, a in enumerate(args):
                if i in argnums or in_axes[i] is None:
                    continue
                leaves, tree = flatten(a)
                consts = [
                    trace.new_const(leaf, True) if hasattr(leaf, "shape") and np.ndim(leaf) else leaf
                    for leaf in leaves
                ]
                call[i] = unflatten(tree, consts)
        result = f(*call, **kwargs)
    aux_tree: TreeDef | None = None
    aux_leaves: list[Any] = []
    aux_traced: list[Tracer] = []
    if has_aux:
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"has_aux=True: f must return a pair (output, aux), got {type(result).__name__}")
        result, aux = result
        aux_values, aux_tree = flatten(aux)
        for leaf in aux_values:
            if isinstance(leaf, Tracer) and leaf.recording is trace:
                aux_traced.append(leaf)
                aux_leaves.append(None)
            else:
                aux_leaves.append(leaf)
    if not isinstance(result, Tracer) or result.recording is not trace:
        raise TraceError(
            "f returned a value that is not computed from its traced arguments by batchjac's or NumPy's "
            f"traceable functions (got {type(result).__name__}); it may have left the trace (numpy.asarray, "
            "a function without a derivative rule)"
        )
    if result.dtype.kind != "f":
        raise TypeError(f"f's output: expected real floating-point data, got dtype {result.dtype}")
    program = trace.program([result, *aux_traced], input_names=input_names)
    return Captured(
        program, batch, tuple(argnums), trees, leaves_out, batched, aux_tree, aux_leaves, tuple(call)
    )
