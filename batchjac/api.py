"""The front door: ``bj.jacobian``, ``bj.value_and_jacobian``, ``bj.elementwise``,
``bj.register_elementwise``."""

from __future__ import annotations

import contextlib
import numbers
import warnings

import numpy as np

from batchjac.backends.dispatch import select_backend, use_backend
from batchjac.core.arrays import as_float_array, common_batch, device_of, flatten_samples, float_dtype
from batchjac.core.elementwise_rules import BINARY, UNARY, ElementwiseRule, rule
from batchjac.core.errors import NumericalFallbackWarning, TraceError
from batchjac.exact.tracing import Traced, assemble, trace
from batchjac.integrations import dask as dask_support
from batchjac.integrations import interop
from batchjac.structured.types import Diagonal

METHODS = ("auto", "exact", "complex-step", "central", "forward")
NUMERICAL_METHODS = ("complex-step", "central", "forward")
LAYOUTS = ("numerator", "denominator")


def jacobian(
    f,
    x,
    *args,
    argnums=0,
    method="auto",
    layout="numerator",
    backend=None,
    chunk_size=None,
    structured=False,
    progress=None,
    framework=None,
):
    """Batched Jacobian of ``f`` at every sample of ``x``.

    ``f`` maps a batch ``(B, *in_shape)`` to ``(B, *out_shape)`` sample by sample; extra
    positional ``args`` are passed through, and ``argnums`` (int or tuple) picks the
    differentiated ones (every one carries the batch axis; a tuple gives a tuple).

    Returns ``(B, *out_shape, *in_shape)`` (``layout="numerator"``) or
    ``(B, *in_shape, *out_shape)`` (``"denominator"``). ``method``: ``"exact"`` traces
    ``f`` written with batchjac's array functions; ``"complex-step"``, ``"central"``,
    ``"forward"`` are numerical for any NumPy/CuPy ``f``; ``"auto"`` is exact when ``f``
    traces and numerical otherwise, with a :class:`NumericalFallbackWarning`.
    ``structured=True`` (exact only: ``f`` must trace) returns a :class:`bj.Jacobian`
    ``(B, m, n)`` (``(B, n, m)`` for the denominator layout) over the
    flattened sample shapes, whose ``plan`` tells how it was assembled. ``chunk_size``
    and ``progress`` bound and report numerical assembly. ``framework`` gives the results
    back as ``"numpy"``, ``"cupy"``, ``"torch"`` or ``"jax"`` arrays, or ``"input"`` for the
    framework of ``x`` (zero-copy through DLPack, on the same device). A Dask array ``x``
    gives lazy Dask arrays, computed block by block over the batch.

    >>> import numpy as np, batchjac as bj
    >>> w = np.array([1.0, 2.0, 3.0])
    >>> bj.jacobian(lambda x: bj.dot(x, w), np.array([[5.0, 8.0, -1.0]])).tolist()
    [[1.0, 2.0, 3.0]]
    """
    return value_and_jacobian(
        f,
        x,
        *args,
        argnums=argnums,
        method=method,
        layout=layout,
        backend=backend,
        chunk_size=chunk_size,
        structured=structured,
        progress=progress,
        framework=framework,
    )[1]


def value_and_jacobian(
    f,
    x,
    *args,
    argnums=0,
    method="auto",
    layout="numerator",
    backend=None,
    chunk_size=None,
    structured=False,
    progress=None,
    framework=None,
):
    """``(f(x, *args), jacobian(f, x, *args, ...))`` from one evaluation; same keywords.

    >>> import numpy as np, batchjac as bj
    >>> y, J = bj.value_and_jacobian(lambda x: x + x**2, np.array([[1.0, 2.0]]))
    >>> y.tolist(), J.tolist()
    ([[2.0, 6.0]], [[[3.0, 0.0], [0.0, 5.0]]])
    """
    keywords = dict(argnums=argnums, method=method, layout=layout, backend=backend,
                    chunk_size=chunk_size, structured=structured, progress=progress)  # fmt: skip
    if framework is not None:
        if framework != "input" and framework not in interop.FRAMEWORKS:
            raise ValueError(
                f"framework: expected 'input' or one of {', '.join(map(repr, interop.FRAMEWORKS))}, got {framework!r}"
            )
        if structured:
            raise ValueError(
                "framework= converts arrays; structured=True returns a bj.Jacobian (use J.to_dense())"
            )
    if dask_support.has_dask_array(x, *args):  # lazy, blockwise over the batch
        if framework is not None:
            raise ValueError("framework= does not apply to Dask arrays: the result is a Dask array")
        return dask_support.value_and_jacobian(f, x, *args, **keywords)
    result = _value_and_jacobian(f, x, *args, **keywords)
    if framework is None:
        return result
    return interop.to_framework(result, interop.framework_of(x) if framework == "input" else framework)


def _value_and_jacobian(f, x, *args, argnums, method, layout, backend, chunk_size, structured, progress):
    single = isinstance(argnums, numbers.Integral)
    argnums, call_args = _check_call(f, (x, *args), argnums, method, layout, structured)
    select_backend(
        *(call_args[i] for i in argnums), backend=backend, names=[_arg_name(i) for i in argnums]
    )  # device and backend checks
    if structured:
        method = "exact"  # a structured Jacobian only comes from tracing: no numerical fallback
    auto = method == "auto"
    if method in ("auto", "exact"):
        try:
            value, jacobians = _exact(f, call_args, argnums, backend)
        except TraceError as err:
            if not auto:
                raise
            _warn_fallback(f"{getattr(f, '__name__', 'f')} does not trace ({err})", "complex-step")
            method = "complex-step"
        else:
            return value, _finish(value, jacobians, call_args, argnums, layout, structured, single)
    from batchjac.numerical.differences import NotComplexSafeError, numerical_value_and_jacobian

    def numerical(method):
        return numerical_value_and_jacobian(
            f, call_args, argnums, method, backend=backend, chunk_size=chunk_size, progress=progress
        )

    try:
        value, jacobians = numerical(method)
    except NotComplexSafeError as err:
        if not auto:
            raise
        _warn_fallback(f"f is not complex-safe ({err})", "central")
        value, jacobians = numerical("central")
    return value, _finish(value, jacobians, call_args, argnums, layout, False, single)


def _warn_fallback(reason, method):
    warnings.warn(f"{reason}; using method={method!r}", NumericalFallbackWarning, stacklevel=4)


def _arg_name(i):
    return "x" if i == 0 else f"argument {i}"


def _check_call(f, args, argnums, method, layout, structured):
    if not callable(f):
        raise TypeError(f"f: expected a callable, got {type(f).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected 'numerator' or 'denominator', got {layout!r}")
    if structured and method in NUMERICAL_METHODS:
        raise ValueError(f"structured=True needs the exact method, got method={method!r}")
    nums = (argnums,) if isinstance(argnums, numbers.Integral) else tuple(argnums)
    if (
        not nums
        or any(not isinstance(i, numbers.Integral) or not 0 <= i < len(args) for i in nums)
        or len(set(nums)) != len(nums)
    ):
        raise ValueError(
            f"argnums: expected distinct positions among the {len(args)} arguments, got {argnums!r}"
        )
    args = list(args)
    for i in nums:
        args[i] = as_float_array(args[i], _arg_name(i))
    common_batch([args[i] for i in nums], [_arg_name(i) for i in nums])
    return tuple(int(i) for i in nums), tuple(args)


def _exact(f, args, argnums, backend):
    context = use_backend(backend) if backend is not None else contextlib.nullcontext()
    with context:
        out, inputs = trace(f, args, argnums)
        if not isinstance(out, Traced):
            raise TraceError(
                "f returned an array that does not depend on its traced inputs through batchjac's "
                "array functions (it may have used NumPy on them)"
            )
        value = out.value
        batch = args[argnums[0]].shape[0]
        _check_output(value, batch)
        jacobians, plan = assemble(
            out.node, inputs, batch, value.dtype, device_of(value), chain=_chain_product
        )
        for J in jacobians:
            J.plan = plan
        return value, jacobians


def _chain_product(factors):
    """The product of a chain of local Jacobians in the planner's cheapest order."""
    from batchjac.structured.chain import chain, chain_plan

    return chain(*factors, order="optimal"), chain_plan(*factors)


def _check_output(value, batch):
    if value.ndim == 0 or value.shape[0] != batch:
        raise ValueError(
            f"f: expected an output with the batch axis first, ({batch}, ...), got shape {tuple(value.shape)}"
        )
    float_dtype(value.dtype, "f's output")


def _finish(value, jacobians, args, argnums, layout, structured, single):
    out_shape = value.shape[1:]
    results = []
    for i, J in zip(argnums, jacobians):
        if structured:
            results.append(J.T if layout == "denominator" else J)
            continue
        in_shape = args[i].shape[1:]
        dense = J.to_dense() if not hasattr(J, "ndim") else J
        dense = dense.reshape(value.shape[0], *out_shape, *in_shape)
        if layout == "denominator":
            n_out, n_in = len(out_shape), len(in_shape)
            axes = (0, *range(1 + n_out, 1 + n_out + n_in), *range(1, 1 + n_out))
            dense = dense.transpose(axes)
        results.append(dense)
    return results[0] if single else tuple(results)


# --------------------------------------------------------------------------------------
# Element-wise Jacobians
# --------------------------------------------------------------------------------------


def elementwise(name, *args, backend=None, **params):
    """Value and diagonal Jacobian(s) of an element-wise operation, in one pass.

    Unary (``"tanh"``, ``"relu"``, ... or a registered name): ``x (B, ...) -> (y, D)``.
    Binary (``"add"``, ``"sub"``, ``"mul"``, ``"div"``, ``"maximum"``, ``"minimum"``,
    ``"pow"``): ``(u, v) -> (y, Du, Dv)`` for ``u`` and ``v`` of one shape. Each ``D`` is a
    :class:`bj.Diagonal` ``(B, n)`` over the flattened sample, never ``(B, n, n)``.

    >>> import numpy as np, batchjac as bj
    >>> y, D = bj.elementwise("tanh", np.zeros((2, 3)))
    >>> D.shape, D.diagonal().tolist()
    ((2, 3, 3), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    """
    found = rule(name)
    if len(args) != found.arity:
        raise TypeError(f"elementwise {name!r}: expected {found.arity} array argument(s), got {len(args)}")
    unknown = set(params) - set(found.params)
    if unknown:
        raise TypeError(
            f"elementwise {name!r}: unknown parameter(s) {sorted(unknown)}; it takes {sorted(found.params) or 'none'}"
        )
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


def register_elementwise(name, f, df):
    """Register a user element-wise function from scalar Python functions ``f`` and ``df``.

    Both must be compilable by numba (``math`` functions, arithmetic, branches). On the
    CPU they run as numba-vectorized ufuncs (float32 and float64). Afterwards
    ``bj.elementwise(name, x)`` gives ``(f(x), Diagonal(df(x)))``, and the returned
    traceable function works inside ``bj.jacobian``.

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

    def generate(xp, x):
        if xp is np:
            yield value_ufunc(x)
            yield derivative_ufunc(x)
        else:  # a GPU array: one fused numba-CUDA kernel
            from batchjac.backends.numba_ops import user_elementwise

            yield from user_elementwise(f, df, x)

    UNARY[name] = ElementwiseRule(
        name, 1, generate, {}, f"user function {name}", user=True, functions=(f, df)
    )
    from batchjac.exact.functions import _unary_function

    return _unary_function(name)


def _compile_ufunc(fn, what):
    import numba

    if not callable(fn):
        raise TypeError(f"{what}: expected a scalar Python function, got {type(fn).__name__}")
    try:
        return numba.vectorize(["float32(float32)", "float64(float64)"])(fn)
    except Exception as err:  # numba's typing errors are many; report them as one
        raise TypeError(f"{what}: numba cannot compile it as a scalar function of a float: {err}") from err
