"""Structured batched Jacobians (Dense, Diagonal, Shared, Identity) against dense NumPy.

Every operand is built from random data with a float64 dense reference computed here,
independently of the library (``np.eye`` times the diagonal, ``np.broadcast_to`` of the
shared matrix, ...); products, sums and the methods are checked against ``np.matmul``,
``+``, ``np.swapaxes``, ``np.einsum``, ``np.diagonal`` and ``np.linalg.slogdet`` of it.
"""

from __future__ import annotations

import itertools
import operator
import re
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import assert_close, to_numpy

import batchjac as bj
from batchjac.backends.dispatch import get_backend

DTYPES = (np.float32, np.float64)
BATCHES = (0, 1, 5)

# Operand kinds: the four types, with Identity both scalar-scaled and per-sample-scaled.
KINDS = ("dense", "diagonal", "shared", "identity", "identity_per_sample")
SQUARE_ONLY = {"diagonal", "identity", "identity_per_sample"}
PAIRS = list(itertools.product(KINDS, KINDS))
IDENTITY_SCALE = 1.5

# Result types of jacobian_algebra's docstring. Its @ table and its + table give the same
# type for every pair (the footnote: an Identity with a per-sample scale makes Shared Dense).
# Rows: left operand; columns: right operand, in the order of KINDS.
RESULT_TYPES = {
    "dense":               "Dense Dense    Dense  Dense    Dense",
    "diagonal":            "Dense Diagonal Dense  Diagonal Diagonal",
    "shared":              "Dense Dense    Shared Shared   Dense",
    "identity":            "Dense Diagonal Shared Identity Identity",
    "identity_per_sample": "Dense Diagonal Dense  Identity Identity",
}  # fmt: skip
RESULT_TYPE = {
    (left, right): name for left, row in RESULT_TYPES.items() for right, name in zip(KINDS, row.split())
}

# The one primitive each product may call (a row/column scaling, one GEMM); pairs not
# listed call none of the spied primitives at all.
PRODUCT_PRIMITIVE = {
    ("dense", "dense"): "batched_matmul",
    ("dense", "diagonal"): "scale_cols",
    ("dense", "shared"): "matmul_shared",
    ("diagonal", "dense"): "scale_rows",
    ("diagonal", "shared"): "scale_rows",
    ("shared", "dense"): "shared_matmul",
    ("shared", "diagonal"): "scale_cols",
}
SPIED_PRIMITIVES = ("batched_matmul", "shared_matmul", "matmul_shared", "scale_rows", "scale_cols")

OPS = {"@": operator.matmul, "+": operator.add, "-": operator.sub}
REFERENCE_OPS = {"@": np.matmul, "+": np.add, "-": np.subtract}


@pytest.fixture
def put(backend, on_device):
    """Moves NumPy arrays to ``backend``'s device; the test runs under ``use_backend``."""
    with bj.use_backend(backend):
        yield on_device


@dataclass
class Operand:
    J: bj.Jacobian
    dense: np.ndarray  # float64 reference, (B, m, n)
    inputs: tuple  # the NumPy arrays handed to the constructor


def _strided_read_only(a):
    """A non-contiguous, read-only view with the values of ``a``."""
    if a.ndim == 0:
        return a
    base = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    view = base[..., ::2]
    view[...] = a
    if a.ndim >= 2:  # a transposed view as well: strides out of order
        view = np.swapaxes(np.swapaxes(view, -1, -2).copy(), -1, -2)
    view.flags.writeable = False
    assert not view.flags.c_contiguous or view.size <= 1
    return view


def make_operand(kind, batch, m, n, dtype, rng, put, strided=False):
    """A random Jacobian of ``kind``, shape ``(batch, m, n)``, with its float64 reference."""
    if kind in SQUARE_ONLY:
        assert m == n

    def data(*shape):
        a = rng.standard_normal(shape).astype(dtype)
        return _strided_read_only(a) if strided else a

    eye = np.eye(n)
    if kind == "dense":
        a = data(batch, m, n)
        return Operand(bj.Dense(put(a)), a.astype(np.float64), (a,))
    if kind == "diagonal":
        d = data(batch, n)
        return Operand(bj.Diagonal(put(d)), d.astype(np.float64)[:, :, None] * eye, (d,))
    if kind == "shared":
        A = data(m, n)
        return Operand(bj.Shared(put(A), batch), np.broadcast_to(A.astype(np.float64), (batch, m, n)), (A,))
    if kind == "identity":
        J = bj.Identity(n, batch, IDENTITY_SCALE, dtype=dtype)
        return Operand(J, np.broadcast_to(IDENTITY_SCALE * eye, (batch, n, n)), ())
    if kind == "identity_per_sample":
        s = data(batch)
        return Operand(bj.Identity(n, batch, put(s)), s.astype(np.float64)[:, None, None] * eye, (s,))
    raise AssertionError(kind)


def product_sizes(left, right):
    """(m, k, n) for ``left (m, k) @ right (k, n)``: distinct where the types allow."""
    k = 4
    return (k if left in SQUARE_ONLY else 3), k, (k if right in SQUARE_ONLY else 5)


def sum_sizes(left, right):
    return (4, 4) if {left, right} & SQUARE_ONLY else (3, 5)


def make_pair(left, right, op, batch, dtype, rng, put, strided=False):
    if op == "@":
        m, k, n = product_sizes(left, right)
        return (make_operand(left, batch, m, k, dtype, rng, put, strided),
                make_operand(right, batch, k, n, dtype, rng, put, strided))  # fmt: skip
    m, n = sum_sizes(left, right)
    return (make_operand(left, batch, m, n, dtype, rng, put, strided),
            make_operand(right, batch, m, n, dtype, rng, put, strided))  # fmt: skip


def assert_matches(J, reference, dtype, type_name=None):
    """``J`` is a Jacobian of ``dtype`` (and type ``type_name``) whose dense form is ``reference``."""
    assert isinstance(J, bj.Jacobian)
    if type_name is not None:
        assert type(J).__name__ == type_name
    assert J.shape == reference.shape
    assert J.dtype == dtype
    dense = J.to_dense()
    assert dense.dtype == dtype
    assert_close(dense, reference)


def assert_slogdet_equal(actual, reference):
    """``(sign, logabsdet)`` equal to NumPy's, ``-inf`` exactly where the sign is 0."""
    sign, logabsdet = (to_numpy(x) for x in actual)
    ref_sign, ref_logabsdet = reference
    assert sign.shape == logabsdet.shape == ref_sign.shape
    np.testing.assert_array_equal(sign, ref_sign)
    singular = ref_sign == 0
    assert np.all(np.isneginf(logabsdet[singular]))
    assert_close(logabsdet[~singular], ref_logabsdet[~singular])


# --------------------------------------------------------------------------------------
# Products and sums of every ordered pair
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("left,right", PAIRS)
def test_product_and_sum_of_every_pair_equal_dense_and_keep_structure(
    left, right, op, dtype, batch, rng, put
):
    J, K = make_pair(left, right, op, batch, dtype, rng, put)
    expected = REFERENCE_OPS[op](J.dense, K.dense)
    assert_matches(OPS[op](J.J, K.J), expected, dtype, RESULT_TYPE[left, right])


@pytest.mark.parametrize("left,right", PAIRS)
def test_product_calls_only_its_scaling_or_single_gemm(left, right, rng, put, backend, monkeypatch):
    """Diagonal @ Dense is a row scaling, Shared @ Dense one flattened GEMM, and so on:
    never a batched dense product where the structure allows less."""
    ops = get_backend(backend)
    calls = []

    def spy(name, fn):
        def recorded(*args):
            calls.append(name)
            return fn(*args)

        return recorded

    for name in SPIED_PRIMITIVES:
        monkeypatch.setattr(ops, name, spy(name, getattr(ops, name)))
    J, K = make_pair(left, right, "@", 5, np.float64, rng, put)
    result = J.J @ K.J
    expected_call = PRODUCT_PRIMITIVE.get((left, right))
    assert calls == ([expected_call] if expected_call else [])
    assert_matches(result, J.dense @ K.dense, np.float64)


@pytest.mark.parametrize("pair", [("diagonal", "dense"), ("dense", "diagonal"),
                                  ("diagonal", "shared"), ("shared", "diagonal")])  # fmt: skip
def test_diagonal_products_never_call_batched_matmul(pair, rng, put, backend, monkeypatch):
    def forbidden(*args):
        raise AssertionError("a dense batched product was computed")

    monkeypatch.setattr(get_backend(backend), "batched_matmul", forbidden)
    J, K = make_pair(*pair, "@", 5, np.float64, rng, put)
    assert_matches(J.J @ K.J, J.dense @ K.dense, np.float64, "Dense")


UNIT_IDENTITY_PARTNERS = [k for k in KINDS if k != "identity"]


@pytest.mark.parametrize("kind", UNIT_IDENTITY_PARTNERS)
def test_identity_with_scale_one_returns_the_other_operand_itself(kind, rng, put):
    X = make_operand(kind, 5, 4, 4, np.float64, rng, put).J
    identity = bj.Identity(4, 5)
    assert identity @ X is X
    assert X @ identity is X


def test_weak_identity_takes_the_dtype_of_its_partner(rng, put):
    d = rng.standard_normal((3, 4)).astype(np.float32)
    D = bj.Diagonal(put(d))
    for result in (bj.Identity(4, 3, 2.0) @ D, D + bj.Identity(4, 3, 2.0)):
        assert result.dtype == np.float32


# --------------------------------------------------------------------------------------
# Methods of each type
# --------------------------------------------------------------------------------------


def operand_of(kind, batch, dtype, rng, put, strided=False):
    m, n = (4, 4) if kind in SQUARE_ONLY else (3, 5)
    return make_operand(kind, batch, m, n, dtype, rng, put, strided)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_to_dense_and_transpose_equal_reference(kind, dtype, batch, rng, put):
    X = operand_of(kind, batch, dtype, rng, put)
    assert_matches(X.J, X.dense, dtype)
    assert_matches(X.J.T, np.swapaxes(X.dense, 1, 2), dtype, type(X.J).__name__)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_jvp_vjp_and_diagonal_equal_einsum_of_dense(kind, dtype, batch, rng, put):
    X = operand_of(kind, batch, dtype, rng, put)
    _, m, n = X.dense.shape
    v = rng.standard_normal((batch, n)).astype(dtype)
    u = rng.standard_normal((batch, m)).astype(dtype)
    for got, expected in [
        (X.J.jvp(put(v)), np.einsum("bij,bj->bi", X.dense, v.astype(np.float64))),
        (X.J.vjp(put(u)), np.einsum("bi,bij->bj", u.astype(np.float64), X.dense)),
        (X.J.diagonal(), np.diagonal(X.dense, axis1=1, axis2=2)),
    ]:
        assert got.dtype == dtype
        assert_close(got, expected)


SCALINGS = {
    "2.0 * J": (lambda J, c: 2.0 * J, lambda c: 2.0),
    "J * -0.5": (lambda J, c: J * -0.5, lambda c: -0.5),
    "-J": (lambda J, c: -J, lambda c: -1.0),
    "J.scaled(3)": (lambda J, c: J.scaled(3), lambda c: 3.0),
    "J.scaled(c)": (lambda J, c: J.scaled(c), lambda c: c),
    "J * c": (lambda J, c: J * c, lambda c: c),
    "c * J": (lambda J, c: c * J, lambda c: c),
}
# A per-sample scale keeps every type but Shared, which becomes Dense.
PER_SAMPLE_TYPE = {"dense": "Dense", "diagonal": "Diagonal", "shared": "Dense",
                   "identity": "Identity", "identity_per_sample": "Identity"}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_scaling_negation_and_per_sample_multiplication(kind, scaling, dtype, rng, put):
    X = operand_of(kind, 5, dtype, rng, put)
    c = rng.standard_normal(5).astype(dtype)
    apply, factor = SCALINGS[scaling]
    factor = factor(c)
    per_sample = isinstance(factor, np.ndarray)
    expected_type = PER_SAMPLE_TYPE[kind] if per_sample else type(X.J).__name__
    expected = X.dense * (factor[:, None, None] if per_sample else factor)
    assert_matches(apply(X.J, put(c)), expected, dtype, expected_type)


# --------------------------------------------------------------------------------------
# slogdet
# --------------------------------------------------------------------------------------


def _slogdet_case(case, dtype, rng, put):
    """(Jacobian, float64 dense reference) of batch 4 with singular and negative samples."""
    n = 4
    if case == "dense":
        a = rng.standard_normal((4, n, n))
        a[0, 2] = 0.0  # a zero row: singular
        a[1] = np.diag([1.0, -2.0, 0.5, 3.0])  # negative determinant
        a[2, :, 1] = 0.0  # a zero column: singular
        a = a.astype(dtype)
        return bj.Dense(put(a)), a.astype(np.float64)
    if case == "diagonal":
        d = rng.uniform(0.5, 2.0, (4, n)) * rng.choice([-1.0, 1.0], (4, n))
        d[0, 1] = 0.0
        d[1] = [-1.0, 2.0, 3.0, 0.5]
        d = d.astype(dtype)
        return bj.Diagonal(put(d)), d.astype(np.float64)[:, :, None] * np.eye(n)
    if case in ("shared", "shared_singular"):
        A = rng.standard_normal((n, n))
        A[0] = -A[0] if np.linalg.det(A) > 0 else A[0]  # negative determinant
        if case == "shared_singular":
            A[3] = 0.0
        A = A.astype(dtype)
        return bj.Shared(put(A), 4), np.broadcast_to(A.astype(np.float64), (4, n, n))
    if case == "identity":
        return bj.Identity(3, 4, -2.0, dtype=dtype), np.broadcast_to(-2.0 * np.eye(3), (4, 3, 3))
    if case == "identity_per_sample":
        s = np.array([2.0, -1.5, 0.0, 0.25], dtype=dtype)
        return bj.Identity(3, 4, put(s)), s.astype(np.float64)[:, None, None] * np.eye(3)
    raise AssertionError(case)


# case -> the signs its batch must contain (0: a singular sample), so the data shows them
SLOGDET_CASES = {"dense": {0, -1}, "diagonal": {0, -1}, "shared": {-1}, "shared_singular": {0},
                 "identity": {-1}, "identity_per_sample": {0, -1}}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(SLOGDET_CASES))
def test_slogdet_equals_numpy_with_singular_and_negative_samples(case, dtype, rng, put):
    J, dense = _slogdet_case(case, dtype, rng, put)
    reference = np.linalg.slogdet(dense)
    assert SLOGDET_CASES[case] <= set(reference[0].tolist())
    assert_slogdet_equal(J.slogdet(), reference)


@pytest.mark.parametrize("kind", KINDS)
def test_slogdet_of_empty_batch_has_shape_zero(kind, rng, put):
    X = make_operand(kind, 0, 3, 3, np.float64, rng, put)
    sign, logabsdet = X.J.slogdet()
    assert sign.shape == logabsdet.shape == (0,)


def test_slogdet_of_zero_sized_zero_identity_is_one_and_zero():
    with np.errstate(all="raise"):
        assert_slogdet_equal(bj.Identity(0, 2, 0.0).slogdet(), np.linalg.slogdet(np.zeros((2, 0, 0))))


# --------------------------------------------------------------------------------------
# Inputs: layouts, read-only data, dtypes
# --------------------------------------------------------------------------------------


def every_method(J):
    """Call every method of ``J`` (their results are checked by the tests above)."""
    B, m, n = J.shape
    calls = [J.to_dense, J.T.to_dense, J.diagonal, J.__neg__, lambda: 2.0 * J,
             lambda: J.jvp(np.ones((B, n), dtype=J.dtype)),
             lambda: J.vjp(np.ones((B, m), dtype=J.dtype))]  # fmt: skip
    if m == n:
        calls.append(J.slogdet)
    for call in calls:
        call()


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("left,right", PAIRS)
def test_strided_read_only_inputs_give_correct_results_and_stay_unchanged(left, right, op, rng, backend):
    if backend != "numpy":
        pytest.skip("the strided views are NumPy's; a GPU copy is contiguous")
    J, K = make_pair(left, right, op, 5, np.float64, rng, lambda a: a, strided=True)
    copies = [x.copy() for x in J.inputs + K.inputs]
    assert_matches(
        OPS[op](J.J, K.J), REFERENCE_OPS[op](J.dense, K.dense), np.float64, RESULT_TYPE[left, right]
    )
    every_method(J.J)
    every_method(K.J)
    for original, copy in zip(J.inputs + K.inputs, copies):
        np.testing.assert_array_equal(original, copy)


INT_CONSTRUCTORS = {
    "Dense": (lambda x: bj.Dense(x), (2, 3, 4), lambda x: x),
    "Diagonal": (lambda x: bj.Diagonal(x), (2, 3), lambda x: x[:, :, None] * np.eye(3)),
    "Shared": (lambda x: bj.Shared(x, 2), (3, 4), lambda x: np.broadcast_to(x, (2, 3, 4))),
    "Identity": (lambda x: bj.Identity(3, 2, x), (2,), lambda x: x[:, None, None] * np.eye(3)),
}


@pytest.mark.parametrize("name", list(INT_CONSTRUCTORS))
def test_integer_input_is_promoted_to_float64(name, rng, put):
    build, shape, dense = INT_CONSTRUCTORS[name]
    x = rng.integers(-5, 5, shape)
    assert_matches(build(put(x)), dense(x.astype(np.float64)), np.float64, name)


def _jacobian_5():
    return bj.Dense(np.ones((2, 3, 5)))


# argument name -> (call taking the bad array, the array's valid shape)
ARGUMENTS = {
    "a": (lambda x: bj.Dense(x), (2, 3, 3)),
    "d": (lambda x: bj.Diagonal(x), (2, 3)),
    "A": (lambda x: bj.Shared(x, 2), (3, 3)),
    "scale": (lambda x: bj.Identity(3, 2, x), (2,)),
    "v": (lambda x: _jacobian_5().jvp(x), (2, 5)),
    "u": (lambda x: _jacobian_5().vjp(x), (2, 3)),
    "c": (lambda x: _jacobian_5().scaled(x), (2,)),
}
BAD_DTYPES = {"bool": np.bool_, "complex": np.complex128, "str": np.str_}


@pytest.mark.parametrize("bad", list(BAD_DTYPES))
@pytest.mark.parametrize("argument", list(ARGUMENTS))
def test_non_float_input_is_type_error_naming_the_argument(argument, bad):
    call, shape = ARGUMENTS[argument]
    x = np.zeros(shape).astype(BAD_DTYPES[bad])
    with pytest.raises(TypeError, match=rf"^{argument}: expected real floating-point .*got dtype {x.dtype}"):
        call(x)


WRONG_SHAPES = [
    (
        lambda: bj.Dense(np.ones((2, 3))),
        r"Dense: a: expected an array of shape \(B, m, n\), got shape \(2, 3\)",
    ),
    (lambda: bj.Dense(np.ones((1, 2, 3, 4))), r"Dense: a: .*got shape \(1, 2, 3, 4\)"),
    (
        lambda: bj.Diagonal(np.ones((2, 3, 3))),
        r"Diagonal: d: expected .* shape \(B, n\), got shape \(2, 3, 3\)",
    ),
    (lambda: bj.Diagonal(np.ones(3)), r"Diagonal: d: .*got shape \(3,\)"),
    (
        lambda: bj.Shared(np.ones((2, 3, 3)), 2),
        r"Shared: A: expected .* shape \(m, n\), got shape \(2, 3, 3\)",
    ),
    (lambda: bj.Shared(np.ones(3), 2), r"Shared: A: .*got shape \(3,\)"),
]


@pytest.mark.parametrize("call,message", WRONG_SHAPES)
def test_wrong_ndim_is_value_error_naming_argument_and_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("bad", [-1, 2.5, 2.0, "2", True, None])
@pytest.mark.parametrize("call,name", [
    pytest.param(lambda b: bj.Shared(np.ones((2, 2)), b), "batch", id="Shared-batch"),
    pytest.param(lambda b: bj.Identity(3, b), "batch", id="Identity-batch"),
    pytest.param(lambda b: bj.Identity(b, 3), "n", id="Identity-n"),
])  # fmt: skip
def test_negative_or_non_integer_size_is_value_error(call, name, bad):
    with pytest.raises(ValueError, match=rf"^{name}: expected a non-negative integer, got {bad!r}"):
        call(bad)


def test_numpy_integer_batch_is_accepted():
    assert bj.Shared(np.ones((2, 3)), np.int64(4)).shape == (4, 2, 3)


@pytest.mark.parametrize("call", [
    pytest.param(lambda s: bj.Identity(3, 2, s), id="Identity(scale)"),
    pytest.param(lambda s: bj.Dense(np.ones((2, 3, 3))).scaled(s), id="Dense.scaled"),
    pytest.param(lambda s: bj.Diagonal(np.ones((2, 3))) * s, id="Diagonal*s"),
    pytest.param(lambda s: bj.Shared(np.ones((3, 3)), 2).scaled(s), id="Shared.scaled"),
    pytest.param(lambda s: bj.Identity(3, 2).scaled(s), id="Identity.scaled"),
])  # fmt: skip
@pytest.mark.parametrize("shape", [(3,), (2, 1), (1,)])
def test_per_sample_scale_of_wrong_shape_is_value_error(call, shape):
    with pytest.raises(ValueError, match=rf"\(2,\), got shape {re.escape(str(shape))}"):
        call(np.ones(shape))


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("left,right", PAIRS)
def test_batch_mismatch_is_value_error_naming_both_batches(left, right, op, rng):
    J = operand_of(left, 2, np.float64, rng, lambda a: a).J
    K = operand_of(right, 3, np.float64, rng, lambda a: a).J
    if op == "@" and J.in_size != K.out_size:
        K = make_operand(right, 3, J.in_size, J.in_size, np.float64, rng, lambda a: a).J
    with pytest.raises(ValueError, match=r"left operand has batch 2 but the right operand has batch 3"):
        OPS[op](J, K)


@pytest.mark.parametrize("left,right", PAIRS)
def test_inner_size_mismatch_in_product_is_value_error_naming_both_sizes(left, right, rng):
    J = make_operand(left, 2, 4 if left in SQUARE_ONLY else 3, 4, np.float64, rng, lambda a: a).J
    K = make_operand(right, 2, 5, 5 if right in SQUARE_ONLY else 6, np.float64, rng, lambda a: a).J
    with pytest.raises(ValueError, match=r"input size 4 but the right operand .* has output size 5"):
        J @ K


@pytest.mark.parametrize("op", ["+", "-"])
@pytest.mark.parametrize("left,right", PAIRS)
def test_shape_mismatch_in_sum_is_value_error_naming_both_shapes(left, right, op, rng):
    J = make_operand(left, 2, 4, 4, np.float64, rng, lambda a: a).J
    K = make_operand(right, 2, 5, 5, np.float64, rng, lambda a: a).J
    with pytest.raises(ValueError, match=r"left \(2, 4, 4\), right \(2, 5, 5\)"):
        OPS[op](J, K)


@pytest.mark.parametrize(
    "J", [bj.Dense(np.ones((2, 3, 4))), bj.Shared(np.ones((3, 4)), 2)], ids=["Dense", "Shared"]
)
def test_slogdet_of_non_square_is_value_error(J):
    with pytest.raises(ValueError, match=r"slogdet: the Jacobian must be square, got shape \(2, 3, 4\)"):
        J.slogdet()


@pytest.mark.parametrize("method,name,good", [("jvp", "v", (2, 5)), ("vjp", "u", (2, 3))])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", ["one_more_column", "one_more_sample", "flat"])
def test_jvp_vjp_with_wrong_vector_shape_is_value_error_naming_it(kind, method, name, good, bad, rng):
    m, n = (5, 5) if kind in SQUARE_ONLY else (3, 5)
    J = make_operand(kind, 2, m, n, np.float64, rng, lambda a: a).J
    size = {"v": n, "u": m}[name]
    shape = {"one_more_column": (2, size + 1), "one_more_sample": (3, size), "flat": (2 * size,)}[bad]
    with pytest.raises(
        ValueError, match=rf"^{name}: expected shape \(2, {size}\), got {re.escape(str(shape))}"
    ):
        getattr(J, method)(np.ones(shape))
