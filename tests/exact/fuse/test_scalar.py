"""The rules' scalar forms rendered as generated code say what the rules' array forms say."""

from __future__ import annotations

import math

import numpy as np
import pytest

from batchjac.core.elementwise_rules import BINARY, UNARY, rule
from batchjac.exact.fuse.scalar import MINUS_ONE, ONE, Unsupported, constant, fill, render, rule_code

_NAMES = dict(
    exp=np.exp, log=np.log, log1p=np.log1p, expm1=np.expm1, log2=np.log2, log10=np.log10, sin=np.sin, cos=np.cos,
    tan=np.tan, asin=np.arcsin, acos=np.arccos, atan=np.arctan, sinh=np.sinh, cosh=np.cosh, tanh=np.tanh,
    asinh=np.arcsinh, acosh=np.arccosh, atanh=np.arctanh, sqrt=np.sqrt, erf=math.erf, pow=np.power, fabs=np.abs,
    fmax=np.fmax, fmin=np.fmin, floor=np.floor, ceil=np.ceil, rint=np.rint, atan2=np.arctan2, hypot=np.hypot,
    f64=np.float64,
)  # fmt: skip
_PARAMS = {"leaky_relu": (("alpha", 0.2),), "elu": (("alpha", 0.7),), "power": (("p", 3.0),)}


def _evaluate(template, arguments, out=None):
    if template in (ONE, MINUS_ONE):
        return float(template)
    names = {**arguments, **({"y": out} if out is not None else {})}
    return eval(
        fill(template, {k: f"_{k}" for k in names}), dict(_NAMES), {f"_{k}": v for k, v in names.items()}
    )  # noqa: S307


@pytest.mark.parametrize("name", sorted(UNARY) + sorted(BINARY))
def test_rendered_rule_matches_its_array_form(name):
    found = rule(name)
    rng = np.random.default_rng(0)
    low, high = (
        (1.2, 1.8)
        if name == "arccosh"
        else (-0.9, 0.9)
        if name in ("arcsin", "arccos", "arctanh")
        else (0.1, 2.0)
    )
    points = rng.uniform(low, high, (20, found.arity))
    if name in ("relu", "abs", "sign", "leaky_relu", "elu", "floor", "ceil", "round", "maximum", "minimum"):
        points = points - 1.0
    params = _PARAMS.get(name, ())
    value, partials = rule_code(name, "<f8", params)
    argument_names = found.arguments
    for point in points:
        arguments = {a: np.float64(p) for a, p in zip(argument_names, point)}
        expected = found.value_and_derivatives(np, *(np.array([p]) for p in point), **dict(params))
        y = _evaluate(value, arguments)
        np.testing.assert_allclose(y, expected[0][0], rtol=1e-13)
        for partial, reference in zip(partials, expected[1:]):
            np.testing.assert_allclose(
                _evaluate(partial, arguments, y), reference[0], rtol=1e-12, atol=1e-300
            )


def test_render_and_constants():
    assert (
        render("where(x > 0.0, 1.0, alpha)", np.float32, {"alpha": 0.5})
        == "(f32(1.0) if __x__ > f32(0.0) else f32(0.5))"
    )
    assert (
        render("exp(-x)", np.float32) == "(exp_f32(-__x__))"
        and render("exp(-x)", np.float64) == "(exp(-__x__))"
    )
    assert (
        constant(-1, np.float64) == "(-1.0)"
        and constant(2, np.int32) == "i32(2)"
        and constant(3, np.int64) == "3"
    )
    assert rule_code("add", "<f8", ())[1] == (ONE, ONE) and rule_code("sub", "<f8", ())[1] == (ONE, MINUS_ONE)
    with pytest.raises(Unsupported, match="complex128"):
        constant(1, np.complex128)
