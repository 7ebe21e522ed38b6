"""Function transforms in JAX's spirit, batched: ``grad``, ``vjp``, ``jvp``, ``hvp``, ``vhp``,
``hessian``.

Reverse mode is a program (:mod:`batchjac.exact.interpret.reverse`): each transform traces
``f``, then runs the primitives' reverse-mode rules, which are traceable themselves. So every
transform works on arrays (values) and on traced arrays (it records into the enclosing
trace): they nest. The Hessian is the structured Jacobian of the gradient program, so its
structure is kept (``Diagonal`` for a sum of element-wise terms, ``Shared`` for a quadratic
form) and it is assembled in the cheapest order like any Jacobian.

``jvp`` uses the transpose trick: the VJP ``u -> u^T J`` is linear in ``u``, and its own VJP
along ``v`` is ``J v``: one forward sweep and two backward sweeps, nothing materialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from batchjac.core.arrays import namespace
from batchjac.core.errors import NumericalFallbackWarning, TraceError
from batchjac.core.validation import check_callable, check_method
from batchjac.engine import Options, _prepared, check_options, value_and_jacobian
from batchjac.exact import lax
from batchjac.exact.capture import Captured, TreeDef, capture, flatten, is_leaf, unflatten
from batchjac.exact.interpret import reverse
from batchjac.exact.ir import Program, Var
from batchjac.exact.ops import sum as sum_
from batchjac.exact.ops.operands import unwrap
from batchjac.exact.tracer import PER_SAMPLE, Batched, Trace, Tracer
from batchjac.structured.types import Diagonal, Jacobian

HESSIAN_METHODS = ("auto", "exact", "central")


def _captured(
    f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], options: Options
) -> tuple[Captured, Sequence[Any]]:
    args = _prepared(args, options)
    per_sample = options.per_sample or any(
        isinstance(leaf, Tracer) and leaf.recording.mode == PER_SAMPLE
        for i in options.argnums
        for leaf in flatten(args[i])[0]
    )
    return capture(f, args, kwargs, options.argnums, per_sample=per_sample, in_axes=options.in_axes,
                   has_aux=options.has_aux), args  # fmt: skip


def _whole(value: Any, var: Var, batch: int) -> Any:
    """A result for the caller: batched arrays unwrapped; a shared zero broadcast to the batch."""
    if isinstance(value, (Tracer, Batched)):
        return unwrap(value)
    xp = namespace(value) if hasattr(value, "shape") else np
    out = xp.empty((batch, *var.shape), dtype=var.dtype)
    out[...] = value
    return out


def _per_argument(results: Sequence[Any], captured: Captured, options: Options) -> Any:
    it = iter(results)
    trees = [unflatten(tree, [next(it) for _ in range(_count(tree))]) for tree in captured.trees]
    return trees[0] if options.single else tuple(trees)


def _count(tree: TreeDef) -> int:
    kind, _, children = tree
    return 1 if kind == "leaf" else sum(_count(c) for c in children)


def _aux(captured: Captured) -> Any:
    from batchjac.engine import _aux as aux_of

    return aux_of(captured, captured.leaves)


# --------------------------------------------------------------------------------------
# grad, vjp, jvp
# --------------------------------------------------------------------------------------


def grad(
    f: Callable[..., Any],
    argnums: int | Sequence[int] = 0,
    *,
    per_sample: bool = False,
    in_axes: int | Sequence[int | None] | None = None,
    has_aux: bool = False,
) -> Callable[..., Any]:
    """The gradient of a scalar-valued ``f``, as a function of ``f``'s arguments.

    ``f`` maps a batch to ``(B,)`` (one number per sample; ``()`` per sample with
    ``per_sample=True``); ``grad(f)(x, *args)`` gives ``(B, *in_shape)`` (a tuple for a tuple
    ``argnums``; the structure of a dict/list argument). Works on arrays and inside traced
    functions (it nests: ``bj.jacobian(bj.grad(f), x)`` is the Hessian).

    Parameters
    ----------
    f : callable
    argnums : int or tuple of int
    per_sample, in_axes, has_aux
        As for :func:`bj.jacobian`; with ``has_aux`` the function returns ``(gradient, aux)``.

    Returns
    -------
    callable

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.grad(lambda x: np.sum(x**3, axis=-1))(np.array([[1.0, 2.0]])).tolist()
    [[3.0, 12.0]]
    """
    check_callable(f)

    def gradient(*args: Any, **kwargs: Any) -> Any:
        options = check_options(
            f, args, argnums=argnums, per_sample=per_sample, in_axes=in_axes, has_aux=has_aux
        )
        captured, _ = _captured(f, args, kwargs, options)
        program = reverse_program(captured)
        out = program.outputs[0]
        if out.shape != ():
            raise ValueError(
                f"grad: f must return one number per sample, got per-sample shape {out.shape}; use bj.jacobian or bj.vjp"
            )
        _, grads = reverse.vjp(program, captured.leaves, [np.ones((), dtype=out.dtype)])
        grads = [_anchored(g, leaf) for g, leaf in zip(grads, captured.leaves)]
        results = [_whole(g, v, captured.batch) for g, v in zip(grads, program.inputs)]
        gradients = _per_argument(results, captured, options)
        return (gradients, _aux(captured)) if has_aux else gradients

    gradient.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
    gradient.__doc__ = f"The gradient of {getattr(f, '__name__', 'f')} (bj.grad)."
    return gradient


def _anchored(g: Any, x: Any) -> Any:
    """A gradient ``g`` that does not depend on a traced ``x`` (``f`` linear in it) as a value of
    ``x``'s trace: ``where(True, g, x)``, whose derivative w.r.t. ``x`` is zero. So an enclosing
    ``bj.jacobian`` (the Hessian) sees a function of ``x`` with a zero derivative, not a constant
    that looks as if ``f`` had left the trace."""
    if not isinstance(x, Tracer) or isinstance(g, Tracer):
        return g
    return lax.select(np.ones(x.node.shape, dtype=bool), g, x)


def reverse_program(captured: Captured) -> Program:
    """The captured program with its first output only (auxiliary outputs are not
    differentiated)."""
    from batchjac.engine import _single_output

    return _single_output(captured.program)


def vjp(f: Callable[..., Any], x: Any, *args: Any, argnums: int | Sequence[int] = 0, per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None, has_aux: bool = False,
        **kwargs: Any) -> tuple[Any, ...]:  # fmt: skip
    """``(f(x, *args), vjp_fn)``: ``vjp_fn(u)`` gives ``u^T J`` per sample for a cotangent
    ``u`` ``(B, *out_shape)``, without building ``J`` (one backward sweep per call).

    Returns
    -------
    tuple
        ``(y, vjp_fn)``, or ``(y, vjp_fn, aux)`` with ``has_aux``; ``vjp_fn(u)`` returns a
        tuple with one cotangent per ``argnums`` entry (as ``jax.vjp``).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> y, vjp_fn = bj.vjp(lambda x: x**2, np.array([[1.0, 2.0]]))
    >>> vjp_fn(np.ones((1, 2)))[0].tolist()
    [[2.0, 4.0]]
    """
    all_args = (x, *args)
    options = check_options(
        f, all_args, argnums=argnums, per_sample=per_sample, in_axes=in_axes, has_aux=has_aux
    )
    captured, _ = _captured(f, all_args, kwargs, options)
    program = reverse_program(captured)
    (y,), env, active = reverse.forward(program, captured.leaves)
    out = program.outputs[0]
    expected = (captured.batch, *out.shape)

    def vjp_fn(u: Any) -> Any:
        cot: Any
        if isinstance(u, Tracer):
            cot = u
        else:
            u_arr = u if hasattr(u, "shape") else np.asarray(u)
            if tuple(u_arr.shape) != expected:
                raise ValueError(
                    f"u: expected a cotangent of shape {expected} (B, *out_shape), got {tuple(u_arr.shape)}"
                )
            cot = Batched(u_arr)
        grads = reverse.backward(program, env, active, [cot], list(program.inputs))
        results = [_whole(g, v, captured.batch) for g, v in zip(grads, program.inputs)]
        per_arg = _per_argument(results, captured, options)
        return (per_arg,) if options.single else per_arg

    value = _whole(y, out, captured.batch)
    return (value, vjp_fn, _aux(captured)) if has_aux else (value, vjp_fn)


def jvp(f: Callable[..., Any], x: Any, v: Any, *args: Any, argnums: int | Sequence[int] = 0, per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None,
        **kwargs: Any) -> tuple[Any, Any]:  # fmt: skip
    """``(f(x, *args), J v)``: the Jacobian-vector product per sample, without building ``J``.

    ``v`` has the shape of ``x`` (a tuple of tangents for a tuple ``argnums``, in the structure
    of each argument). Computed by the transpose of the VJP (one forward and two backward
    sweeps).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> y, jv = bj.jvp(lambda x: x**2, np.array([[1.0, 2.0]]), np.ones((1, 2)))
    >>> jv.tolist()
    [[2.0, 4.0]]
    """
    all_args = (x, *args)
    options = check_options(f, all_args, argnums=argnums, per_sample=per_sample, in_axes=in_axes)
    tangents = (v,) if options.single else tuple(v)
    if len(tangents) != len(options.argnums):
        raise ValueError(
            f"v: expected {len(options.argnums)} tangents (one per argnums entry), got {len(tangents)}"
        )
    captured, prepared = _captured(f, all_args, kwargs, options)
    program = reverse_program(captured)
    (y,), env, active = reverse.forward(program, captured.leaves)
    out = program.outputs[0]
    tangent_leaves = []
    for t, i in zip(tangents, options.argnums):
        leaves, _ = flatten(t)
        ref, _ = flatten(prepared[i])
        if len(leaves) != len(ref):
            raise ValueError(f"v: the tangent of argument {i} must have the structure of the argument")
        for leaf, r in zip(leaves, ref):
            if tuple(np.shape(leaf)) != tuple(r.shape):
                raise ValueError(
                    f"v: expected a tangent of shape {tuple(r.shape)}, got {tuple(np.shape(leaf))}"
                )
            tangent_leaves.append(leaf)
    # The VJP u -> u^T J as a program of u, then its transpose applied to the tangents.
    linear = Trace(PER_SAMPLE, captured.batch)
    with linear:
        u = linear.new_input(out.shape, out.dtype, True)
        cotangents = reverse.backward(program, env, active, [u], list(program.inputs))
        cotangents = [lax.add(c, np.zeros(var.shape, var.dtype)) if not isinstance(c, Tracer) or c.recording is not linear else c
                      for c, var in zip(cotangents, program.inputs)]  # fmt: skip
    transposed = linear.program(cotangents)
    zero = np.zeros((captured.batch, *out.shape), dtype=out.dtype)
    tangent_ops = [
        t if isinstance(t, Tracer) else (Batched(t) if var.batched else t)
        for t, var in zip(tangent_leaves, program.inputs)
    ]
    _, (jv,) = reverse.vjp(transposed, [zero], tangent_ops)
    return _whole(y, out, captured.batch), _whole(jv, out, captured.batch)


# --------------------------------------------------------------------------------------
# Second derivatives
# --------------------------------------------------------------------------------------


def hvp(
    f: Callable[..., Any],
    x: Any,
    v: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    per_sample: bool = False,
    in_axes: int | Sequence[int | None] | None = None,
    **kwargs: Any,
) -> Any:
    """Hessian-vector product ``H v`` per sample of a scalar ``f``, without building ``H``
    (reverse over reverse: the gradient of ``<grad f, v>``; ``H`` is symmetric, so this is
    also ``v^T H``).

    ``v`` has the shape (and structure) of the differentiated argument: ``(B, *in_shape)``,
    or the per-sample parameter shape for a shared argument (``per_sample=True`` with
    ``in_axes`` None for it), in which case ``v`` is one direction for every sample.

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.hvp(lambda x: np.sum(x**3, axis=-1), np.array([[1.0, 2.0]]), np.ones((1, 2))).tolist()
    [[6.0, 12.0]]
    """
    if isinstance(argnums, bool) or not isinstance(argnums, (int, np.integer)):
        raise ValueError(f"hvp: argnums must be one position (an int), got {argnums!r}")
    all_args = (x, *args)
    options = check_options(f, all_args, argnums=argnums, per_sample=per_sample, in_axes=in_axes)
    position = options.argnums[0]
    g = grad(f, position, per_sample=per_sample, in_axes=in_axes)

    def directional(*call_args: Any, **kw: Any) -> Any:
        *f_args, tangent = call_args
        total = None
        for gl, tl in zip(flatten(g(*f_args, **kw))[0], flatten(tangent)[0]):
            term = sum_(gl * tl)  # every axis of a sample, in either mode
            total = term if total is None else total + term
        return total

    # the direction travels as the last argument: batched with the differentiated argument
    tangent_axis = None if per_sample and options.in_axes[position] is None else 0
    axes = (*options.in_axes, tangent_axis) if per_sample else None
    return grad(directional, position, per_sample=per_sample, in_axes=axes)(*all_args, v, **kwargs)


def vhp(
    f: Callable[..., Any],
    x: Any,
    v: Any,
    *args: Any,
    argnums: int | Sequence[int] = 0,
    per_sample: bool = False,
    in_axes: int | Sequence[int | None] | None = None,
    **kwargs: Any,
) -> Any:
    """``v^T H`` per sample of a scalar ``f`` (equal to :func:`hvp`: the Hessian is symmetric).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.vhp(lambda x: np.sum(x**3, axis=-1), np.array([[1.0, 2.0]]), np.ones((1, 2))).tolist()
    [[6.0, 12.0]]
    """
    return hvp(f, x, v, *args, argnums=argnums, per_sample=per_sample, in_axes=in_axes, **kwargs)


def hessian(f: Callable[..., Any], x: Any, *args: Any, argnums: int | Sequence[int] = 0, method: str = "auto", structured: bool = False,
            layout: str = "numerator", backend: str | None = None, per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None,
            chunk_size: int | None = None, progress: bool | None = None, **kwargs: Any) -> Any:  # fmt: skip
    """Batched Hessian of ``f``: ``(B, *in_shape, *in_shape)`` for a scalar ``f`` (one number
    per sample), ``(B, *out_shape, *in_shape, *in_shape)`` for a vector ``f``.

    Parameters
    ----------
    method : {"auto", "exact", "central"}
        ``"exact"``: the structured Jacobian of the gradient program (structure kept:
        ``Diagonal`` for a sum of element-wise terms, ``Shared`` for ``x^T A x`` and for
        ``r^T r`` with a linear ``r``; a linear ``f`` gives an exact zero). ``"central"``:
        central differences of the exact gradient when ``f`` traces (about ``1e-10`` relative
        in float64), else second differences of ``f`` (about ``1e-5``, float64 only; the
        README's "Second derivatives" section has the measurements). ``"auto"``: exact when
        ``f`` traces, second differences with a warning otherwise. Every result is exactly
        symmetric in its two input groups (the average with its transpose).
    structured : bool
        Return a :class:`~batchjac.Jacobian` ``(B, n, n)`` (scalar ``f``).
    layout : {"numerator", "denominator"}
        ``(B, *out, *in, *in)`` or ``(B, *in, *in, *out)`` (the same for a scalar ``f``).
    backend, per_sample, in_axes, chunk_size, progress, **kwargs
        As for :func:`bj.jacobian` (``chunk_size``: samples per pass on the exact path, so
        that the peak memory stays bounded, columns per pass of the numerical differences;
        ``progress``: a progress bar over the passes); ``x`` must be one array (not a pytree).

    Returns
    -------
    array or bj.Jacobian

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> A = np.array([[1.0, 2.0], [0.0, 3.0]])
    >>> H = bj.hessian(lambda x: bj.quadratic_form(x, A), np.ones((1, 2)))
    >>> H.tolist()  # A + A^T
    [[[2.0, 2.0], [2.0, 6.0]]]
    """
    method = check_method(method, HESSIAN_METHODS)
    if isinstance(argnums, bool) or not isinstance(argnums, (int, np.integer)):
        raise ValueError(f"hessian: argnums must be one position (an int), got {argnums!r}")
    if structured and method == "central":
        raise ValueError("structured=True needs the exact method, got method='central'")
    all_args = (x, *args)
    options = check_options(
        f, all_args, argnums=argnums, layout=layout, per_sample=per_sample, in_axes=in_axes,
        chunk_size=chunk_size, progress=progress, structured=structured,
    )  # fmt: skip
    if not is_leaf(flatten(all_args[options.argnums[0]])[1]):
        kind = type(all_args[options.argnums[0]]).__name__
        raise TypeError(
            f"hessian: the differentiated argument must be one array, got a {kind} (a pytree); take the Hessian "
            "with respect to each array, or concatenate the parameters into one"
        )
    keywords = dict(argnums=argnums, backend=backend, per_sample=per_sample, in_axes=in_axes)
    try:
        captured, _ = _captured(f, all_args, kwargs, options)
    except TraceError as err:
        if method == "exact" or structured:
            raise
        if method == "auto":
            import warnings

            warnings.warn(f"{getattr(f, '__name__', 'f')} does not trace ({err}); using second differences",
                          NumericalFallbackWarning, stacklevel=2)  # fmt: skip
        H = _second_differences(f, all_args, kwargs, keywords, dict(chunk_size=chunk_size, progress=progress))
        return _arranged(H, _in_ndim(all_args, options), options.layout)
    scalar = captured.program.outputs[0].shape == ()
    first = (
        grad(f, argnums, per_sample=per_sample, in_axes=in_axes)
        if scalar
        else _jacobian_function(f, argnums, per_sample, in_axes)
    )
    passes = dict(chunk_size=chunk_size, progress=progress)
    if method == "central":
        H = value_and_jacobian(first, *all_args, kwargs=kwargs, method="central", **keywords, **passes)[1]
    else:
        H = value_and_jacobian(
            first, *all_args, kwargs=kwargs, method="exact", structured=structured, **keywords, **passes
        )[1]
    if isinstance(H, Jacobian):  # structured: (B, n, n) of a scalar f, or (B, m n, n)
        return _symmetric_structured(H) if scalar else H
    return _arranged(H, _in_ndim(all_args, options), options.layout)


def _in_ndim(args: Sequence[Any], options: Options) -> int:
    """Axes of one sample of the differentiated argument."""
    (leaf,), _ = flatten(args[options.argnums[0]])
    shared = options.per_sample and options.in_axes[options.argnums[0]] is None
    return np.ndim(leaf) - (0 if shared else 1)


def _arranged(H: Any, in_ndim: int, layout: str) -> Any:
    """A dense Hessian ``(B, *out, *in, *in)`` made exactly symmetric in its two input groups
    (the average with its transpose: second derivatives commute, and rounding is the only
    asymmetry of an exact or central result), in the requested layout (denominator:
    ``(B, *in, *in, *out)``)."""
    xp = namespace(H)
    n = int(np.prod(H.shape[H.ndim - in_ndim :], dtype=np.int64))
    square = H.reshape(*H.shape[: H.ndim - 2 * in_ndim], n, n)
    H = (0.5 * (square + xp.swapaxes(square, -1, -2))).reshape(H.shape)
    if layout == "denominator":
        out_ndim = H.ndim - 1 - 2 * in_ndim
        H = H.transpose((0, *range(1 + out_ndim, H.ndim), *range(1, 1 + out_ndim)))
    return H


def _symmetric_structured(H: Any) -> Any:
    """``(H + H^T) / 2``, structure kept (a diagonal is symmetric already)."""
    if isinstance(H, Diagonal):
        return H
    plan = getattr(H, "plan", None)
    H = (H + H.T).scaled(0.5)
    H.plan = plan
    return H


def _jacobian_function(
    f: Callable[..., Any],
    argnums: int | Sequence[int],
    per_sample: bool,
    in_axes: int | Sequence[int | None] | None,
) -> Callable[..., Any]:
    def jac(*call_args: Any, **kw: Any) -> Any:
        return value_and_jacobian(
            f, *call_args, kwargs=kw, argnums=argnums, method="exact", per_sample=per_sample, in_axes=in_axes
        )[1]

    return jac


def _second_differences(
    f: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], keywords: dict[str, Any],
    passes: dict[str, Any],
) -> Any:  # fmt: skip
    """The Hessian of a black box by central differences of central differences (a step of
    ``eps^(1/3)`` of the scale in each): error about ``1e-5`` relative in float64 (measured in
    the README's "Second derivatives" section); float32 is refused (no correct digit)."""
    position = keywords["argnums"]
    leaf = flatten(args[position])[0][0]
    if np.asarray(leaf).dtype != np.float64:
        raise TypeError(
            "hessian: second differences of a function that does not trace need float64 input (in float32 they "
            f"have no correct digit), got {np.asarray(leaf).dtype}; make f traceable or pass float64"
        )
    per_sample, in_axes = keywords["per_sample"], keywords["in_axes"]
    if per_sample and in_axes is not None and in_axes[position] is None:
        raise ValueError(
            "hessian: a per-sample f that does not trace cannot be differentiated twice w.r.t. a shared argument; make f traceable"
        )

    def gradient(*call_args: Any) -> Any:
        return value_and_jacobian(f, *call_args, kwargs=kwargs, method="central", **keywords)[1]

    outer = dict(keywords, per_sample=False, in_axes=None, **passes)  # the passes split the outer batch
    return value_and_jacobian(gradient, *args, method="central", **outer)[1]
