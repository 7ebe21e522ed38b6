"""Every element-wise rule: value against a closed form, derivative against a numerical one.

The reference formulas are written here, independently of ``batchjac.core.elementwise_rules``.
Derivatives are checked by complex step (``Im f(x + ih) / h``, exact to rounding) where
the reference formula is complex-analytic, and by central differences in float64 where it
is not (the piecewise rules, ``gelu`` through ``math.erf``). Rules run through each
backend's ``elementwise`` primitive.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from helpers import assert_close, to_numpy

from batchjac.backends.dispatch import get_backend
from batchjac.core.elementwise_rules import BINARY, UNARY, rule

DTYPES = (np.float32, np.float64)
SHAPE = (5, 7)
COMPLEX_STEP = 1e-30
# tolerance of float64 derivatives by method; float32 results use conftest's default
DERIVATIVE_RTOL = {"complex": 1e-10, "central": 1e-7}

_erf = np.vectorize(math.erf, otypes=[float])


def uniform(lo, hi):
    return lambda rng, shape: rng.uniform(lo, hi, shape)


def signed(lo, hi):
    """Magnitude in ``[lo, hi)``, either sign: away from a kink at 0."""
    return lambda rng, shape: rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def on_grid(offset):
    """Quarter-integers plus ``offset``: two grids with different offsets never tie."""
    return lambda rng, shape: rng.integers(-8, 8, shape) / 4 + offset


def case(name, value, sample, method, **params):
    label = name + "".join(f"({k}={v})" for k, v in params.items())
    return pytest.param(name, value, sample, method, params, id=label)


UNARY_CASES = [
    case("identity", lambda x: x, uniform(-3, 3), "complex"),
    case("negative", lambda x: -x, uniform(-3, 3), "complex"),
    case("exp", np.exp, uniform(-3, 3), "complex"),
    case("log", np.log, uniform(0.2, 4), "complex"),
    case("log1p", np.log1p, uniform(-0.5, 3), "complex"),
    case("expm1", np.expm1, uniform(-3, 3), "complex"),
    case("sin", np.sin, uniform(-4, 4), "complex"),
    case("cos", np.cos, uniform(-4, 4), "complex"),
    case("tan", np.tan, uniform(-1.2, 1.2), "complex"),
    case("tanh", np.tanh, uniform(-3, 3), "complex"),
    case("sigmoid", lambda x: 1 / (1 + np.exp(-x)), uniform(-6, 6), "complex"),
    case("softplus", lambda x: np.log1p(np.exp(x)), uniform(-6, 6), "complex"),
    case("relu", lambda x: (x + np.abs(x)) / 2, signed(0.05, 3), "central"),
    case("leaky_relu", lambda x: np.maximum(x, 0.01 * x), signed(0.05, 3), "central"),
    case("leaky_relu", lambda x: np.maximum(x, 0.2 * x), signed(0.05, 3), "central", alpha=0.2),
    case("elu", lambda x: np.where(x > 0, x, np.exp(x) - 1), signed(0.05, 3), "central"),
    case("elu", lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1)), signed(0.05, 3), "central", alpha=0.7),
    case("gelu", lambda x: x * 0.5 * (1 + _erf(x / math.sqrt(2))), uniform(-4, 4), "central"),
    case("sqrt", np.sqrt, uniform(0.1, 4), "complex"),
    case("square", lambda x: x * x, uniform(-3, 3), "complex"),
    case("reciprocal", lambda x: 1 / x, signed(0.3, 3), "complex"),
    case("abs", np.abs, signed(0.05, 3), "central"),
    case("power", lambda x: x * x, uniform(-3, 3), "complex"),
    case("power", lambda x: x**2.5, uniform(0.2, 3), "complex", p=2.5),
    case("power", lambda x: x**-3, signed(0.3, 3), "complex", p=-3),
    case("power", lambda x: np.ones_like(x), uniform(-3, 3), "complex", p=0),
    case("exp2", lambda x: 2.0**x, uniform(-3, 3), "complex"),
    case("log2", lambda x: np.log(x) / np.log(2.0), uniform(0.2, 4), "complex"),
    case("log10", lambda x: np.log(x) / np.log(10.0), uniform(0.2, 4), "complex"),
    case("arcsin", np.arcsin, uniform(-0.9, 0.9), "complex"),
    case("arccos", np.arccos, uniform(-0.9, 0.9), "complex"),
    case("arctan", np.arctan, uniform(-3, 3), "complex"),
    case("sinh", np.sinh, uniform(-3, 3), "complex"),
    case("cosh", np.cosh, uniform(-3, 3), "complex"),
    case("arcsinh", np.arcsinh, uniform(-3, 3), "complex"),
    case("arccosh", np.arccosh, uniform(1.1, 4), "complex"),
    case("arctanh", np.arctanh, uniform(-0.9, 0.9), "complex"),
    case("erf", _erf, uniform(-3, 3), "central"),
    case("sign", np.sign, signed(0.05, 3), "central"),
    case("floor", np.floor, on_grid(0.1), "central"),
    case("ceil", np.ceil, on_grid(0.1), "central"),
    case("round", np.round, on_grid(0.1), "central"),
]

BINARY_CASES = [
    case("add", lambda u, v: u + v, (uniform(-3, 3), uniform(-3, 3)), "complex"),
    case("sub", lambda u, v: u - v, (uniform(-3, 3), uniform(-3, 3)), "complex"),
    case("mul", lambda u, v: u * v, (uniform(-3, 3), uniform(-3, 3)), "complex"),
    case("div", lambda u, v: u / v, (uniform(-3, 3), signed(0.3, 3)), "complex"),
    case("maximum", lambda u, v: np.where(u > v, u, v), (on_grid(0.05), on_grid(0.15)), "central"),
    case("minimum", lambda u, v: np.where(u < v, u, v), (on_grid(0.05), on_grid(0.15)), "central"),
    case("pow", lambda u, v: u**v, (uniform(0.3, 3), uniform(-2, 2)), "complex"),
    case("arctan2", lambda u, v: np.arctan2(u, v), (uniform(-3, 3), signed(0.3, 3)), "central"),
    case("hypot", lambda u, v: np.sqrt(u * u + v * v), (signed(0.3, 3), uniform(-3, 3)), "complex"),
    case("logaddexp", lambda u, v: np.log(np.exp(u) + np.exp(v)), (uniform(-3, 3), uniform(-3, 3)), "complex"),
]

# u and v shapes: equal, and v (or u) broadcast from a column or a 0-d array
BROADCASTS = {"same": (SHAPE, SHAPE), "v column": (SHAPE, (5, 1)), "v 0-d": (SHAPE, ()),
              "u column": ((5, 1), SHAPE), "u 0-d": ((), SHAPE)}  # fmt: skip


@pytest.fixture
def ops(backend):
    return get_backend(backend)


def derivative(f, args, which, method):
    """d f / d args[which], element by element, in float64 (args already broadcast)."""
    args = [np.asarray(a, dtype=np.float64) for a in args]
    x = args[which]
    if method == "complex":
        shifted = list(args)
        shifted[which] = x + 1j * COMPLEX_STEP
        return np.imag(f(*shifted)) / COMPLEX_STEP
    h = 1e-6 * np.maximum(1.0, np.abs(x))
    up, down = list(args), list(args)
    up[which], down[which] = x + h, x - h
    return (f(*up) - f(*down)) / (2 * h)


def check_rule(ops, on_device, name, params, reference, method, arrays, dtype):
    """Run rule ``name`` on ``arrays`` (NumPy, of ``dtype``) and compare every output."""
    outputs = ops.elementwise(name, *(on_device(a) for a in arrays), **params)
    assert len(outputs) == 1 + len(arrays)
    full = np.broadcast_arrays(*(a.astype(np.float64) for a in arrays))
    expected = [reference(*full)] + [derivative(reference, full, i, method) for i in range(len(arrays))]
    rtol = DERIVATIVE_RTOL[method] if dtype == np.float64 else None
    for i, (got, want) in enumerate(zip(outputs, expected)):
        assert got.dtype == dtype, f"output {i}: dtype {got.dtype}, expected {dtype}"
        assert_close(got, want, rtol=rtol if i else None)


def test_every_rule_has_a_reference_here():
    assert {p.values[0] for p in UNARY_CASES} == {name for name, found in UNARY.items() if not found.user}
    assert {p.values[0] for p in BINARY_CASES} == set(BINARY)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,reference,sample,method,params", UNARY_CASES)
def test_unary_value_and_derivative_match_closed_form(
    ops, on_device, rng, name, reference, sample, method, params, dtype
):
    x = sample(rng, SHAPE).astype(dtype)
    check_rule(ops, on_device, name, params, reference, method, [x], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", list(BROADCASTS))
@pytest.mark.parametrize("name,reference,sample,method,params", BINARY_CASES)
def test_binary_value_and_derivatives_match_closed_form_with_broadcasting(
    ops, on_device, rng, name, reference, sample, method, params, shapes, dtype
):
    u_shape, v_shape = BROADCASTS[shapes]
    u = np.asarray(sample[0](rng, u_shape)).astype(dtype)
    v = np.asarray(sample[1](rng, v_shape)).astype(dtype)
    check_rule(ops, on_device, name, params, reference, method, [u, v], dtype)


# name, params, x -> value, derivative, as the module docstring documents them
UNARY_KINKS = [
    ("relu", {}, 0.0, 0.0, 0.0),
    ("relu", {}, -0.0, 0.0, 0.0),
    ("abs", {}, 0.0, 0.0, 0.0),
    ("abs", {}, -0.0, 0.0, 0.0),
    ("leaky_relu", {}, 0.0, 0.0, 0.01),
    ("leaky_relu", {"alpha": 0.2}, 0.0, 0.0, 0.2),
    ("elu", {}, 0.0, 0.0, 1.0),
    ("elu", {"alpha": 0.7}, 0.0, 0.0, 0.7),
    ("sqrt", {}, 0.0, 0.0, np.inf),
]

# name, u, v -> value, dy/du, dy/dv
BINARY_KINKS = [
    ("maximum", 1.5, 1.5, 1.5, 0.0, 1.0),  # a tie goes to v
    ("minimum", -0.5, -0.5, -0.5, 0.0, 1.0),  # a tie goes to v
    ("pow", 0.0, 2.0, 0.0, 0.0, 0.0),  # u^v == 0: dy/dv taken as 0
    ("pow", -2.0, 2.0, 4.0, -4.0, np.nan),  # u < 0: log(u) is NaN
    ("pow", 0.0, 0.0, 1.0, 0.0, -np.inf),  # u^0 is constant in u; log(0) = -inf
]  # fmt: skip


def assert_exactly(got, expected, dtype):
    got = to_numpy(got)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.full(got.shape, expected, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,params,x,value,slope", UNARY_KINKS)
def test_unary_kinks_take_the_documented_values_without_warnings(
    ops, on_device, name, params, x, value, slope, dtype
):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, dy = ops.elementwise(name, on_device(np.full(SHAPE, x, dtype=dtype)), **params)
    assert_exactly(y, value, dtype)
    assert_exactly(dy, slope, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,u,v,value,du,dv", BINARY_KINKS)
def test_binary_ties_and_edges_take_the_documented_values(ops, on_device, name, u, v, value, du, dv, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs = ops.elementwise(name, *(on_device(np.full(SHAPE, a, dtype=dtype)) for a in (u, v)))
    for got, expected in zip(outputs, (value, du, dv)):
        assert_exactly(got, expected, dtype)


def test_unknown_name_is_value_error_listing_the_known_ones(ops, on_device):
    with pytest.raises(ValueError, match=r"unknown element-wise operation 'swish'") as raised:
        ops.elementwise("swish", on_device(np.ones(3)))
    for name in (*UNARY, *BINARY):
        assert re.search(rf"\b{name}\b", str(raised.value)), name
    with pytest.raises(ValueError, match=r"'swish'"):
        rule("swish")


LARGE = [-1e4, -1000.0, -100.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 100.0, 1000.0, 1e4]


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


# name -> (value, derivative): stable closed forms through logaddexp
STABLE = {
    "sigmoid": (lambda x: np.exp(_log_sigmoid(x)), lambda x: np.exp(_log_sigmoid(x) + _log_sigmoid(-x))),
    "softplus": (lambda x: np.logaddexp(0.0, x), lambda x: np.exp(_log_sigmoid(x))),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(STABLE))
def test_sigmoid_and_softplus_at_large_arguments_are_finite_without_warnings(ops, on_device, name, dtype):
    x = np.array([LARGE] * 2, dtype=dtype)
    with warnings.catch_warnings(), np.errstate(divide="warn", over="warn", invalid="warn", under="ignore"):
        warnings.simplefilter("error")
        y, dy = (to_numpy(a) for a in ops.elementwise(name, on_device(x)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dy))
    value, slope = STABLE[name]
    x64 = x.astype(np.float64)
    for got, expected in ((y, value(x64)), (dy, slope(x64))):
        assert got.dtype == dtype
        assert_close(got, expected)


def test_sigmoid_derivative_keeps_relative_accuracy_for_large_positive_x(ops, on_device):
    x = np.array([[20.0, 30.0, 50.0, 100.0]])
    _, dy = ops.elementwise("sigmoid", on_device(x))
    np.testing.assert_allclose(to_numpy(dy), STABLE["sigmoid"][1](x), rtol=1e-12)


# The scalar forms (the source of the GPU kernels) against the array rules.
def _numpy_scalar_namespace():
    from batchjac.core.elementwise_rules import SCALAR_FUNCTIONS, _numpy_erf

    namespace = {
        "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "sin": np.sin, "cos": np.cos,
        "tan": np.tan, "tanh": np.tanh, "sqrt": np.sqrt, "erf": _numpy_erf(), "pow": np.power,
        "fabs": np.abs, "fmax": np.fmax, "fmin": np.fmin, "where": np.where, "log2": np.log2,
        "log10": np.log10, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh,
        "cosh": np.cosh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
        "floor": np.floor, "ceil": np.ceil, "rint": np.rint, "atan2": np.arctan2, "hypot": np.hypot,
    }  # fmt: skip
    assert set(namespace) == set(SCALAR_FUNCTIONS)
    return namespace


SCALAR_POINTS = {
    "log": (0.2, 3.0), "log1p": (-0.5, 3.0), "sqrt": (0.1, 4.0), "tan": (-1.2, 1.2),
    "power": (0.2, 3.0), "pow": (0.2, 3.0), "log2": (0.2, 3.0), "log10": (0.2, 3.0),
    "arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9), "arccosh": (1.1, 4.0),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(n for n in UNARY if not UNARY[n].user) + sorted(BINARY))
def test_scalar_form_matches_the_array_rule(name, rng):
    found = rule(name)
    assert found.scalar is not None and len(found.scalar) == 1 + found.arity
    low, high = SCALAR_POINTS.get(name, (-3.0, 3.0))
    args = [rng.uniform(low, high, 64) for _ in range(found.arity)]
    args[0][:2] = [0.0, 1.0] if low <= 0 else args[0][:2]  # kinks and ties too
    if found.arity == 2:
        args[1][2] = args[0][2]
    names = ("x",) if found.arity == 1 else ("u", "v")
    scope = (
        _numpy_scalar_namespace() | dict(zip(names, args)) | {k: float(v) for k, v in found.params.items()}
    )
    with np.errstate(all="ignore"):
        expected = found.value_and_derivatives(np, *args)
        scope["y"] = eval(found.scalar[0], scope)
        got = [scope["y"]] + [eval(expression, scope) for expression in found.scalar[1:]]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(np.broadcast_to(g, e.shape), e, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 5.0, 8.0, 9.0, 2.5, -2.0, 0.0])
def test_power_by_constant_for_integer_and_general_exponents(p, rng):
    x = rng.uniform(0.2, 2.0, (3, 7))
    y, dy = rule("power").value_and_derivatives(np, x, p=p)
    np.testing.assert_allclose(y, x**p, rtol=1e-14)
    np.testing.assert_allclose(dy, p * x ** (p - 1) if p else np.zeros_like(x), rtol=1e-14)
    y32, dy32 = rule("power").value_and_derivatives(np, x.astype(np.float32), p=p)
    assert y32.dtype == dy32.dtype == np.float32


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_scalar_form_propagates_nan_like_numpy(name):
    scope = _numpy_scalar_namespace() | {
        "u": np.array([np.nan, 1.0, np.nan]),
        "v": np.array([1.0, np.nan, np.nan]),
    }
    expected = getattr(np, name)(scope["u"], scope["v"])
    np.testing.assert_array_equal(eval(rule(name).scalar[0], scope), expected)


NAN_PARAMS = {"power": [{"p": 2.0}, {"p": 2.5}, {"p": 0.0}]}
# (rule, NaN argument, derivative) whose derivative does not depend on that argument: the slope
# of a linear function is a constant, NaN or not (JAX and PyTorch agree).
CONSTANT_SLOPES = {("identity", 0, 0), ("negative", 0, 0), ("mul", 0, 0), ("mul", 1, 1), ("div", 0, 0)}
CONSTANT_SLOPES |= {(name, p, d) for name in ("add", "sub") for p in (0, 1) for d in (0, 1)}


@pytest.mark.parametrize("name", sorted(n for n in UNARY if not UNARY[n].user) + sorted(BINARY))
def test_nan_propagates_through_every_value_and_derivative(ops, on_device, name):
    """A NaN input gives a NaN value and NaN derivatives, as NumPy's functions do (x**0 is the
    one exception NumPy makes: nan**0 == 1, whose derivative 0 becomes NaN here)."""
    found = rule(name)
    for params in NAN_PARAMS.get(name, [{}]):
        for position in range(found.arity):
            args = [np.full((2, 3), 0.5) for _ in range(found.arity)]
            args[position] = np.full((2, 3), np.nan)
            with np.errstate(all="ignore"):
                y, *derivatives = (to_numpy(a) for a in ops.elementwise(name, *map(on_device, args), **params))
            if not (name == "power" and params["p"] == 0.0):
                assert np.isnan(y).all(), (name, params, position, "value")
            for i, d in enumerate(derivatives):
                if (name, position, i) in CONSTANT_SLOPES:
                    assert not np.isnan(d).any(), (name, position, i)
                else:
                    assert np.isnan(d).all(), (name, params, position, f"derivative {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_compiled_unary_numpy_function_is_the_rule_bit_for_bit(dtype):
    """The hot path of the structured interpreter (one compiled function per unary rule) gives
    the value and derivative of ``value_and_derivatives``, bit for bit, NaN and inf included."""
    from batchjac.core.elementwise_rules import unary_numpy_function

    x = np.array([[-3.0, -0.5, 0.0, 0.25, 0.9, 2.0, np.nan, np.inf, -np.inf]], dtype=dtype)
    checked = 0
    for name, found in sorted(UNARY.items()):
        fast = unary_numpy_function(found)
        if fast is None:
            assert found.params or found.array is not None or found.scalar is None
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log(-3), arcsin(2): NaN as NumPy gives
            expected = found.value_and_derivatives(np, x)
            got = fast(x)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rules_value_function_is_its_value_for_every_built_in_rule(dtype, rng):
    """``value_function`` (found once, the interpreter's value steps) gives ``value`` bit for
    bit; with ``same_dtype`` (no dtype check per call) too, for operands of one float dtype:
    every built-in rule keeps that dtype (its constants are Python numbers, weak)."""
    checked = 0
    for table in (UNARY, BINARY):
        for name, found in sorted(table.items()):
            if found.user:
                continue
            params = {k: 0.3 for k in found.params}
            args = [np.concatenate([rng.standard_normal(6), [0.0, 2.5]]).astype(dtype) for _ in range(found.arity)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = found.value(np, *args, **params)
                for same in (False, True):
                    got = found.value_function(np, same_dtype=same, **params)(*args)
                    assert got.dtype == expected.dtype == np.dtype(dtype) or found.zero_derivative, (name, same)
                    np.testing.assert_array_equal(got, expected, err_msg=name)
            checked += 1
    assert checked >= 40
