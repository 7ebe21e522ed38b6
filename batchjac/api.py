"""The front door: routing of the public functions to the engine and the integrations.

``bj.jacobian``, ``bj.value_and_jacobian``, ``bj.trace``, ``bj.elementwise``,
``bj.register_elementwise``. Each validates what is its own (``framework=``, Dask arrays)
and hands the rest to :mod:`batchjac.engine`; the work happens below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from batchjac import checking, engine
from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import as_float_array, flatten_samples
from batchjac.core.elementwise_rules import BINARY, UNARY, ElementwiseRule, rule
from batchjac.core.errors import TraceError
from batchjac.exact.capture import capture, unflatten
from batchjac.exact.ir import Program
from batchjac.exact.ops.elementwise import _unary
from batchjac.exact.ops.shapes import trace as matrix_trace
from batchjac.exact.primitives.elementwise import ensure_rule
from batchjac.exact.tracer import Tracer
from batchjac.integrations import dask as dask_support
from batchjac.integrations import interop
from batchjac.structured.types import Diagonal
from batchjac.transforms import grad, hessian, hvp, jvp, vhp, vjp  # noqa: F401 - routed as they are

if TYPE_CHECKING:  # imported where used (numba compiles the colouring on import)
    from batchjac.numerical.coloring import Coloring

def jacobian(f: Callable[..., Any], x: Any, *args: Any, argnums: int | Sequence[int] = 0, method: str = "auto",
             layout: str = "numerator", backend: str | None = None, chunk_size: int | None = None,
             structured: bool = False, progress: bool | None = None, framework: str | None = None,
             per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None, has_aux: bool = False,
             fuse: bool | str = "auto", sparsity: Any = None, **kwargs: Any) -> Any:  # fmt: skip
    """Batched Jacobian of ``f`` at every sample of ``x``.

    Parameters
    ----------
    f : callable
        Maps a batch ``(B, *in_shape)`` to ``(B, *out_shape)`` sample by sample (or, with
        ``per_sample=True``, one sample ``in_shape -> out_shape``, as for ``jax.vmap``). Written
        with NumPy, batchjac's array functions or both; it is traced when it can be.
    x, *args : arrays
        The arguments of ``f``. Differentiated ones (``argnums``) carry the batch axis; each may
        be a dict, list or tuple of arrays (the Jacobian then has the same structure).
    argnums : int or tuple of int
        Which arguments to differentiate; a tuple gives a tuple of Jacobians.
    method : {"auto", "exact", "complex-step", "central", "forward"}
        ``"exact"`` traces ``f``; the numerical methods work on any NumPy/CuPy ``f``;
        ``"auto"`` is exact when ``f`` traces and numerical otherwise, with a
        :class:`~batchjac.NumericalFallbackWarning` saying which call did not trace.
    layout : {"numerator", "denominator"}
        ``(B, *out_shape, *in_shape)`` or ``(B, *in_shape, *out_shape)``.
    backend : str, optional
        ``"numpy"``, ``"cupy"`` or ``"numba"``; it wins over ``bj.use_backend`` and
        ``BATCHJAC_BACKEND`` for the whole call.
    chunk_size : int, optional
        Samples per pass on the exact path, columns per pass for the numerical methods;
        None picks it from free memory (and, on the exact path on the CPU, passes whose
        values and local Jacobians stay under a working set of 64 MiB).
    structured : bool
        Return a :class:`~batchjac.Jacobian` ``(B, m, n)`` over the flattened sample shapes
        (exact only), whose ``plan`` says how it was assembled.
    progress : bool, optional
        A progress bar for long computations (None: only on a terminal).
    framework : str, optional
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"input"`` (the framework of ``x``):
        results given back zero-copy through DLPack.
    per_sample : bool
        ``f`` is written for one sample; ``in_axes`` (one entry per argument: 0 batched, None
        shared) says which arguments carry the batch. A differentiated shared argument gives
        per-sample gradients ``(B, *out_shape, *param_shape)``.
    has_aux : bool
        ``f`` returns ``(output, aux)``; the result is ``(J, aux)``.
    fuse : {"auto", True, False}
        Compile the traced program into one numba kernel (True), assemble the structured
        chain (False), or let the planner decide.
    sparsity : array, SciPy sparse matrix or "auto", optional
        With a numerical method: the per-sample pattern ``(m, n)`` (boolean) of the Jacobian,
        e.g. from :func:`sparsity`; structurally orthogonal columns are perturbed together
        (one evaluation of ``f`` per colour). ``"auto"`` detects the pattern with a few random
        probes. The result is a :class:`~batchjac.Sparse` with ``structured=True``.
    **kwargs
        Passed to ``f`` unchanged (not differentiated).

    Returns
    -------
    array, tuple of arrays, or bj.Jacobian
        The Jacobian(s); with ``has_aux``, ``(J, aux)``. A Dask ``x`` gives lazy Dask arrays.

    Raises
    ------
    TraceError
        ``method="exact"`` and ``f`` does not trace.
    ValueError, TypeError
        Bad arguments (the message names the argument, what was expected and what came).
    MemoryError
        The request cannot fit even chunked (raised before allocating).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> w = np.array([1.0, 2.0, 3.0])
    >>> bj.jacobian(lambda x: bj.dot(x, w), np.array([[5.0, 8.0, -1.0]])).tolist()
    [[1.0, 2.0, 3.0]]
    >>> bj.jacobian(lambda q: np.sin(q) * 2, np.zeros((1, 2))).tolist()  # NumPy traces too
    [[[2.0, 0.0], [0.0, 2.0]]]
    """
    keywords = dict(argnums=argnums, method=method, layout=layout, backend=backend, chunk_size=chunk_size,
                    structured=structured, progress=progress, per_sample=per_sample, in_axes=in_axes,
                    has_aux=has_aux, fuse=fuse, sparsity=sparsity)  # fmt: skip
    value, jacobians, aux = _call(f, x, args, kwargs, keywords, framework)
    return (jacobians, aux) if has_aux else jacobians


def value_and_jacobian(f: Callable[..., Any], x: Any, *args: Any, argnums: int | Sequence[int] = 0, method: str = "auto",
                       layout: str = "numerator", backend: str | None = None, chunk_size: int | None = None,
                       structured: bool = False, progress: bool | None = None, framework: str | None = None,
                       per_sample: bool = False, in_axes: int | Sequence[int | None] | None = None, has_aux: bool = False,
                       fuse: bool | str = "auto", sparsity: Any = None, **kwargs: Any) -> tuple[Any, Any]:  # fmt: skip
    """``(f(x, *args), jacobian(f, x, *args, ...))`` from one evaluation; the keywords of
    :func:`jacobian`. With ``has_aux=True``: ``((value, aux), J)``, as ``jax.value_and_grad``.

    Returns
    -------
    tuple
        ``(value, J)``: ``value`` ``(B, *out_shape)`` and the Jacobian(s) as :func:`jacobian`.

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> y, J = bj.value_and_jacobian(lambda x: x + x**2, np.array([[1.0, 2.0]]))
    >>> y.tolist(), J.tolist()
    ([[2.0, 6.0]], [[[3.0, 0.0], [0.0, 5.0]]])
    """
    keywords = dict(argnums=argnums, method=method, layout=layout, backend=backend, chunk_size=chunk_size,
                    structured=structured, progress=progress, per_sample=per_sample, in_axes=in_axes,
                    has_aux=has_aux, fuse=fuse, sparsity=sparsity)  # fmt: skip
    value, jacobians, aux = _call(f, x, args, kwargs, keywords, framework)
    return ((value, aux), jacobians) if has_aux else (value, jacobians)


def _call(
    f: Callable[..., Any],
    x: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    keywords: dict[str, Any],
    framework: str | None,
) -> tuple[Any, Any, Any]:
    if framework is not None:
        if framework != "input" and framework not in interop.FRAMEWORKS:
            raise ValueError(
                f"framework: expected 'input' or one of {', '.join(map(repr, interop.FRAMEWORKS))}, got {framework!r}"
            )
        if keywords["structured"]:
            raise ValueError("framework= converts arrays; structured=True returns a bj.Jacobian (use J.to_dense())")
    if dask_support.has_dask_array(x, *args):  # lazy, blockwise over the batch
        if framework is not None:
            raise ValueError("framework= does not apply to Dask arrays: the result is a Dask array")
        unsupported = [k for k in ("per_sample", "has_aux") if keywords[k]] + (["keyword arguments to f"] if kwargs else [])
        unsupported += ["sparsity"] if keywords["sparsity"] is not None else []
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)}: not available with Dask arrays; map bj.jacobian over the blocks yourself")
        dask_keywords = {k: v for k, v in keywords.items() if k not in ("per_sample", "in_axes", "has_aux", "fuse", "sparsity")}
        value, jacobians = dask_support.value_and_jacobian(f, x, *args, **dask_keywords)
        return value, jacobians, None
    value, jacobians, aux = engine.value_and_jacobian(f, x, *args, kwargs=kwargs, **keywords)
    if framework is None:
        return value, jacobians, aux
    target = interop.framework_of(x) if framework == "input" else framework
    return interop.to_framework(value, target), interop.to_framework(jacobians, target), aux


def trace(f: Callable[..., Any], x: Any = None, *args: Any, argnums: int | Sequence[int] = 0, per_sample: bool = False,
          in_axes: int | Sequence[int | None] | None = None, has_aux: bool = False, **kwargs: Any) -> Program:  # fmt: skip
    """The program ``f`` computes, as recorded by tracing it at ``x`` (per-sample shapes).

    (Called on an array instead of a function, ``bj.trace(X, offset=0, axis1=-2, axis2=-1)``
    is the matrix trace of each sample, as ``numpy.trace``.)

    ``print(program)`` lists its equations, one line per primitive with shapes (``B`` marks the
    batch axis); weights ``f`` uses are constants of the program, not baked into it, and
    ``program.hash`` is structural: equal for the same function on other weights or batch
    sizes, different for a different graph.

    Parameters
    ----------
    f, x, *args, argnums, per_sample, in_axes, has_aux, **kwargs
        As for :func:`jacobian`; the arguments at ``argnums`` are the program's inputs.

    Returns
    -------
    Program

    Raises
    ------
    TraceError
        ``f`` does not trace (the message names the call).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> W = np.ones((4, 3))
    >>> print(bj.trace(lambda x: np.tanh(x @ W.T), np.ones((2, 3))))
    program(x: f64[B,3])
      consts c0: f64[3,4]
      v1: f64[B,4] = matmul(x, c0)
      v2: f64[B,4] = tanh(v1)
      return v2
    """
    if not callable(f):
        return matrix_trace(f, *((x,) if x is not None else ()), *args, **kwargs)
    options = engine.check_options(f, (x, *args), argnums=argnums, per_sample=per_sample, in_axes=in_axes, has_aux=has_aux)
    call_args = engine._prepared((x, *args), options)
    names = ["x" if i == 0 else f"a{i}" for i in options.argnums]
    captured = capture(f, call_args, kwargs, options.argnums, per_sample=options.per_sample,
                       in_axes=options.in_axes, has_aux=options.has_aux)  # fmt: skip
    program = captured.program
    if len(names) == len(program.inputs):
        program.input_names = tuple(names)
    return program


def sparsity(f: Callable[..., Any], x: Any, *args: Any, argnums: int | Sequence[int] = 0, per_sample: bool = False,
             in_axes: int | Sequence[int | None] | None = None, format: str = "dense", **kwargs: Any) -> Any:  # noqa: A002 - NumPy's word  # fmt: skip
    """The per-sample sparsity pattern of the Jacobian of ``f``, from its traced program alone
    (no derivative is evaluated): ``P[i, j]`` is True where output entry ``i`` may depend on
    input entry ``j`` (flattened, row-major).

    The pattern is structural: a superset of the entries that are nonzero at any input (an
    entry that cancels numerically stays in it). It serves ``bj.jacobian(f, x,
    method="central", sparsity=P)`` for colouring.

    Parameters
    ----------
    f, x, *args, argnums, per_sample, in_axes, **kwargs
        As for :func:`jacobian`; ``f`` must trace.
    format : {"dense", "csr"}
        A boolean NumPy array ``(m, n)`` or a SciPy ``csr_array`` (for large patterns).

    Returns
    -------
    array or tuple of arrays
        One pattern per ``argnums`` entry (a tuple for a tuple).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> P = bj.sparsity(lambda x: x[:, 1:] - x[:, :-1], np.zeros((2, 4)))
    >>> P.astype(int).tolist()
    [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    from batchjac.exact.interpret.sparsity import sparsity_pattern

    if format not in ("dense", "csr"):
        raise ValueError(f"format: expected 'dense' or 'csr', got {format!r}")
    options = engine.check_options(f, (x, *args), argnums=argnums, per_sample=per_sample, in_axes=in_axes)
    call_args = engine._prepared((x, *args), options)
    captured = capture(f, call_args, kwargs, options.argnums, per_sample=options.per_sample, in_axes=options.in_axes)
    program = captured.program
    pattern = sparsity_pattern(program)
    patterns, start = [], 0
    for v in program.inputs:
        block = pattern[:, start : start + v.size]
        patterns.append(block.tocsr() if format == "csr" else block.toarray())
        start += v.size
    it = iter(patterns)
    per_argument = [
        next(it) if tree[0] == "leaf" else unflatten(tree, [next(it) for _ in range(engine._count(tree))])
        for tree in captured.trees
    ]
    return per_argument[0] if options.single else tuple(per_argument)


def color_columns(pattern: Any) -> Coloring:
    """Colour the columns of a per-sample sparsity pattern so that no two columns of a colour
    share a row (greedy, largest first): one evaluation of ``f`` per colour recovers them all.

    Returns
    -------
    Coloring
        ``colors`` ``(n,)`` (-1 for empty columns), ``count``, the CSR pattern; pass it as
        ``sparsity=`` to skip colouring on later calls.

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.color_columns(np.eye(3, dtype=bool) | np.eye(3, k=1, dtype=bool)).count
    2
    """
    from batchjac.numerical.coloring import color_columns as color

    return color(pattern)


def check_jacobian(f: Callable[..., Any], x: Any, J: Any = None, method: str = "complex-step",
                   rtol: float | None = None, atol: float | None = None,
                   backend: str | None = None) -> checking.JacobianCheck:  # fmt: skip
    """Compare a batched Jacobian of ``f`` at ``x`` with a numerical one, naming the worst entry.

    Parameters
    ----------
    f, x
        The function and the batch ``(B, *in_shape)``.
    J : array, bj.Jacobian or None
        ``(B, *out_shape, *in_shape)`` (numerator layout), a structured Jacobian, or None for
        ``bj.jacobian(f, x, method="exact")``.
    method : {"complex-step", "central", "forward"}
        The reference (an ``f`` that is not complex-safe is compared with central differences).
    rtol, atol : float, optional
        Tolerances; the defaults follow each method's error (:mod:`batchjac.checking`).
    backend : str, optional

    Returns
    -------
    JacobianCheck

    Raises
    ------
    AssertionError
        An entry is out of tolerance (the message names sample, output and input index, both
        values and the error).

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.check_jacobian(np.tanh, np.linspace(-1, 1, 6).reshape(2, 3)).max_abs_error < 1e-14
    True
    """
    if dask_support.has_dask_array(x, J):  # checked block by block over the batch
        return dask_support.check_jacobian(f, x, J, method, rtol, atol)
    return checking.check_jacobian(f, x, J, method=method, rtol=rtol, atol=atol, backend=backend)


def check_hessian(f: Callable[..., Any], x: Any, H: Any = None, method: str = "central",
                  rtol: float | None = None, atol: float | None = None,
                  backend: str | None = None) -> checking.JacobianCheck:  # fmt: skip
    """Compare the batched Hessian of a scalar ``f`` (``H``, or the exact one when None) with
    numerical differences of its exact gradient, naming the worst entry.

    Returns
    -------
    JacobianCheck

    Raises
    ------
    AssertionError
        An entry is out of tolerance.

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> bj.check_hessian(lambda x: np.sum(np.sin(x) ** 2, axis=-1), np.ones((2, 3))).max_abs_error < 1e-6
    True
    """
    gradient = grad(f)
    if H is None:
        H = hessian(f, x, method="exact")
    return checking.check_jacobian(gradient, x, H, method=method, rtol=rtol, atol=atol, backend=backend)


# --------------------------------------------------------------------------------------
# Element-wise Jacobians
# --------------------------------------------------------------------------------------


def elementwise(name: str, *args: Any, backend: str | None = None, **params: Any) -> tuple[Any, ...]:
    """Value and diagonal Jacobian(s) of an element-wise operation, in one pass.

    Parameters
    ----------
    name : str
        A unary rule (``"tanh"``, ``"relu"``, ... or a registered one): ``x -> (y, D)``; or a
        binary one (``"add"``, ``"sub"``, ``"mul"``, ``"div"``, ``"maximum"``, ``"minimum"``,
        ``"pow"``, ``"arctan2"``, ``"hypot"``, ``"logaddexp"``): ``(u, v) -> (y, Du, Dv)`` for
        ``u`` and ``v`` of one shape.
    *args : arrays ``(B, ...)``
    backend : str, optional
    **params
        The rule's parameters (``alpha`` of ``leaky_relu``, ``p`` of ``power``).

    Returns
    -------
    tuple
        ``(y, D, ...)``: each ``D`` a :class:`bj.Diagonal` ``(B, n)`` over the flattened sample,
        never ``(B, n, n)``.

    Examples
    --------
    >>> import numpy as np, batchjac as bj
    >>> y, D = bj.elementwise("tanh", np.zeros((2, 3)))
    >>> D.shape, D.diagonal().tolist()
    ((2, 3, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    """
    found = rule(name)
    if any(isinstance(a, Tracer) for a in args):
        raise TraceError(
            f"bj.elementwise({name!r}, ...) returns values and derivative arrays, which do not trace; "
            f"inside f use the function itself (bj.{name} or its NumPy equivalent)"
        )
    if len(args) != found.arity:
        raise TypeError(f"elementwise {name!r}: expected {found.arity} array argument(s), got {len(args)}")
    unknown = set(params) - set(found.params)
    if unknown:
        raise TypeError(
            f"elementwise {name!r}: unknown parameter(s) {sorted(unknown)}; it takes {sorted(found.params) or 'none'}"
        )
    for key, value in params.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"elementwise {name!r}: {key} must be a real number, got {value!r}")
    params = {k: float(v) for k, v in params.items()}
    arrays = [as_float_array(a, n) for a, n in zip(args, ("x",) if found.arity == 1 else ("u", "v"))]
    if any(a.ndim == 0 for a in arrays):
        raise ValueError(f"elementwise {name!r}: expected arrays with a batch axis (B, ...)")
    if found.arity == 2 and arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"elementwise {name!r}: u and v must have one shape, got {arrays[0].shape} and {arrays[1].shape}"
        )
    y, *partials = select_backend(*arrays, backend=backend, names=["u", "v"][: len(arrays)]).elementwise(
        name, *arrays, **params
    )
    return (y, *(Diagonal(flatten_samples(d)) for d in partials))


def register_elementwise(
    name: str, f: Callable[[float], float], df: Callable[[float], float]
) -> Callable[..., Any]:
    """Register a user element-wise function from scalar Python functions ``f`` and ``df``.

    Both must be compilable by numba (``math`` functions, arithmetic, branches). On the CPU
    they run as numba-vectorized ufuncs (float32 and float64), on the GPU as one fused
    numba-CUDA kernel. Afterwards ``bj.elementwise(name, x)`` gives ``(f(x), Diagonal(df(x)))``,
    and the returned function traces inside ``bj.jacobian`` (first derivatives; a compiled
    scalar function has no traced derivative for second ones).

    Returns
    -------
    callable
        The traceable function ``x -> f(x)`` element-wise.

    Examples
    --------
    >>> import math, numpy as np, batchjac as bj
    >>> swish = bj.register_elementwise("swish_doc", lambda x: x / (1 + math.exp(-x)),
    ...     lambda x: (1 + math.exp(-x) + x * math.exp(-x)) / (1 + math.exp(-x)) ** 2)
    >>> float(swish(np.array([[0.0]]))[0, 0])
    0.0
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier string, got {name!r}")
    if name in BINARY or (name in UNARY and not UNARY[name].user):
        raise ValueError(f"name: {name!r} is a built-in element-wise operation and cannot be replaced")
    value_ufunc = _compile_ufunc(f, "f")
    derivative_ufunc = _compile_ufunc(df, "df")

    def array_form(xp: Any, x: Any) -> Iterator[Any]:
        if xp is np:
            yield value_ufunc(x)
            yield derivative_ufunc(x)
        else:  # a GPU array: one fused numba-CUDA kernel
            from batchjac.backends.numba_ops import user_elementwise

            yield from user_elementwise(f, df, x)

    UNARY[name] = ElementwiseRule(
        name, 1, None, {}, f"user function {name}", user=True, functions=(f, df), array=array_form
    )
    ensure_rule(name)
    return _unary(name)


def _compile_ufunc(fn: Callable[[float], float], what: str) -> Any:
    import numba

    if not callable(fn):
        raise TypeError(f"{what}: expected a scalar Python function, got {type(fn).__name__}")
    try:
        return numba.vectorize(["float32(float32)", "float64(float64)"])(fn)
    except Exception as err:  # numba's typing errors are many; report them as one
        raise TypeError(f"{what}: numba cannot compile it as a scalar function of a float: {err}") from err


__all__ = [
    "jacobian", "value_and_jacobian", "trace", "elementwise", "register_elementwise", "grad", "hessian", "hvp",
    "jvp", "vhp", "vjp", "sparsity", "check_jacobian", "check_hessian", "color_columns",
]  # fmt: skip
