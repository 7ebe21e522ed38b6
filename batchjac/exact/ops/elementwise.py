"""Element-wise array functions: ``bj.exp``, ``bj.maximum``, ``bj.where``, ``bj.clip``, ...

On plain arrays they compute values as NumPy does; on traced arrays they record the rule's
primitive, whose local Jacobian is ``Diagonal`` ``(B, n)`` (a scaled ``Identity`` for
``x + c``, ``c * x``; a row-scaled broadcast for an operand broadcast against the result).
The derivative of each rule is stated (and derived) with its scalar form in
:mod:`batchjac.core.elementwise_rules`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from batchjac.core.elementwise_rules import BINARY, UNARY
from batchjac.exact.ops.operands import Call, elementwise_operands, is_number, unwrap
from batchjac.exact.primitives.base import REGISTRY
from batchjac.exact.primitives.elementwise import COMPARISONS, ensure_rule
from batchjac.exact.tracer import PER_SAMPLE, Tracer, bind


def apply_rule(name: str, *args: Any, **params: Any) -> Any:
    """Rule ``name`` on ``args`` (NumPy broadcasting, batch semantics of :mod:`operands`)."""
    if (len(args) == 1 and type(args[0]) is Tracer) or (len(args) == 2 and _plain_pair(*args)):
        return bind(ensure_rule(name), args, params)  # nothing to check or convert
    call = Call(*args)
    operands = elementwise_operands(args, call, name)
    return unwrap(bind(ensure_rule(name), operands, params))


def _plain_pair(u: Any, v: Any) -> bool:
    """Two operands that :func:`elementwise_operands` would pass on as they are: a traced
    array with a Python float or int, with a traced array of its trace of the same per-sample
    shape and batch flag, or with a real NumPy array shared by the batch (fewer axes than the
    traced array has in batched mode; any in per-sample mode)."""
    if type(u) is Tracer:
        t, other = u, v
    elif type(v) is Tracer:
        t, other = v, u
    else:
        return False
    kind = type(other)
    if kind is float or kind is int:
        return True
    if kind is Tracer:
        a, b = t.node, other.node
        return other.recording is t.recording and a.shape == b.shape and a.batched == b.batched
    if kind is np.ndarray and other.dtype.kind in "fiub":
        return t.recording.mode == PER_SAMPLE or other.ndim < len(t.shape)
    return False


def _check_params(name: str, params: dict[str, Any]) -> dict[str, float]:
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: {key} must be a real number, got {value!r}")
    return {k: float(v) for k, v in params.items()}


def _unary(name: str, public: str | None = None) -> Callable[..., Any]:
    found = UNARY[name]
    public = public or name
    extra = "".join(f", {k}={v!r}" for k, v in found.params.items())

    def function(x: Any, **params: Any) -> Any:
        if not params:
            return apply_rule(name, x)
        unknown = set(params) - set(found.params)
        if unknown:
            raise TypeError(
                f"{public}() got unexpected keyword argument(s) {sorted(unknown)}; it takes {sorted(found.params) or 'none'}"
            )
        return apply_rule(name, x, **_check_params(public, params))

    function.__name__ = function.__qualname__ = public
    function.__doc__ = (
        f"Element-wise ``{public}(x{extra})``: {found.doc}.\n\n"
        "The value and derivative follow its scalar form in :mod:`batchjac.core.elementwise_rules`;\n"
        "the Jacobian is ``Diagonal`` ``(B, n)`` with ``n`` the per-sample size of ``x``.\n\n"
        f">>> import numpy as np, batchjac as bj\n>>> bj.{public}(np.array([[0.5]])).shape\n(1, 1)\n"
    )
    return function


def _binary(public: str, name: str) -> Callable[[Any, Any], Any]:
    found = BINARY[name]

    def function(u: Any, v: Any) -> Any:
        return apply_rule(name, u, v)

    function.__name__ = function.__qualname__ = public
    function.__doc__ = (
        f"Element-wise ``{found.doc.split(';')[0]}`` with NumPy broadcasting.\n\n"
        "Jacobians: ``Diagonal`` for an operand of the result's shape; the partials on the rows of\n"
        "the broadcast map for a broadcast operand (e.g. a per-sample scalar ``(B, 1)`` against\n"
        "``(B, n)`` gives a column).\n\n"
        f">>> import numpy as np, batchjac as bj\n>>> bj.{public}(np.ones((2, 3)), np.ones((2, 1))).shape\n(2, 3)\n"
    )
    return function


UNARY_NAMES = {
    "exp": "exp", "exp2": "exp2", "expm1": "expm1", "log": "log", "log2": "log2", "log10": "log10",
    "log1p": "log1p", "sin": "sin", "cos": "cos", "tan": "tan", "arcsin": "arcsin", "arccos": "arccos",
    "arctan": "arctan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "arcsinh": "arcsinh",
    "arccosh": "arccosh", "arctanh": "arctanh", "erf": "erf", "sqrt": "sqrt", "square": "square",
    "reciprocal": "reciprocal", "abs": "abs", "negative": "negative", "sigmoid": "sigmoid",
    "softplus": "softplus", "relu": "relu", "leaky_relu": "leaky_relu", "elu": "elu", "gelu": "gelu",
    "sign": "sign", "floor": "floor", "ceil": "ceil", "round": "round",
}  # fmt: skip
BINARY_NAMES = {
    "add": "add", "subtract": "sub", "multiply": "mul", "divide": "div", "maximum": "maximum",
    "minimum": "minimum", "arctan2": "arctan2", "hypot": "hypot", "logaddexp": "logaddexp",
}  # fmt: skip

FUNCTIONS = {public: _unary(name, public) for public, name in UNARY_NAMES.items()}
FUNCTIONS.update({public: _binary(public, name) for public, name in BINARY_NAMES.items()})


def power(u: Any, v: Any) -> Any:
    """``u ** v`` element-wise; a constant exponent ``p`` uses the rule ``p u^(p-1)`` (integer
    powers by products).

    >>> import numpy as np, batchjac as bj
    >>> bj.power(np.array([[2.0, 3.0]]), 2).tolist()
    [[4.0, 9.0]]
    """
    if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)):
        return apply_rule("power", u, p=float(v))
    return apply_rule("pow", u, v)


def where(condition: Any, a: Any, b: Any) -> Any:
    """``a`` where ``condition`` holds, else ``b`` (element-wise, NumPy broadcasting).

    ``condition`` is a truth value: a boolean array (``x > 0``, traced or not); other data
    is taken as ``condition != 0``, as NumPy does, and is never differentiated. The
    Jacobians w.r.t. ``a`` and ``b`` are the diagonals ``[condition]`` and ``[not condition]``.

    >>> import numpy as np, batchjac as bj
    >>> x = np.array([[-1.0, 2.0]])
    >>> bj.where(x > 0, x, 0.0).tolist()
    [[0.0, 2.0]]
    """
    call = Call(condition, a, b)
    if not isinstance(condition, Tracer) and not is_number(condition):
        condition = np.asarray(condition) if not hasattr(condition, "dtype") else condition
        if condition.dtype != np.bool_:
            condition = condition != 0
    elif isinstance(condition, Tracer) and condition.dtype != np.bool_:
        condition = unwrap(bind(COMPARISONS["ne"], elementwise_operands([condition, 0], call, "where"), {}))
    elif is_number(condition):
        condition = np.bool_(bool(condition))
    operands = elementwise_operands([condition, a, b], call, "where")
    return unwrap(bind(REGISTRY["select"], operands, {}))


def clip(x: Any, a_min: Any = None, a_max: Any = None) -> Any:
    """``x`` limited to ``[a_min, a_max]`` (either bound may be None); the derivative is 1
    inside and 0 outside (at a bound: that of ``maximum``/``minimum``, to the bound).

    >>> import numpy as np, batchjac as bj
    >>> bj.clip(np.array([[-2.0, 0.5, 3.0]]), -1.0, 1.0).tolist()
    [[-1.0, 0.5, 1.0]]
    """
    if a_min is None and a_max is None:
        raise ValueError("clip: give a_min, a_max or both")
    if a_min is not None:
        x = FUNCTIONS["maximum"](x, a_min)
    if a_max is not None:
        x = FUNCTIONS["minimum"](x, a_max)
    return x


def compare(op: str, a: Any, b: Any) -> Any:
    """A comparison (``"gt"``, ``"eq"``, ...) or logical operation: a boolean array, traced
    when an operand is (not differentiable)."""
    call = Call(a, b)
    return unwrap(bind(COMPARISONS[op], elementwise_operands([a, b], call, op), {}))


def logical(op: str, *args: Any) -> Any:
    call = Call(*args)
    return unwrap(bind(COMPARISONS[op], elementwise_operands(list(args), call, op), {}))


def deg2rad(x: Any) -> Any:
    """Degrees to radians: ``x * pi / 180``.

    >>> import numpy as np, batchjac as bj
    >>> float(bj.deg2rad(np.array([[180.0]]))[0, 0]) == np.pi
    True
    """
    return FUNCTIONS["multiply"](x, np.pi / 180)


def rad2deg(x: Any) -> Any:
    """Radians to degrees: ``x * 180 / pi``.

    >>> import numpy as np, batchjac as bj
    >>> round(float(bj.rad2deg(np.array([[np.pi]]))[0, 0]), 9)
    180.0
    """
    return FUNCTIONS["multiply"](x, 180 / np.pi)
