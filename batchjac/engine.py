"""The engine: one call of ``bj.value_and_jacobian`` from its arguments to its results.

It validates the call, picks the method (exact when ``f`` traces; numerical otherwise, with
a warning, for ``method="auto"``), runs it inside the backend the caller asked for (the
``backend=`` keyword wins over ``bj.use_backend`` and ``BATCHJAC_BACKEND`` for the whole
call, densification included), and shapes the results: numerator or denominator layout,
structured or dense, pytrees of parameters, auxiliary outputs. The public functions of
:mod:`batchjac.api` route here; the Dask integration calls it block by block.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from batchjac.backends.dispatch import call_backend, select_backend
from batchjac.core.arrays import as_float_array, device_of, framework_of, namespace
from batchjac.core.errors import NotComplexSafeError, NotFusableError, NumericalFallbackWarning, TraceError
from batchjac.core.validation import (
    NUMERICAL_METHODS,
    check_argnums,
    check_callable,
    check_chunk_size,
    check_layout,
    check_method,
    check_progress,
)
from batchjac.exact import (
    lax,
    ops,  # noqa: F401 - attaches the traced arrays' operators
)
from batchjac.exact.capture import Captured, TreeDef, capture, flatten, normalize_in_axes, unflatten
from batchjac.exact.interpret import reverse
from batchjac.exact.interpret.evaluate import evaluate, plain
from batchjac.exact.interpret.jacobian import value_and_jacobians
from batchjac.exact.ir import Program, Var
from batchjac.exact.ops.operands import unwrap
from batchjac.exact.tracer import PER_SAMPLE, Batched, Tracer
from batchjac.numerical.differences import (
    FALLBACK_BUDGET,
    MEMORY_FRACTION,
    _progress_bar,
    free_memory,
    numerical_value_and_jacobian,
)
from batchjac.structured.types import Jacobian

if TYPE_CHECKING:  # imported where used (the fused path loads numba's compiler)
    from batchjac.exact.fuse.plan import FusionDecision

FUSE_OPTIONS = ("auto", True, False)
SMALL_REQUEST = 64 << 20  # bytes: requests below this skip the free-memory check


@dataclass(frozen=True)
class Options:
    """The validated keywords of one call."""

    argnums: tuple[int, ...]
    single: bool
    method: str
    layout: str
    backend: str | None
    chunk_size: int | None
    structured: bool
    progress: bool | None
    per_sample: bool
    in_axes: tuple[int | None, ...]
    has_aux: bool
    fuse: bool | str
    framework: str | None = None  # "torch" or "jax" when x came from there: f gets its arrays
    sparsity: Any = None  # a pattern (m, n), or "auto": numerical Jacobians by column colouring


def check_options(
    f: Callable[..., Any], args: Sequence[Any], *, argnums: int | Sequence[int] = 0, method: str = "auto",
    layout: str = "numerator", backend: str | None = None, chunk_size: int | None = None, structured: bool = False,
    progress: bool | None = None, per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None,
    has_aux: bool = False, fuse: bool | str = "auto", sparsity: Any = None,
) -> Options:  # fmt: skip
    """Validate the keywords of a Jacobian call (each error names its argument)."""
    check_callable(f, "f")
    method = check_method(method)
    layout = check_layout(layout)
    for name, value in (("structured", structured), ("per_sample", per_sample), ("has_aux", has_aux)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {value!r}")
    if fuse not in FUSE_OPTIONS or isinstance(fuse, np.bool_):
        raise ValueError(f"fuse: expected 'auto', True or False, got {fuse!r}")
    if sparsity is not None and method not in NUMERICAL_METHODS:
        raise ValueError(
            f"sparsity= colours the columns of a numerical Jacobian: give method='central', 'forward' or "
            f"'complex-step' (got method={method!r}; the exact path finds the pattern itself: bj.sparsity(f, x))"
        )
    if structured and method in NUMERICAL_METHODS and sparsity is None:
        raise ValueError(f"structured=True needs the exact method (or sparsity= with a numerical one), got method={method!r}")
    nums = check_argnums(argnums, len(args))
    return Options(
        argnums=nums, single=not isinstance(argnums, (tuple, list)), method=method, layout=layout,
        backend=backend, chunk_size=check_chunk_size(chunk_size), structured=bool(structured),
        progress=check_progress(progress), per_sample=bool(per_sample),
        in_axes=normalize_in_axes(in_axes, len(args), bool(per_sample)), has_aux=bool(has_aux), fuse=fuse,
        sparsity=sparsity,
    )  # fmt: skip


def _arg_name(i: int) -> str:
    return "x" if i == 0 else f"argument {i}"


def _prepared(args: Sequence[Any], options: Options) -> tuple[Any, ...]:
    """The call's arguments with each differentiated leaf a real floating array (or a tracer
    of an enclosing trace: a nested call)."""
    args = list(args)
    for i in options.argnums:
        if isinstance(args[i], (list, tuple)) and _all_numbers(args[i]):
            args[i] = np.asarray(args[i])  # a nested list of numbers is an array, not a pytree
        leaves, tree = flatten(args[i])
        if not leaves:
            raise ValueError(f"{_arg_name(i)}: a differentiated argument must hold at least one array")
        args[i] = unflatten(tree, [leaf if isinstance(leaf, Tracer) else as_float_array(leaf, _arg_name(i)) for leaf in leaves])
    return tuple(args)


def _all_numbers(tree: Any) -> bool:
    leaves, _ = flatten(tree)
    return bool(leaves) and all(isinstance(leaf, (int, float, np.number)) and not isinstance(leaf, bool) for leaf in leaves)


def _leaves(args: Sequence[Any], options: Options) -> list[Any]:
    return [leaf for i in options.argnums for leaf in flatten(args[i])[0]]


def value_and_jacobian(
    f: Callable[..., Any], *args: Any, kwargs: dict[str, Any] | None = None, **keywords: Any
) -> tuple[Any, Any, Any]:
    """``(value, jacobians, aux)`` of ``f`` at ``args``; keywords as in ``bj.jacobian``.

    ``jacobians`` has one entry per ``argnums`` entry (the bare entry for an integer
    ``argnums``), each in the structure of its argument (an array, or a dict/list/tuple of
    them); ``aux`` is ``f``'s auxiliary output (None without ``has_aux``).
    """
    kwargs = kwargs or {}
    options = check_options(f, args, **keywords)
    foreign = {framework_of(leaf) for leaf in _leaves(args, options)} & {"torch", "jax"}
    if foreign:
        options = replace(options, framework=sorted(foreign, key=str)[0])
    args = _prepared(args, options)
    leaves = _leaves(args, options)
    if any(isinstance(leaf, Tracer) for leaf in leaves):
        # a differentiated argument is a tracer: the call is inside f of an enclosing
        # bj.jacobian (or bj.grad), and must itself be traceable
        return _nested(f, args, kwargs, options)
    with call_backend(options.backend):  # the requested backend resolved once for the call
        select_backend(*leaves, names=lambda: [f"leaf {i}" for i in range(len(leaves))])  # devices agree
        return _value_and_jacobian(f, args, kwargs, options)


def _value_and_jacobian(
    f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], options: Options
) -> tuple[Any, Any, Any]:
    method = "exact" if options.structured and options.sparsity is None else options.method
    if method in ("auto", "exact"):
        try:
            captured = capture(f, args, kwargs, options.argnums, per_sample=options.per_sample,
                               in_axes=options.in_axes, has_aux=options.has_aux)  # fmt: skip
        except (TraceError, TypeError) as err:
            if isinstance(err, TypeError) and not isinstance(err, TraceError) and options.framework is None:
                raise
            if method == "exact":
                if isinstance(err, TraceError):
                    raise
                raise TraceError(f"a {options.framework} function does not trace with batchjac ({err}); use a numerical method") from err
            _warn_fallback(f"{getattr(f, '__name__', 'f')} does not trace ({err})", "complex-step")
            method = "complex-step"
        else:
            return _exact(captured, options)
    return _numerical(f, args, kwargs, method, options, auto=options.method == "auto")


def _warn_fallback(reason: str, method: str) -> None:
    warnings.warn(f"{reason}; using method={method!r}", NumericalFallbackWarning, stacklevel=5)


# --------------------------------------------------------------------------------------
# Exact
# --------------------------------------------------------------------------------------


def _exact(captured: Captured, options: Options) -> tuple[Any, Any, Any]:
    program, batch = _single_output(captured.program), captured.batch  # aux outputs are not differentiated
    inputs = list(captured.leaves)
    in_shapes = [tuple(leaf.shape[1:]) if b else tuple(leaf.shape) for leaf, b in zip(captured.leaves, captured.batched)]
    sources = [*inputs, *program.const_values]
    fused = _fused_path(program, inputs, batch, options)
    if fused is not None:
        value, jacobians = fused
        results = _finish(value, jacobians, in_shapes, options, sources=sources)
        aux = _aux(captured, inputs) if options.has_aux else None
        return value, _rebuild(results, captured.trees, options), aux
    chunk = exact_chunk(program, inputs, batch, options)
    scalar = program.outputs[0].size == 1 and not options.structured  # structured results keep their structure
    gradient = _gradient_path(program, inputs, batch) if chunk >= batch and scalar else None
    if gradient is not None:
        value, jacobians = gradient
        results = _finish(value, jacobians, in_shapes, options, sources=sources)
    elif chunk >= batch:
        value, jacobians, plan = value_and_jacobians(program, inputs, program.const_values, program.inputs, batch)
        value = _owned(_whole_batch(value, program.outputs[0], batch), inputs)
        for J in jacobians:
            J.plan = plan
        results = _finish(value, jacobians, in_shapes, options, sources=sources)
    else:
        value, results = _exact_in_chunks(program, inputs, captured.batched, batch, chunk, in_shapes, options)
    aux = _aux(captured, inputs) if options.has_aux else None
    return value, _rebuild(results, captured.trees, options), aux


def _fused_path(
    program: Program, inputs: Sequence[Any], batch: int, options: Options
) -> tuple[Any, list[Jacobian]] | None:
    """The value and Jacobians by one compiled kernel (:mod:`batchjac.exact.fuse`), or None for
    the structured chain. ``fuse=True`` insists (a program it cannot compile is an error),
    ``False`` never fuses, ``"auto"`` follows the planner's estimate, and with
    ``structured=True`` fuses only element-wise programs (whose fused result is ``Diagonal``
    too: other fused results are ``Dense``, the chain keeps more structure); an explicit
    ``chunk_size`` selects the chunked chain; ``"auto"`` fuses programs whose estimated saving
    per sample is large (:data:`FUSE_MIN_SAVING`), so that compiling pays."""
    from batchjac.exact.fuse import fused_value_and_jacobians, plan_fusion

    if options.fuse is False or (options.fuse == "auto" and (batch == 0 or options.chunk_size is not None)):
        return None  # an explicit chunk_size asks for the chunked chain (a fused kernel needs no chunks)
    device = device_of(inputs[0]) if inputs else "cpu"
    # estimated at a nominal batch: the choice depends on the program alone (see FUSE_MIN_SAVING),
    # so it is made once per structure and device
    key = (program.key, device)
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = plan_fusion(program, program.inputs, DECISION_BATCH, program.outputs[0].dtype, device)
        if len(_DECISIONS) >= 512:
            _DECISIONS.pop(next(iter(_DECISIONS)))
        _DECISIONS[key] = decision
    if options.fuse is True:
        if not decision.fusable:
            raise NotFusableError(f"fuse=True: {decision.explain()}")
    elif decision.path != "fused" or (options.structured and decision.mode != "elementwise"):
        return None
    elif not _worth_compiling(program, decision, batch, device):
        return None
    output = program.outputs[0]
    needed = output.size * sum(v.size for v in program.inputs) * batch * output.dtype.itemsize
    free = free_memory(inputs[0]) if inputs and needed > SMALL_REQUEST else None
    if free is not None and needed > free:
        raise MemoryError(f"the fused Jacobian needs {needed:,} bytes for its result; only {free:,} are free")
    value, jacobians, decision = fused_value_and_jacobians(program, inputs, program.const_values, program.inputs,
                                                           batch, backend=options.backend)  # fmt: skip
    plan = decision.plan()
    for J in jacobians:
        J.plan = plan
    return _whole_batch(value, output, batch), jacobians  # a fresh buffer: never the caller's


_DECISIONS: dict[Any, FusionDecision] = {}  # (program key, device) -> plan_fusion at DECISION_BATCH

# fuse="auto" compiles a kernel for programs where fusing saves at least this many operations
# per sample over the chain (the planner's estimates): worth its compile time for any batch
# worth the name, while small programs, whose chain costs microseconds, skip the compiler.
# The rule depends on the program alone (not on the batch size nor on what was compiled
# before), so a call gives the same results, bit for bit, in chunks, on Dask workers or whole.
FUSE_MIN_SAVING = 2000
DECISION_BATCH = 10**6  # the batch at which the planner's per-sample estimates are compared
# Compile time grows faster than the generated code (measured on a 2-core CPU: 1.5 s for the
# 230 statements of the W4 kinematics, 10 s for W5's 607, minutes above 1000): "auto"
# compiles small kernels only; fuse=True compiles any fusable program.
AUTO_MAX_STATEMENTS = 400


def _worth_compiling(program: Program, decision: FusionDecision, batch: int, device: str) -> bool:
    saving = decision.chain_operations - (decision.fused_operations or 0)
    return saving >= FUSE_MIN_SAVING and (decision.statements or 0) <= AUTO_MAX_STATEMENTS


def _gradient_path(program: Program, inputs: Sequence[Any], batch: int) -> tuple[Any, list[Jacobian]] | None:
    """One output entry per sample: its Jacobian is a gradient, and one backward sweep (reverse
    mode) gives it at the cost of the function (per-sample parameter gradients never build a
    Kronecker product). ``(value, [Dense (B, 1, n_k)])``, or None where a primitive has no
    reverse-mode rule (the chain path serves it)."""
    from batchjac.exact.interpret.evaluate import plain
    from batchjac.exact.interpret.jacobian import AssemblyPlan
    from batchjac.structured.types import Dense

    out = program.outputs[0]
    single = _single_output(program)
    try:
        (value,), grads = reverse.vjp(single, inputs, [np.ones(out.shape, dtype=out.dtype)])
    except NotImplementedError:
        return None
    value = _owned(_whole_batch(plain(value), out, batch), inputs)
    plan = AssemblyPlan(path="reverse", reason="one output entry per sample: one backward sweep gives the gradient")
    jacobians: list[Jacobian] = []
    for g, var in zip(grads, program.inputs):
        # a per-sample gradient is already (B, ...); one shared by the batch (zero, or f not
        # depending on the sample) is repeated
        g = plain(g) if isinstance(g, Batched) else _whole_batch(plain(g), _shared(var), batch)
        J = Dense(g.reshape(batch, 1, var.size))
        J.plan = plan
        jacobians.append(J)
    return value, jacobians


def _shared(var: Var) -> Var:
    """``var``'s aval as a shared value (a zero gradient comes back without the batch axis)."""
    from batchjac.exact.ir import Var

    return Var(var.index, var.shape, var.dtype, False)


def exact_memory_per_sample(program: Program, inputs: Sequence[Any]) -> int:
    """Bytes one sample needs on the exact path (an estimate, counted from the program):
    every value, a local Jacobian per differentiated edge (an entry per output entry for
    structured rules, output times input for dense ones: products of traced operands,
    softmax, linear algebra), and three copies of the result (assembly, densified, layout).
    Counted once per structure."""
    return _memory_facts(program)[0]


def _memory_facts(program: Program) -> tuple[int, int]:
    """``(exact_memory_per_sample, _working_bytes_per_sample)``, counted once per structure."""
    found = _MEMORY_PER_SAMPLE.get(program.key)
    if found is None:
        per_sample = _count_memory_per_sample(program)
        found = _MEMORY_PER_SAMPLE[program.key] = (per_sample, _working_bytes_per_sample(program, per_sample))
        if len(_MEMORY_PER_SAMPLE) > 512:
            _MEMORY_PER_SAMPLE.pop(next(iter(_MEMORY_PER_SAMPLE)))
    return found


_MEMORY_PER_SAMPLE: dict[Any, tuple[int, int]] = {}


def _count_memory_per_sample(program: Program) -> int:
    from batchjac.exact.ir import Var

    active = program.active(program.inputs)
    dense_rules = {"matmul", "einsum", "softmax", "log_softmax", "det", "logabsdet", "inv", "solve", "cholesky"}
    itemsize = max(np.dtype(v.dtype).itemsize for v in program.outputs[:1])
    entries = 0
    for eq in program.equations:
        entries += eq.out.size
        if eq.out in active:
            for i, o in enumerate(eq.inputs):
                if isinstance(o, Var) and o in active:
                    entries += eq.out.size * (o.size if _dense_local(eq, i, dense_rules) else 1)
    result = program.outputs[0].size * sum(v.size for v in program.inputs)
    return itemsize * (entries + 3 * result)


def _dense_local(eq: Any, i: int, dense_rules: set[str]) -> bool:
    """Whether the local Jacobian of ``eq`` w.r.t. operand ``i`` is a dense per-sample block:
    a product with a matrix shared by the batch (a weight) is ``Shared`` or a Kronecker
    product, stored once for the batch."""
    if eq.primitive.name not in dense_rules:
        return False
    if eq.primitive.name in ("matmul", "einsum"):
        return any(getattr(o, "batched", False) for k, o in enumerate(eq.inputs) if k != i)
    return True


def _working_bytes_per_sample(program: Program, per_sample: int) -> int:
    """Of ``per_sample`` (:func:`exact_memory_per_sample`), the bytes of values and local
    Jacobians (not the result's copies)."""
    itemsize = np.dtype(program.outputs[0].dtype).itemsize
    result = program.outputs[0].size * sum(v.size for v in program.inputs)
    return per_sample - 3 * itemsize * result


# A large batch goes through the chain in passes whose values and local Jacobians take at
# most WORKING_SET bytes (the result is allocated once, for the whole batch): the peak stays
# near the result's size instead of growing with the length of the program, and each pass
# works in cache (on the CPU). A pass has at least MIN_PASS samples, so the per-pass Python
# cost stays small against the kernels, and the passes have equal sizes (no pass of a few
# samples, for which BLAS may take another route). A sample's arithmetic does not depend on
# its pass, except where a BLAS product rounds differently for another number of rows (the
# README's "Known limitations").
WORKING_SET = 64 << 20
MIN_PASS = 1024


def exact_chunk(program: Program, inputs: Sequence[Any], batch: int, options: Options) -> int:
    """Samples per pass of the exact path: all of them when they fit in half the free memory
    (or ``chunk_size`` when given); ``MemoryError`` before allocating when one sample does
    not fit. Structured results are never chunked (they are one object)."""
    if batch == 0:
        return 1
    per_sample, working = _memory_facts(program)
    needed = per_sample * (options.chunk_size or batch)
    # reading the free memory costs a system call: below SMALL_REQUEST it cannot matter
    free = free_memory(inputs[0]) if inputs and needed > SMALL_REQUEST else None
    if free is not None and per_sample > free:
        raise MemoryError(
            f"the exact Jacobian needs about {per_sample:,} bytes per sample (values, local Jacobians and "
            f"the result {program.outputs[0].size} x {sum(v.size for v in program.inputs)}); only {free:,} bytes "
            "are free: even one sample at a time does not fit"
        )
    if options.chunk_size is not None:
        if options.structured:
            raise ValueError("chunk_size: a structured Jacobian is one object and is not computed in chunks; drop chunk_size or structured=True")
        if free is not None and options.chunk_size * per_sample > free:
            raise MemoryError(
                f"chunk_size={options.chunk_size} samples need about {options.chunk_size * per_sample:,} bytes on the "
                f"exact path; only {free:,} are free (about {free // per_sample:,} samples fit)"
            )
        return options.chunk_size
    if options.structured:
        return batch
    budget = FALLBACK_BUDGET if free is None else int(MEMORY_FRACTION * free)
    chunk = max(1, min(batch, budget // max(per_sample, 1)))
    # a scalar output takes the gradient path, linear already; a GPU has no cache to fit
    if program.outputs[0].size > 1 and (not inputs or device_of(inputs[0]) == "cpu"):
        if working * chunk > WORKING_SET:
            chunk = min(chunk, max(MIN_PASS, WORKING_SET // max(working, 1)))
    passes = -(-batch // chunk)
    return -(-batch // passes)  # passes of equal sizes (the last one at most passes - 1 smaller)


def _exact_in_chunks(
    program: Program,
    inputs: Sequence[Any],
    batched: Sequence[bool],
    batch: int,
    chunk: int,
    in_shapes: Sequence[tuple[int, ...]],
    options: Options,
) -> tuple[Any, list[Any]]:
    """The exact path over slices of the batch, each written into the preallocated results."""
    xp = namespace(*[a for a in inputs if hasattr(a, "shape")])
    out = program.outputs[0]
    value = xp.empty((batch, *out.shape), dtype=out.dtype)
    results: list[Any] = []
    passes = -(-batch // chunk)
    with _progress_bar(passes, options.progress, "exact Jacobian") as bar:
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            part = [a[start:stop] if b else a for a, b in zip(inputs, batched)]
            # per-sample data that is not differentiated (batched constants) is sliced too
            consts = [c[start:stop] if var.batched else c for c, var in zip(program.const_values, program.consts)]
            v, jacobians, _ = value_and_jacobians(program, part, consts, program.inputs, stop - start)
            value[start:stop] = _whole_batch(v, out, stop - start)
            if not results:  # the dtype the chain gives (as for the whole batch in one pass)
                results = [xp.empty((batch, *out.shape, *shape), dtype=J.dtype) for J, shape in zip(jacobians, in_shapes)]
            for result, J in zip(results, jacobians):
                result[start:stop] = J.to_dense().reshape(result[start:stop].shape)
            bar.update()
    if options.layout == "denominator":
        n_out = len(out.shape)
        results = [
            r.transpose((0, *range(1 + n_out, 1 + n_out + len(s)), *range(1, 1 + n_out))) for r, s in zip(results, in_shapes)
        ]
    return value, results


def _aux(captured: Captured, inputs: Sequence[Any]) -> Any:
    program = captured.program
    if len(program.outputs) == 1:
        traced = []
    else:
        outs, _ = evaluate(program, inputs)
        traced = [_whole_batch(plain(o), var, captured.batch) for o, var in zip(outs[1:], program.outputs[1:])]
    it = iter(traced)
    leaves = [next(it) if leaf is None else leaf for leaf in captured.aux_leaves]
    return unflatten(cast(TreeDef, captured.aux_tree), leaves)  # has_aux: f returned an aux tree


def _whole_batch(value: Any, var: Var, batch: int) -> Any:
    """A value of the whole batch ``(B, ...)`` (a shared one repeated)."""
    if var.batched:
        return value
    xp = namespace(value) if hasattr(value, "shape") else np
    out = xp.empty((batch, *var.shape), dtype=var.dtype)
    out[...] = value
    return out


def _owned(value: Any, sources: Sequence[Any]) -> Any:
    """``value`` itself, or a copy when it shares memory with an input (``f = lambda x: x``)
    or is a read-only view: results never alias the caller's arrays."""
    # an array that owns its memory shares it with no source unless it is one (f = lambda x:
    # x returns x itself): a source that is a view of it would have to exist before the call
    if getattr(value, "base", None) is None and not any(value is s for s in sources):
        return value
    return value.copy()


def _shares(array: Any, sources: Sequence[Any]) -> bool:
    for s in sources:
        if isinstance(s, np.ndarray) and isinstance(array, np.ndarray) and np.may_share_memory(array, s):
            return True
    return False


def _detached(J: Jacobian, sources: Sequence[Any]) -> Jacobian:
    """``J``, or a copy of it when it stores a caller's array (a weight of a ``Shared``
    Jacobian): an in-place update of the caller's array must not change a result."""
    if any(_shares(a, sources) for a in J._arrays()):
        copy = J.scaled(1.0)
        copy.plan = getattr(J, "plan", None)
        return copy
    return J


def _finish(
    value: Any,
    jacobians: Sequence[Any],
    in_shapes: Sequence[tuple[int, ...]],
    options: Options,
    sources: Sequence[Any] = (),
) -> list[Any]:
    out_shape = tuple(value.shape[1:])
    batch = value.shape[0]
    results = []
    for J, in_shape in zip(jacobians, in_shapes):
        if options.structured:
            J = _detached(J, sources)
            if options.layout == "denominator":
                transposed = J.T
                for attribute in ("plan", "colors", "evaluations", "coloring"):  # what the result reports
                    if hasattr(J, attribute):
                        setattr(transposed, attribute, getattr(J, attribute))
                J = transposed
            results.append(J)
            continue
        dense = J.to_dense() if isinstance(J, Jacobian) else J
        if _shares(dense, sources):
            dense = dense.copy()
        dense = dense.reshape(batch, *out_shape, *in_shape)
        if options.layout == "denominator":
            n_out, n_in = len(out_shape), len(in_shape)
            dense = dense.transpose((0, *range(1 + n_out, 1 + n_out + n_in), *range(1, 1 + n_out)))
        results.append(dense)
    return results


def _rebuild(results: Sequence[Any], trees: Sequence[TreeDef], options: Options) -> Any:
    """Per-leaf results back into the structure of each differentiated argument."""
    it = iter(results)
    per_argument = [unflatten(tree, [next(it) for _ in range(_count(tree))]) for tree in trees]
    return per_argument[0] if options.single else tuple(per_argument)


def _count(tree: TreeDef) -> int:
    kind, _, children = tree
    return 1 if kind == "leaf" else sum(_count(c) for c in children)


def _nested(
    f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], options: Options
) -> tuple[Any, Any, Any]:
    """A Jacobian inside a traced function: reverse mode written with traced operations, one
    backward sweep per output entry, so that the enclosing trace records it (second
    derivatives of ``bj.jacobian(lambda x: bj.jacobian(g, x), x)``)."""
    if options.structured:
        raise TraceError("structured=True is not available inside a traced function (a nested bj.jacobian); use the dense result")
    if options.method in NUMERICAL_METHODS:
        raise TraceError(f"method={options.method!r} cannot run inside a traced function (its input is traced); use method='exact'")
    # under a per-sample enclosing trace the arguments are samples: f is taken per sample too
    per_sample = options.per_sample or any(
        leaf.recording.mode == PER_SAMPLE for leaf in _leaves(args, options) if isinstance(leaf, Tracer)
    )
    captured = capture(f, args, kwargs, options.argnums, per_sample=per_sample,
                       in_axes=options.in_axes, has_aux=options.has_aux)  # fmt: skip
    program = captured.program
    wrt = list(program.inputs)
    output, jacobians = reverse.jacobian_rows(_single_output(program), captured.leaves, wrt=wrt)
    if options.layout == "denominator":
        out_ndim = program.outputs[0].ndim
        jacobians = [
            lax.transpose(J, (*range(out_ndim, out_ndim + v.ndim), *range(out_ndim))) for J, v in zip(jacobians, wrt)
        ]
    jacobians = [unwrap(_anchored(J, leaf)) for J, leaf in zip(jacobians, captured.leaves)]
    aux = _aux(captured, captured.leaves) if options.has_aux else None
    return unwrap(output), _rebuild(jacobians, captured.trees, options), aux


def _anchored(J: Any, x: Any) -> Any:
    """A Jacobian that does not depend on a traced ``x`` (``f`` linear in it) as a value of ``x``'s
    trace with a zero derivative: ``where(True, J, sum(x))``. An enclosing Jacobian then sees a
    function of ``x`` (whose derivative is 0), not a constant that looks as if ``f`` had left
    the trace."""
    if not isinstance(x, Tracer) or isinstance(J, Tracer):
        return J
    total = lax.reduce_sum(x, tuple(range(len(x.node.shape))))
    return lax.select(np.ones(np.shape(J), dtype=bool), J, total)


def _single_output(program: Program) -> Program:
    """The program restricted to its first output (auxiliary outputs dropped)."""
    if len(program.outputs) == 1:
        return program
    from batchjac.exact.ir import Program

    return Program(program.inputs, program.consts, program.const_values, program.equations, program.outputs[:1], mode=program.mode)


# --------------------------------------------------------------------------------------
# Numerical
# --------------------------------------------------------------------------------------


def _flat_function(
    f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], options: Options, batch: int
) -> tuple[Callable[..., Any], list[Any], tuple[int, ...], list[TreeDef]]:
    """``f`` as a function of batched arrays only: the differentiated leaves (a shared
    per-sample parameter broadcast to the batch, so that each sample gets its own
    perturbation) and the other arguments. Returns ``(g, flat_args, flat_argnums, trees)``.
    A per-sample ``f`` is mapped over the samples by a loop."""
    trees: list[TreeDef] = []
    flat: list[Any] = []
    flat_argnums: list[int] = []
    slots: list[tuple[int, int, int, TreeDef | None]] = []
    for i, a in enumerate(args):
        if i in options.argnums:
            leaves, tree = flatten(a)
            if options.per_sample and options.in_axes[i] is None:
                leaves = [namespace(leaf).broadcast_to(leaf, (batch, *leaf.shape)) for leaf in leaves]
            trees.append(tree)
            slots.append((i, len(flat), len(leaves), tree))
            flat_argnums.extend(range(len(flat), len(flat) + len(leaves)))
            flat.extend(leaves)
        else:
            slots.append((i, len(flat), 1, None))
            flat.append(a)

    def rebuild(values: Sequence[Any]) -> list[Any]:
        return [values[start] if tree is None else unflatten(tree, values[start : start + count]) for _, start, count, tree in slots]

    def output(out: Any) -> Any:
        return out[0] if options.has_aux else out

    if not options.per_sample:
        return (lambda *values: output(f(*rebuild(values), **kwargs))), flat, tuple(flat_argnums), trees

    mapped = {i for i in range(len(args)) if options.in_axes[i] == 0 or i in options.argnums}

    def per_sample(*values: Any) -> Any:
        call = rebuild(values)
        count = next(flatten(call[i])[0][0].shape[0] for i in sorted(mapped))
        outs = []
        for b in range(count):
            sample = [_index_tree(v, b) if i in mapped else v for i, v in enumerate(call)]
            outs.append(output(f(*sample, **kwargs)))
        return namespace(*outs).stack(outs) if outs else np.zeros((0,))

    return per_sample, flat, tuple(flat_argnums), trees


def _copies(args: Sequence[Any]) -> list[Any]:
    """The arguments with every array a fresh copy (``f`` may write into its inputs)."""
    out = []
    for a in args:
        leaves, tree = flatten(a)
        out.append(unflatten(tree, [leaf.copy() if hasattr(leaf, "copy") and hasattr(leaf, "shape") else leaf for leaf in leaves]))
    return out


def _index_tree(tree: Any, b: int) -> Any:
    leaves, treedef = flatten(tree)
    return unflatten(treedef, [leaf[b] if hasattr(leaf, "shape") and np.ndim(leaf) else leaf for leaf in leaves])


def _numerical(
    f: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
    method: str,
    options: Options,
    auto: bool,
) -> tuple[Any, Any, Any]:
    batch = _leaves(args, options)[0].shape[0] if not options.per_sample else _batch_of(args, options)
    g, flat, flat_argnums, trees = _flat_function(f, args, kwargs, options, batch)

    def run(method: str) -> tuple[Any, Any]:
        return numerical_value_and_jacobian(g, flat, flat_argnums, method, backend=options.backend,
                                            chunk_size=options.chunk_size, progress=options.progress,
                                            f_framework=options.framework)  # fmt: skip

    if options.sparsity is not None:
        from batchjac.numerical.coloring import sparse_value_and_jacobian

        def run(method: str) -> tuple[Any, Any]:  # noqa: F811 - the coloured variant of the same call
            return sparse_value_and_jacobian(g, flat, flat_argnums, method, pattern=options.sparsity,
                                             backend=options.backend, chunk_size=options.chunk_size,
                                             progress=options.progress, f_framework=options.framework)  # fmt: skip

    try:
        value, jacobians = run(method)
    except NotComplexSafeError as err:
        if not auto:
            raise
        _warn_fallback(f"f is not complex-safe ({err})", "central")
        value, jacobians = run("central")
    aux = None
    if options.has_aux:
        own = _copies(args)  # f never sees the caller's buffers
        aux = f(*own, **kwargs)[1] if not options.per_sample else [f(*_index_tree(list(own), b), **kwargs)[1] for b in range(batch)]
    in_shapes = [tuple(flat[k].shape[1:]) for k in flat_argnums]
    results = _finish(value, jacobians, in_shapes, options)
    return value, _rebuild(results, trees, options), aux


def _batch_of(args: Sequence[Any], options: Options) -> int:
    from batchjac.exact.capture import batch_size

    return batch_size(args, options.argnums, options.in_axes, True)


def in_memory(f: Callable[..., Any], *args: Any, **keywords: Any) -> tuple[Any, Any]:
    """``(value, jacobians)`` of one in-memory call (the Dask integration's block call)."""
    value, jacobians, _ = value_and_jacobian(f, *args, **keywords)
    return value, jacobians
