"""The element-wise rules: value and derivative of every unary and binary operation.

This module is the one home of each element-wise derivative rule of math.md. A rule is
written once, as its *scalar form*: C-compatible expressions, the value first, then the
derivative with respect to each argument (``x`` for unary rules; ``u``, ``v`` for binary
ones; ``y`` is the value and parameters go by name). Everything else is generated from
those strings:

- the array form (NumPy or CuPy, value and derivatives in one pass over the input) by
  evaluating the expressions with the namespace's functions; a few rules keep an explicit
  array form where precision or speed needs it (``sigmoid``: no cancellation of ``1 - s``;
  ``power``: integer powers by products; ``pow``: quiet edges);
- the GPU kernels (CUDA C for CuPy, numba device functions) in ``batchjac.backends``;
- the traced derivative used for second derivatives in ``batchjac.exact`` (the derivative
  expression evaluated with traced arrays).

The Jacobian of a unary rule is ``diag(g'(x))``; a binary rule ``u (op) v`` gives
``diag(dy/du)`` and ``diag(dy/dv)``.

Values used where a function has no derivative (tested in
``tests/exact/test_elementwise_rules.py``):

- ``relu``, ``abs``: derivative 0 at 0. ``sign``, ``floor``, ``ceil``, ``round``: derivative 0.
- ``leaky_relu``: ``alpha`` at 0 (the left branch); ``elu``: ``alpha`` at 0 (the left branch).
- ``maximum(u, v)`` at a tie: the derivative goes to ``v`` (``dy/du = [u > v]``,
  ``dy/dv = [u <= v]``); ``minimum(u, v)`` at a tie likewise goes to ``v``.
- ``sqrt`` at 0: ``+inf``; ``arcsin``/``arccos`` at ``+-1`` and ``arctanh`` at ``+-1``: ``+-inf``;
  ``hypot(0, 0)``: NaN. ``pow(u, v)``: ``dy/du`` is 0 where ``v == 0``; ``dy/dv = u**v log(u)``
  is NaN for ``u < 0``, 0 where ``u**v == 0`` and ``-inf`` at ``u = 0, v = 0``.
- NaN propagates through every value and every derivative, as in NumPy (a NaN input gives a
  NaN value and a NaN derivative; piecewise rules test ``x != x`` where a comparison alone
  would drop it).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

# The functions a scalar form may use, with their C99 meaning (fmax/fmin return the non-NaN
# operand, so rules that must propagate NaN use where); numbers are written as floats.
SCALAR_FUNCTIONS = (
    "exp", "log", "log1p", "expm1", "log2", "log10", "sin", "cos", "tan", "asin", "acos", "atan",
    "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sqrt", "erf", "pow", "fabs", "fmax", "fmin",
    "floor", "ceil", "rint", "atan2", "hypot", "where",
)  # fmt: skip

# The array function serving each scalar function (NumPy and CuPy share the names).
_ARRAY_NAMES = {
    "fabs": "abs", "pow": "power", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
    "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "atan2": "arctan2",
}  # fmt: skip


@dataclass(frozen=True)
class ElementwiseRule:
    """One element-wise operation.

    ``scalar`` is the scalar form (value, then one derivative per argument);
    ``params`` maps parameter names to defaults; ``zero_derivative`` marks piecewise-constant
    rules (``floor``, ``sign``) whose derivative is 0 wherever it exists. ``array`` is an
    explicit array form ``array(xp, *args, **params)`` yielding the value then the
    derivatives (None: generated from ``scalar``); ``functions`` holds a user rule's scalar
    Python ``(f, df)`` (``bj.register_elementwise``).
    """

    name: str
    arity: int
    scalar: tuple[str, ...] | None
    params: dict[str, float] = field(default_factory=dict)  # parameter name -> default value
    doc: str = ""
    user: bool = False
    functions: tuple[Callable[[float], float], Callable[[float], float]] | None = None
    array: Callable[..., Iterator[Any]] | None = None
    zero_derivative: bool = False

    @property
    def arguments(self) -> tuple[str, ...]:
        """The scalar form's argument names: ``("x",)`` or ``("u", "v")``."""
        return ("x",) if self.arity == 1 else ("u", "v")

    def generate(self, xp: Any, *args: Any, **params: Any) -> Generator[Any, None, None]:
        """Yield the value, then the derivative with respect to each argument, each of the
        broadcast shape and the floating dtype of the arguments."""
        if self.array is not None:
            yield from self.array(xp, *args, **params)
            return
        params = {**self.params, **params}
        value, derivatives = _array_functions(self, xp)
        y = value(*args, **params)
        yield y
        with quiet(xp):
            partials = derivatives(*args, y, **params)
        for d in partials:
            yield _like(xp, d, y)

    def value(self, xp: Any, *args: Any, **params: Any) -> Any:
        if self.array is None:  # the scalar form's compiled value, without a generator
            return _array_functions(self, xp)[0](*args, **({**self.params, **params} if self.params else params))
        steps = self.generate(xp, *args, **params)
        try:
            return next(steps)
        finally:
            steps.close()

    def value_function(self, xp: Any, same_dtype: bool = False, **params: Any) -> Callable[..., Any]:
        """``(*args) -> value`` on namespace ``xp`` with ``params`` bound: :meth:`value`
        found once (the scalar form's compiled function), for a caller that applies the
        rule many times. ``same_dtype``: the caller vouches that every argument is an array
        of one floating dtype, which the value keeps (NumPy's promotion with Python numbers
        weak): the dtype is not checked per call.

        >>> import numpy as np
        >>> rule("tanh").value_function(np)(np.zeros(2)).tolist()
        [0.0, 0.0]
        """
        if self.array is not None:
            return functools.partial(self.value, xp, **params)
        value = _array_functions(self, xp)[0]
        if same_dtype:
            value = value.untyped  # type: ignore[attr-defined]
        merged = {**self.params, **params}
        return functools.partial(value, **merged) if merged else value

    def value_and_derivatives(self, xp: Any, *args: Any, **params: Any) -> tuple[Any, ...]:
        """``(y, dy/darg_1, ...)``, all of the broadcast shape of the arguments."""
        if self.array is None:  # as generate does, without a generator (the hot path)
            params = {**self.params, **params} if self.params else params
            value, derivatives = _array_functions(self, xp)
            y = value(*args, **params)
            with quiet(xp):
                partials = derivatives(*args, y, **params)
            if len(partials) == 1:
                return y, _like(xp, partials[0], y)
            return (y, *(_like(xp, d, y) for d in partials))
        return tuple(self.generate(xp, *args, **params))


def unary_numpy_function(found: ElementwiseRule) -> Callable[[Any], tuple[Any, Any]] | None:
    """``x -> (y, dy/dx)`` on NumPy arrays for a built-in unary rule without parameters: the
    steps of :meth:`ElementwiseRule.value_and_derivatives` in one compiled function (the hot
    path of the structured interpreter); None for other rules."""
    if found.arity != 1 or found.params or found.array is not None or found.scalar is None:
        return None
    key = (found.name, found.scalar)
    compiled = _UNARY_NUMPY.get(key)
    if compiled is None:
        import numpy as np

        value, derivatives = _array_functions(found, np)
        value = value.untyped  # type: ignore[attr-defined]  # the dtype is settled below
        errstate = np.errstate

        def compiled(x: Any) -> tuple[Any, Any]:
            y = value(x)
            if getattr(y, "dtype", None) != x.dtype:
                y = np.asarray(y).astype(np.result_type(x.dtype), copy=False)  # as typed_value promotes
            with errstate(divide="ignore", invalid="ignore", over="ignore"):
                (d,) = derivatives(x, y)
            return y, _like(np, d, y)

        _UNARY_NUMPY[key] = compiled
    return compiled


_UNARY_NUMPY: dict[tuple[str, tuple[str, ...]], Callable[[Any], tuple[Any, Any]]] = {}


def _like(xp: Any, d: Any, y: Any) -> Any:
    """A derivative as an array of ``y``'s shape and dtype (constants are filled)."""
    if getattr(d, "shape", None) == y.shape and d.dtype == y.dtype:
        return d
    out = xp.empty(y.shape, dtype=y.dtype)
    out[...] = d
    return out


_COMPILED: dict[tuple[str, tuple[str, ...] | None, str], tuple[Callable[..., Any], Callable[..., Any]]] = {}


def _array_functions(found: ElementwiseRule, xp: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(value(*args, **params), derivatives(*args, y, **params))`` for namespace ``xp``,
    compiled once per rule and namespace from the scalar form."""
    key = (found.name, found.scalar, xp.__name__)
    compiled = _COMPILED.get(key)
    if compiled is None:
        compiled = _COMPILED[key] = _compile_array_functions(found, xp)
    return compiled


def _compile_array_functions(
    found: ElementwiseRule, xp: Any
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    namespace: dict[str, Any] = {
        name: getattr(xp, _ARRAY_NAMES.get(name, name), None) for name in SCALAR_FUNCTIONS
    }
    namespace["erf"] = functools.partial(_erf, xp)
    namespace["where"] = xp.where
    if found.scalar is None:  # a user rule: its array form serves it (generate never comes here)
        raise TypeError(f"element-wise rule {found.name!r} has no scalar form to compile")
    arguments = ", ".join((*found.arguments, *found.params))
    value_expr, *derivative_exprs = found.scalar
    value = eval(f"lambda {arguments}: {value_expr}", namespace)  # noqa: S307 - our own strings
    derivatives = eval(  # noqa: S307
        f"lambda {', '.join((*found.arguments, 'y', *found.params))}: ({', '.join(derivative_exprs)},)",
        namespace,
    )
    dtype_of = _result_dtype_function(xp)

    def typed_value(*args: Any, **params: Any) -> Any:
        y = value(*args, **params)
        dtype = getattr(y, "dtype", None)
        if dtype is not None and all(getattr(a, "dtype", dtype) == dtype for a in args):
            return y  # every operand has the value's dtype: the promotion is that dtype (hot path)
        dtype = dtype_of(*args)
        return y.astype(dtype, copy=False) if hasattr(y, "astype") else xp.asarray(y, dtype=dtype)

    typed_value.untyped = value  # type: ignore[attr-defined]  # for operands of the result's dtype
    return typed_value, derivatives


def _result_dtype_function(xp: Any) -> Callable[..., Any]:
    def dtype_of(*args: Any) -> Any:
        dtypes = [a.dtype for a in args if hasattr(a, "dtype")]
        return xp.result_type(*dtypes) if dtypes else xp.float64

    return dtype_of


def quiet(xp: Any) -> contextlib.AbstractContextManager[Any]:
    """Silence NumPy's floating-point warnings where inf/NaN is the documented result."""
    if xp.__name__ == "numpy":
        import numpy as np

        return np.errstate(divide="ignore", invalid="ignore", over="ignore")
    return contextlib.nullcontext()


def _erf(xp: Any, x: Any) -> Any:
    if xp.__name__ == "numpy":
        return _numpy_erf()(x)
    import cupyx.scipy.special as special  # CuPy keeps erf in cupyx

    return special.erf(x)


@functools.cache
def _numpy_erf() -> Any:
    """math.erf as a NumPy ufunc (NumPy has none), compiled by numba on first use."""
    import numba

    @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
    def erf(x: float) -> float:
        return math.erf(x)

    return erf


UNARY: dict[str, ElementwiseRule] = {}
BINARY: dict[str, ElementwiseRule] = {}


def _rule(
    table: dict[str, ElementwiseRule],
    arity: int,
    name: str,
    doc: str,
    scalar: tuple[str, ...],
    array: Callable[..., Iterator[Any]] | None = None,
    zero_derivative: bool = False,
    **params: float,
) -> None:
    table[name] = ElementwiseRule(
        name, arity, tuple(scalar), dict(params), doc, array=array, zero_derivative=zero_derivative
    )


# Expressions reused by several rules.
_NAN_OR_ZERO = "where(x != x, x, 0.0)"  # the derivative of a piecewise-constant function
_SIGN = "where(x > 0.0, 1.0, where(x < 0.0, -1.0, where(x == 0.0, 0.0, x)))"
_SIGMOID = "where(x >= 0.0, 1.0 / (1.0 + exp(-x)), exp(x) / (1.0 + exp(x)))"

# --------------------------------------------------------------------------------------
# Unary rules: y = g(x), dy/dx = diag(g'(x)).
# --------------------------------------------------------------------------------------

for _name, _doc, _value, _derivative in [
    ("identity", "x; 1", "1.0 * x", "1.0"),
    ("negative", "-x; -1", "-x", "-1.0"),
    ("exp", "exp(x); exp(x)", "exp(x)", "y"),
    ("exp2", "2^x; log(2) 2^x", "pow(2.0, x)", "0.6931471805599453 * y"),
    ("expm1", "exp(x)-1; exp(x)", "expm1(x)", "y + 1.0"),
    ("log", "log(x); 1/x", "log(x)", "1.0 / x"),
    ("log2", "log2(x); 1/(x log 2)", "log2(x)", "1.4426950408889634 / x"),
    ("log10", "log10(x); 1/(x log 10)", "log10(x)", "0.4342944819032518 / x"),
    ("log1p", "log(1+x); 1/(1+x)", "log1p(x)", "1.0 / (1.0 + x)"),
    ("sin", "sin(x); cos(x)", "sin(x)", "cos(x)"),
    ("cos", "cos(x); -sin(x)", "cos(x)", "-sin(x)"),
    ("tan", "tan(x); 1 + tan(x)^2", "tan(x)", "1.0 + y * y"),
    ("arcsin", "arcsin(x); 1/sqrt(1-x^2)", "asin(x)", "1.0 / sqrt(1.0 - x * x)"),
    ("arccos", "arccos(x); -1/sqrt(1-x^2)", "acos(x)", "-1.0 / sqrt(1.0 - x * x)"),
    ("arctan", "arctan(x); 1/(1+x^2)", "atan(x)", "1.0 / (1.0 + x * x)"),
    ("sinh", "sinh(x); cosh(x)", "sinh(x)", "cosh(x)"),
    ("cosh", "cosh(x); sinh(x)", "cosh(x)", "sinh(x)"),
    ("tanh", "tanh(x); 1 - tanh(x)^2", "tanh(x)", "1.0 - y * y"),
    ("arcsinh", "arcsinh(x); 1/sqrt(x^2+1)", "asinh(x)", "1.0 / sqrt(x * x + 1.0)"),
    ("arccosh", "arccosh(x); 1/sqrt(x^2-1)", "acosh(x)", "1.0 / sqrt((x - 1.0) * (x + 1.0))"),
    ("arctanh", "arctanh(x); 1/(1-x^2)", "atanh(x)", "1.0 / (1.0 - x * x)"),
    ("erf", "erf(x); 2 exp(-x^2)/sqrt(pi)", "erf(x)", "1.1283791670955126 * exp(-x * x)"),
    ("sqrt", "sqrt(x); 1/(2 sqrt(x)) (+inf at 0)", "sqrt(x)", "0.5 / y"),
    ("square", "x^2; 2x", "x * x", "2.0 * x"),
    ("reciprocal", "1/x; -1/x^2", "1.0 / x", "-(y * y)"),
    ("abs", "|x|; sign(x) (0 at 0)", "fabs(x)", _SIGN),
    (
        "softplus",
        "log(1+exp(x)); sigmoid(x)",
        "fmax(x, 0.0) + log1p(exp(-fabs(x)))",
        _SIGMOID,
    ),
    (
        "relu",
        "max(x, 0); [x > 0] (0 at 0)",
        "where(x <= 0.0, 0.0, x)",
        "where(x > 0.0, 1.0, where(x <= 0.0, 0.0, x))",
    ),
    (
        "gelu",
        "x Phi(x) (erf form); Phi(x) + x phi(x)",
        "0.5 * x * (1.0 + erf(x * 0.7071067811865476))",
        "0.5 * (1.0 + erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x)",
    ),
]:
    _rule(UNARY, 1, _name, _doc, (_value, _derivative))

for _name, _doc, _value in [
    ("sign", "sign(x); 0", _SIGN),
    ("floor", "floor(x); 0", "floor(x)"),
    ("ceil", "ceil(x); 0", "ceil(x)"),
    ("round", "round half to even; 0", "rint(x)"),
]:
    _rule(UNARY, 1, _name, _doc, (_value, _NAN_OR_ZERO), zero_derivative=True)

_rule(
    UNARY, 1, "leaky_relu", "x if x > 0 else alpha x; 1 or alpha (alpha at 0)",
    ("where(x > 0.0, x, alpha * x)", "where(x > 0.0, 1.0, where(x <= 0.0, alpha, x))"), alpha=0.01,
)  # fmt: skip
_rule(
    UNARY, 1, "elu", "x if x > 0 else alpha (exp(x) - 1); 1 or alpha exp(x) (alpha at 0)",
    (
        "where(x > 0.0, x, alpha * expm1(where(x > 0.0, 0.0, x)))",
        "where(x > 0.0, 1.0, alpha * exp(where(x > 0.0, 0.0, x)))",
    ),
    alpha=1.0,
)  # fmt: skip


def _sigmoid_array(xp: Any, x: Any) -> Iterator[Any]:
    # exp of a non-positive number only: no overflow for large |x|; s(1-s) without the
    # cancellation of 1 - s for large x.
    e = xp.exp(-xp.abs(x))
    yield xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    yield e / ((1 + e) * (1 + e))


_rule(
    UNARY, 1, "sigmoid", "1/(1+exp(-x)); s(1-s)",
    (_SIGMOID, "exp(-fabs(x)) / ((1.0 + exp(-fabs(x))) * (1.0 + exp(-fabs(x))))"),
    array=_sigmoid_array,
)  # fmt: skip

_SMALL_POWER = 8


def _power_array(xp: Any, x: Any, p: float = 2.0) -> Iterator[Any]:
    if p == 0:
        yield xp.ones_like(x)
        yield xp.where(x != x, x, 0).astype(x.dtype, copy=False)
        return
    if float(p).is_integer() and 1 <= p <= _SMALL_POWER:
        # x^(p-1) by products: a general pow is several times slower than a multiply.
        lower = xp.ones_like(x) if p == 1 else x
        for _ in range(int(p) - 2):
            lower = lower * x
        yield lower * x
        yield p * lower if p != 1 else lower + 0 * x  # 0 * x: NaN stays NaN
        return
    with quiet(xp):
        yield x**p
        yield p * x ** (p - 1)


_rule(
    UNARY, 1, "power", "x^p for a constant p; p x^(p-1)",
    ("pow(x, p)", "where(p == 0.0, where(x != x, x, 0.0), p * pow(x, p - 1.0))"),
    array=_power_array, p=2.0,
)  # fmt: skip


# --------------------------------------------------------------------------------------
# Binary rules: y = u (op) v, dy/du = diag(.), dy/dv = diag(.). Operands broadcast.
# --------------------------------------------------------------------------------------

for _name, _doc, _scalar in [
    ("add", "u + v; 1; 1", ("u + v", "1.0", "1.0")),
    ("sub", "u - v; 1; -1", ("u - v", "1.0", "-1.0")),
    ("mul", "u v; v; u", ("u * v", "v", "u")),
    ("div", "u / v; 1/v; -u/v^2", ("u / v", "1.0 / v", "-y / v")),
    (
        "maximum",
        "max(u, v); [u > v]; [u <= v] (a tie goes to v)",
        (
            "where(u != u, u, where(u > v, u, v))",
            "where(u > v, 1.0, where(u <= v, 0.0, u + v))",
            "where(u > v, 0.0, where(u <= v, 1.0, u + v))",
        ),
    ),
    (
        "minimum",
        "min(u, v); [u < v]; [u >= v] (a tie goes to v)",
        (
            "where(u != u, u, where(u < v, u, v))",
            "where(u < v, 1.0, where(u >= v, 0.0, u + v))",
            "where(u < v, 0.0, where(u >= v, 1.0, u + v))",
        ),
    ),
    (
        "arctan2",
        "arctan2(u, v); v/(u^2+v^2); -u/(u^2+v^2)",
        ("atan2(u, v)", "v / (u * u + v * v)", "-u / (u * u + v * v)"),
    ),
    ("hypot", "sqrt(u^2+v^2); u/y; v/y", ("hypot(u, v)", "u / y", "v / y")),
    (
        "logaddexp",
        "log(exp(u)+exp(v)); exp(u-y); exp(v-y)",
        (
            "where(u == v, u + 0.6931471805599453, fmax(u, v) + log1p(exp(-fabs(u - v))))",
            "exp(u - y)",
            "exp(v - y)",
        ),
    ),
]:
    _rule(BINARY, 2, _name, _doc, _scalar)


def _pow_array(xp: Any, u: Any, v: Any) -> Iterator[Any]:
    with quiet(xp):
        y = u**v
    yield y
    with quiet(xp):
        du = xp.where(v == 0, xp.where(u != u, u, 0), v * u ** (v - 1))
        dv = xp.where(y == 0, 0, y * xp.log(xp.where(y == 0, 1, u)))
    yield _like(xp, du, y)
    yield _like(xp, dv, y)


_rule(
    BINARY, 2, "pow", "u^v; v u^(v-1) (0 where v is 0); u^v log(u) (0 where u^v is 0)",
    ("pow(u, v)", "where(v == 0.0, where(u != u, u, 0.0), v * pow(u, v - 1.0))", "where(y == 0.0, 0.0, y * log(u))"),
    array=_pow_array,
)  # fmt: skip


def rule(name: str) -> ElementwiseRule:
    """The rule called ``name`` (unary or binary), or a ValueError listing the known ones.

    >>> rule("tanh").scalar
    ('tanh(x)', '1.0 - y * y')
    """
    found = UNARY.get(name) or BINARY.get(name)
    if found is None:
        raise ValueError(
            f"name: unknown element-wise operation {name!r}; unary: {', '.join(sorted(UNARY))}; "
            f"binary: {', '.join(sorted(BINARY))}"
        )
    return found
