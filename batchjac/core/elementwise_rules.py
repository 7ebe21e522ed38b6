"""The element-wise rules: value and derivative of every unary and binary operation.

This module is the one home of each element-wise derivative rule of math.md. A rule is
written once against an array namespace ``xp`` (``numpy`` or ``cupy``) and returns the
value together with its derivative(s), so a backend computes both in one pass over the
input. The Jacobian of a unary rule is ``diag(g'(x))``; a binary rule ``u (op) v`` gives
``diag(dy/du)`` and ``diag(dy/dv)``.

Values used where a function has no derivative (documented here, tested in
``tests/test_rules_elementwise.py``):

- ``relu``, ``abs``: derivative 0 at 0.
- ``leaky_relu``: ``alpha`` at 0 (the left branch); ``elu``: ``alpha`` at 0 (the left branch).
- ``maximum(u, v)`` at a tie: the derivative goes to ``v`` (``dy/du = [u > v]``,
  ``dy/dv = [u <= v]``); ``minimum(u, v)`` at a tie likewise goes to ``v``
  (``dy/du = [u < v]``, ``dy/dv = [u >= v]``).
- ``sqrt`` at 0: ``+inf``. ``pow(u, v)``: ``dy/du`` is 0 where ``v == 0`` (``u**0`` is
  constant); ``dy/dv = u**v log(u)`` is NaN for ``u < 0``, 0 where ``u**v == 0`` (``u = 0``,
  ``v > 0``) and ``-inf`` at ``u = 0, v = 0``.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Callable

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class ElementwiseRule:
    """One element-wise operation.

    ``generate(xp, *args, **params)`` is a generator that yields the value first and then
    the derivative with respect to each argument, so that a caller who wants the value
    alone never computes a derivative.
    """

    name: str
    arity: int
    generate: Callable
    params: dict = field(default_factory=dict)  # parameter name -> default value
    doc: str = ""
    user: bool = False  # registered by bj.register_elementwise
    functions: tuple | None = None  # a user rule's scalar Python (f, df), compiled per backend
    scalar: tuple | None = None  # the scalar form, see SCALAR_FUNCTIONS

    def value(self, xp, *args, **params):
        steps = self.generate(xp, *args, **params)
        try:
            return next(steps)
        finally:
            steps.close()

    def value_and_derivatives(self, xp, *args, **params):
        """``(y, dy/darg_1, ...)``, all of the broadcast shape of the arguments."""
        return tuple(self.generate(xp, *args, **params))


# The scalar form of a rule: C-compatible expressions, the value first, then the derivative
# with respect to each argument; arguments are x (unary) or u, v (binary), y is the value,
# and the parameters go by name (alpha, p). Only these functions appear, with their C99
# meaning (fmax/fmin return the non-NaN operand, so rules that must propagate NaN as NumPy
# does use where), and numbers are written as floats; the GPU backends generate their kernels
# from these strings (CUDA C for CuPy, numba device functions), and
# tests/test_rules_elementwise.py checks them against the array rules.
SCALAR_FUNCTIONS = (
    "exp", "log", "log1p", "expm1", "sin", "cos", "tan", "tanh", "sqrt", "erf", "pow",
    "fabs", "fmax", "fmin", "where",
)  # fmt: skip

UNARY: dict[str, ElementwiseRule] = {}
BINARY: dict[str, ElementwiseRule] = {}


def _unary(name, doc="", scalar=None, **params):
    def register(fn):
        UNARY[name] = ElementwiseRule(name, 1, fn, params, doc, scalar=scalar)
        return fn

    return register


def _binary(name, doc="", scalar=None):
    def register(fn):
        BINARY[name] = ElementwiseRule(name, 2, fn, {}, doc, scalar=scalar)
        return fn

    return register


def _like(xp, value, x):
    """``value`` (bool or numeric array) cast to the floating dtype of ``x``."""
    return xp.asarray(value).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------
# Unary rules: y = g(x), dy/dx = diag(g'(x)).
# --------------------------------------------------------------------------------------


@_unary("identity", "x; 1", scalar=("x", "1.0"))
def _identity(xp, x):
    yield x.copy()
    yield xp.ones_like(x)


@_unary("negative", "-x; -1", scalar=("-x", "-1.0"))
def _negative(xp, x):
    yield -x
    yield xp.full_like(x, -1)


@_unary("exp", "exp(x); exp(x)", scalar=("exp(x)", "y"))
def _exp(xp, x):
    y = xp.exp(x)
    yield y
    yield y


@_unary("log", "log(x); 1/x", scalar=("log(x)", "1.0 / x"))
def _log(xp, x):
    yield xp.log(x)
    yield 1 / x


@_unary("log1p", "log(1+x); 1/(1+x)", scalar=("log1p(x)", "1.0 / (1.0 + x)"))
def _log1p(xp, x):
    yield xp.log1p(x)
    yield 1 / (1 + x)


@_unary("expm1", "exp(x)-1; exp(x)", scalar=("expm1(x)", "y + 1.0"))
def _expm1(xp, x):
    y = xp.expm1(x)
    yield y
    yield y + 1


@_unary("sin", "sin(x); cos(x)", scalar=("sin(x)", "cos(x)"))
def _sin(xp, x):
    yield xp.sin(x)
    yield xp.cos(x)


@_unary("cos", "cos(x); -sin(x)", scalar=("cos(x)", "-sin(x)"))
def _cos(xp, x):
    yield xp.cos(x)
    yield -xp.sin(x)


@_unary("tan", "tan(x); 1 + tan(x)^2", scalar=("tan(x)", "1.0 + y * y"))
def _tan(xp, x):
    y = xp.tan(x)
    yield y
    yield 1 + y * y


@_unary("tanh", "tanh(x); 1 - tanh(x)^2", scalar=("tanh(x)", "1.0 - y * y"))
def _tanh(xp, x):
    y = xp.tanh(x)
    yield y
    yield 1 - y * y


def _sigmoid_value(xp, x):
    # exp of a non-positive number only: no overflow for large |x|.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@_unary(
    "sigmoid",
    "1/(1+exp(-x)); s(1-s)",
    scalar=(
        "where(x >= 0.0, 1.0 / (1.0 + exp(-x)), exp(x) / (1.0 + exp(x)))",
        "exp(-fabs(x)) / ((1.0 + exp(-fabs(x))) * (1.0 + exp(-fabs(x))))",
    ),
)
def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))
    yield xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
    yield e / ((1 + e) * (1 + e))  # s(1-s) without the cancellation of 1 - s for large x


@_unary(
    "softplus",
    "log(1+exp(x)); sigmoid(x)",
    scalar=(
        "fmax(x, 0.0) + log1p(exp(-fabs(x)))",
        "where(x >= 0.0, 1.0 / (1.0 + exp(-x)), exp(x) / (1.0 + exp(x)))",
    ),
)
def _softplus(xp, x):
    yield xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
    yield _sigmoid_value(xp, x)


@_unary("relu", "max(x, 0); [x > 0] (0 at 0)", scalar=("where(x > 0.0, x, 0.0)", "where(x > 0.0, 1.0, 0.0)"))
def _relu(xp, x):
    positive = x > 0
    yield xp.where(positive, x, 0).astype(x.dtype, copy=False)
    yield _like(xp, positive, x)


@_unary(
    "leaky_relu",
    "x if x > 0 else alpha x; 1 or alpha (alpha at 0)",
    scalar=("where(x > 0.0, x, alpha * x)", "where(x > 0.0, 1.0, alpha)"),
    alpha=0.01,
)
def _leaky_relu(xp, x, alpha=0.01):
    positive = x > 0
    yield xp.where(positive, x, alpha * x).astype(x.dtype, copy=False)
    yield xp.where(positive, 1, alpha).astype(x.dtype, copy=False)


@_unary(
    "elu",
    "x if x > 0 else alpha (exp(x) - 1); 1 or alpha exp(x) (alpha at 0)",
    scalar=(
        "where(x > 0.0, x, alpha * expm1(fmin(x, 0.0)))",
        "where(x > 0.0, 1.0, alpha * exp(fmin(x, 0.0)))",
    ),
    alpha=1.0,
)
def _elu(xp, x, alpha=1.0):
    positive = x > 0
    em1 = xp.expm1(xp.minimum(x, 0))
    yield xp.where(positive, x, alpha * em1).astype(x.dtype, copy=False)
    yield xp.where(positive, 1, alpha * (em1 + 1)).astype(x.dtype, copy=False)


def _erf(xp, x):
    if xp.__name__ == "numpy":
        return _numpy_erf()(x)
    import cupyx.scipy.special as special  # CuPy keeps erf in cupyx

    return special.erf(x)


@functools.cache
def _numpy_erf():
    """math.erf as a NumPy ufunc (NumPy has none), compiled by numba on first use."""
    import numba

    @numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
    def erf(x):
        return math.erf(x)

    return erf


@_unary(
    "gelu",
    "x Phi(x) (erf form); Phi(x) + x phi(x)",
    scalar=(
        "0.5 * x * (1.0 + erf(x * 0.7071067811865476))",
        "0.5 * (1.0 + erf(x * 0.7071067811865476)) + x * 0.3989422804014327 * exp(-0.5 * x * x)",
    ),
)
def _gelu(xp, x):
    cdf = 0.5 * (1 + _erf(xp, x / _SQRT_2))
    yield x * cdf
    yield cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))


@_unary("sqrt", "sqrt(x); 1/(2 sqrt(x)) (+inf at 0)", scalar=("sqrt(x)", "0.5 / y"))
def _sqrt(xp, x):
    y = xp.sqrt(x)
    yield y
    with _quiet(xp):
        dy = 0.5 / y
    yield dy


@_unary("square", "x^2; 2x", scalar=("x * x", "2.0 * x"))
def _square(xp, x):
    yield x * x
    yield 2 * x


@_unary("reciprocal", "1/x; -1/x^2", scalar=("1.0 / x", "-(y * y)"))
def _reciprocal(xp, x):
    y = 1 / x
    yield y
    yield -(y * y)


@_unary("abs", "|x|; sign(x) (0 at 0)", scalar=("fabs(x)", "where(x > 0.0, 1.0, where(x < 0.0, -1.0, 0.0))"))
def _abs(xp, x):
    yield xp.abs(x)
    yield xp.sign(x)


@_unary(
    "power",
    "x^p for a constant p; p x^(p-1)",
    scalar=("pow(x, p)", "where(p == 0.0, 0.0, p * pow(x, p - 1.0))"),
    p=2.0,
)
def _power(xp, x, p=2.0):
    if p == 0:
        yield xp.ones_like(x)
        yield xp.zeros_like(x)
        return
    if float(p).is_integer() and 1 <= p <= _SMALL_POWER:
        # x^(p-1) by products: a general pow is several times slower than a multiply.
        lower = xp.ones_like(x) if p == 1 else x
        for _ in range(int(p) - 2):
            lower = lower * x
        yield lower * x
        yield p * lower
        return
    yield x**p
    yield p * x ** (p - 1)


_SMALL_POWER = 8


# --------------------------------------------------------------------------------------
# Binary rules: y = u (op) v, dy/du = diag(.), dy/dv = diag(.). Operands broadcast.
# --------------------------------------------------------------------------------------


def _full(xp, a, y):
    """``a`` broadcast to the shape and dtype of ``y``, as a new array."""
    return xp.broadcast_to(a, y.shape).astype(y.dtype)


@_binary("add", "u + v; 1; 1", scalar=("u + v", "1.0", "1.0"))
def _add(xp, u, v):
    y = u + v
    yield y
    yield xp.ones_like(y)
    yield xp.ones_like(y)


@_binary("sub", "u - v; 1; -1", scalar=("u - v", "1.0", "-1.0"))
def _sub(xp, u, v):
    y = u - v
    yield y
    yield xp.ones_like(y)
    yield xp.full_like(y, -1)


@_binary("mul", "u v; v; u", scalar=("u * v", "v", "u"))
def _mul(xp, u, v):
    y = u * v
    yield y
    yield _full(xp, v, y)
    yield _full(xp, u, y)


@_binary("div", "u / v; 1/v; -u/v^2", scalar=("u / v", "1.0 / v", "-y / v"))
def _div(xp, u, v):
    y = u / v
    yield y
    r = _full(xp, 1 / v, y)
    yield r
    yield -y * r


def _select(xp, first, y):
    """The partials of a selection: ``[first]`` w.r.t. u, ``[not first]`` w.r.t. v."""
    first = xp.broadcast_to(first, y.shape)
    return _like(xp, first, y), _like(xp, ~first, y)


@_binary(
    "maximum",
    "max(u, v); [u > v]; [u <= v] (a tie goes to v)",
    scalar=("where(u != u, u, where(u > v, u, v))", "where(u > v, 1.0, 0.0)", "where(u > v, 0.0, 1.0)"),
)
def _maximum(xp, u, v):
    y = xp.maximum(u, v)
    yield y
    yield from _select(xp, u > v, y)


@_binary(
    "minimum",
    "min(u, v); [u < v]; [u >= v] (a tie goes to v)",
    scalar=("where(u != u, u, where(u < v, u, v))", "where(u < v, 1.0, 0.0)", "where(u < v, 0.0, 1.0)"),
)
def _minimum(xp, u, v):
    y = xp.minimum(u, v)
    yield y
    yield from _select(xp, u < v, y)


@_binary(
    "pow",
    "u^v; v u^(v-1) (0 where v is 0); u^v log(u) (0 where u^v is 0)",
    scalar=("pow(u, v)", "where(v == 0.0, 0.0, v * pow(u, v - 1.0))", "where(y == 0.0, 0.0, y * log(u))"),
)
def _pow(xp, u, v):
    with _quiet(xp):
        y = u**v
    yield y
    with _quiet(xp):
        du = _full(xp, xp.where(v == 0, 0, v * u ** (v - 1)), y)
        dv = xp.where(y == 0, 0, y * xp.log(xp.where(y == 0, 1, u))).astype(y.dtype, copy=False)
    yield du
    yield dv


def _quiet(xp):
    """Silence NumPy's floating-point warnings where inf/NaN is the documented result."""
    if xp.__name__ == "numpy":
        import numpy as np

        return np.errstate(divide="ignore", invalid="ignore", over="ignore")
    return contextlib.nullcontext()


def rule(name: str) -> ElementwiseRule:
    """The rule called ``name`` (unary or binary), or a ValueError listing the known ones."""
    found = UNARY.get(name) or BINARY.get(name)
    if found is None:
        raise ValueError(
            f"name: unknown element-wise operation {name!r}; unary: {', '.join(sorted(UNARY))}; "
            f"binary: {', '.join(sorted(BINARY))}"
        )
    return found
