"""Issue 13 in the structured floor: no silent wrong answer, a clear error for every misuse.

- item 10: ``Gather(injective=True)`` with a repeated index is refused (it gave a wrong VJP);
  mixed dtypes in products and sums follow NumPy's promotion (``Dense(float32) +
  Identity(float64)`` dropped to float32), a "weak" identity takes its partner's dtype;
- item 16: ``Gather`` with out-of-range indices or a non-scalar ``scale`` is a ValueError;
  ``J + ndarray`` is a TypeError that says to wrap the array, not NumPy's message;
- the same classes of error for the new ``Sparse`` constructor.
"""

from __future__ import annotations

import operator
import re

import numpy as np
import pytest
from helpers import assert_close
from structured_cases import KINDS, make

import batchjac as bj

# --------------------------------------------------------------------------------------
# Gather: the injective flag, the range of the index, the scale
# --------------------------------------------------------------------------------------


def test_injective_gather_with_a_repeated_index_is_refused():
    with pytest.raises(
        ValueError,
        match=r"Gather: injective=True but input 2 is picked more than once \(at positions 0 and 3\); pass injective=False",
    ):
        bj.Gather(np.array([2, 0, 1, 2]), 3, batch=1, injective=True)


def test_gather_with_a_repeated_index_gives_the_summed_vjp(rng):
    index = np.array([2, 0, 1, 2])
    G = bj.Gather(index, 3, batch=2, scale=-1.5)
    u = rng.standard_normal((2, 4))
    expected = np.zeros((2, 3))
    for r, i in enumerate(index):
        expected[:, i] += -1.5 * u[:, r]  # both rows that pick input 2 contribute
    assert_close(G.vjp(u), expected)
    M = rng.standard_normal((2, 5, 4))
    expected_product = np.einsum("bkr,ri->bki", M, np.eye(3)[index] * -1.5)
    assert_close((bj.Dense(M) @ G).to_dense(), expected_product)


@pytest.mark.parametrize("index,bad,position", [([0, 3, 1], 3, 1), ([-1, 0], -1, 0), ([0, 1, 7], 7, 2)])
def test_gather_index_out_of_range_is_refused(index, bad, position):
    message = rf"Gather: index must lie in \[0, 3\) \(in_size, the number of inputs\), got {bad} at position {position}"
    with pytest.raises(ValueError, match=message):
        bj.Gather(np.array(index), 3, batch=2)


@pytest.mark.parametrize("scale,shown", [(np.array([1.0, 2.0]), r"an array of shape \(2,\)"),
                                         (np.ones((1, 1)), r"an array of shape \(1, 1\)"),
                                         ("2", "str"), (None, "NoneType"), (True, "bool")])  # fmt: skip
def test_gather_scale_must_be_one_number(scale, shown):
    with pytest.raises(
        ValueError, match=rf"Gather: scale must be one number .*got {shown}; scale per sample with G.scaled"
    ):
        bj.Gather(np.array([0, 1]), 2, batch=2, scale=scale)


def test_gather_takes_a_zero_dimensional_array_or_numpy_number_as_scale():
    for scale in (np.array(2.0), np.float32(2.0), np.int64(2)):
        assert bj.Gather(np.array([1, 0]), 2, batch=1, scale=scale).to_dense().tolist() == [
            [[0.0, 2.0], [2.0, 0.0]]
        ]


# --------------------------------------------------------------------------------------
# dtypes: NumPy's promotion everywhere, a weak identity takes its partner's dtype
# --------------------------------------------------------------------------------------


def test_dense_float32_plus_identity_float64_is_float64(rng):
    a = rng.standard_normal((2, 3, 3)).astype(np.float32)
    for R in (
        bj.Dense(a) + bj.Identity(3, 2, dtype=np.float64),
        bj.Identity(3, 2, dtype=np.float64) + bj.Dense(a),
    ):
        assert R.dtype == np.float64
        assert_close(R.to_dense(), a.astype(np.float64) + np.eye(3))


@pytest.mark.parametrize("op", ["@", "+"])
def test_a_weak_identity_takes_its_partners_dtype(op, rng):
    for kind in KINDS:
        if kind.startswith("identity"):
            continue
        X = make(kind, 2, rng, np.float32).J
        for R in (
            (bj.Identity(6, 2, 2.0) @ X, X @ bj.Identity(6, 2))
            if op == "@"
            else (X + bj.Identity(6, 2, 2.0),)
        ):
            assert R.dtype == np.float32, kind


@pytest.mark.parametrize("op", ["@", "+"])
@pytest.mark.parametrize("left", KINDS)
def test_mixed_dtypes_follow_numpy_promotion(left, op, rng):
    """float32 with float64, both ways, for every pair: the result is float64 and exact to
    float32's precision (the float32 operand's values)."""
    ops = {"@": operator.matmul, "+": operator.add}
    reference = {"@": np.matmul, "+": np.add}
    for right in KINDS:
        for first, second in ((np.float32, np.float64), (np.float64, np.float32)):
            J, K = make(left, 3, rng, first), make(right, 3, rng, second)
            R = ops[op](J.J, K.J)
            weak = [X for X in (J.J, K.J) if getattr(X, "is_weak", False)]
            assert R.dtype == (np.float64 if not weak else np.result_type(first, second)), (left, right)
            assert_close(R.to_dense(), reference[op](J.dense, K.dense), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Arrays where a Jacobian is expected
# --------------------------------------------------------------------------------------

WRAP = r"wrap an array in bj.Dense\(a\) \(a: \(B, m, n\)\) or bj.Diagonal\(d\) \(d: \(B, n\)\) first"


@pytest.mark.parametrize("op,side,call", [
    ("+", "right", lambda J, a: J + a), ("+", "left", lambda J, a: a + J),
    ("-", "right", lambda J, a: J - a), ("-", "left", lambda J, a: a - J),
    ("@", "right", lambda J, a: J @ a), ("@", "left", lambda J, a: a @ J),
])  # fmt: skip
def test_an_array_operand_is_a_type_error_saying_to_wrap_it(op, side, call):
    J = bj.Dense(np.ones((2, 3, 3)))
    message = rf"J {re.escape(op)} K takes two bj.Jacobian objects, got ndarray on the {side}; {WRAP}"
    with pytest.raises(TypeError, match=message):
        call(J, np.ones((2, 3, 3)))


def test_product_of_two_jacobians_with_star_is_a_type_error():
    J = bj.Diagonal(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"J \* K of two Jacobians is not defined: use J @ K"):
        J * J


def test_numpy_ufuncs_on_a_jacobian_are_refused():
    with pytest.raises(TypeError):
        np.sin(bj.Dense(np.ones((1, 2, 2))))


# --------------------------------------------------------------------------------------
# Sparse: bad patterns and values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,kwargs,message", [
    (([0, 1], [0], [[1.0]]), {}, None),
    (([1, 1], [0], [[1.0]]), {}, r"Sparse: indptr must start at 0 and end at len\(indices\) = 1, got 1 \.\.\. 1"),
    (([0, 2, 1], [0], [[1.0]]), {}, r"indptr must be non-decreasing"),
    (([0, 2, 1, 3], [0, 1, 2], [[1.0, 1.0, 1.0]]), {}, r"indptr must be non-decreasing"),
    (([0, 1], [3], [[1.0]]), {"in_size": 2}, r"indices must lie in \[0, in_size = 2\), got 3"),
    (([0, 1], [-1], [[1.0]]), {"in_size": 2}, r"indices must lie in \[0, in_size = 2\), got -1"),
    (([0, 1], [0.0], [[1.0]]), {}, r"Sparse: indices must be a 1-D integer array, got shape \(1,\) of float64"),
    (([[0, 1]], [0], [[1.0]]), {}, r"Sparse: indptr must be a 1-D integer array, got shape \(1, 2\)"),
    (([0, 1], [0], [1.0]), {}, r"values of shape \(nnz,\) are shared by the batch, so batch is required"),
    (([0, 1], [0], [[1.0, 2.0]]), {}, r"values must have nnz = 1 entries last, got shape \(1, 2\)"),
    (([0, 1], [0], [[[1.0]]]), {}, r"values must be \(B, nnz\) or \(nnz,\), got shape \(1, 1, 1\)"),
    (([0, 1], [0], [[1.0]]), {"batch": 2}, r"Sparse: batch 2 differs from values' batch 1"),
])  # fmt: skip
def test_sparse_constructor_checks_its_pattern_and_values(args, kwargs, message):
    if message is None:
        assert bj.Sparse(*args, **kwargs).shape == (1, 1, 1)
        return
    with pytest.raises(ValueError, match=message):
        bj.Sparse(*args, **kwargs)


def test_sparse_values_of_the_wrong_dtype_are_a_type_error():
    with pytest.raises(TypeError, match=r"values: expected real floating-point .*got dtype complex128"):
        bj.Sparse([0, 1], [0], np.ones((1, 1), dtype=complex))


def test_sparse_sums_repeated_positions_and_takes_in_size_from_the_indices():
    S = bj.Sparse([0, 3], [2, 0, 2], [1.0, 10.0, 100.0], batch=1)
    assert S.shape == (1, 1, 3)
    assert S.to_dense().tolist() == [[[10.0, 0.0, 101.0]]]
