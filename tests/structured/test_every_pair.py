"""``J @ K`` and ``J + K`` for every ordered pair of structured types against dense NumPy.

Every kind of :mod:`structured_cases` (the four original types, ``Gather``, ``Sparse``,
``Kronecker`` and ``BlockDiagonal`` in their variants) meets every other, in float32 and
float64, at batch 0, 1 and 5. The result must equal ``numpy.matmul`` / ``+`` of the float64
references, have NumPy's promoted dtype, and have the structure of the tables below (the
specification, written out here: rows left operand, columns right operand, in the order of
``KINDS``); it varies along the batch exactly when an operand does.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
from helpers import assert_close
from structured_cases import KINDS, make

import batchjac as bj
from batchjac.structured.algebra import product_structure, sum_structure

DTYPES = (np.float32, np.float64)
BATCHES = (0, 1, 5)

PRODUCT_TYPES = {
    "dense": "Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense",
    "diagonal": "Dense Diagonal Dense Diagonal Diagonal Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Blocks",
    "shared": "Dense Dense Shared Shared Dense Shared Shared Dense Shared Shared Dense Dense Dense Shared",
    "identity": "Dense Diagonal Shared Identity Identity Gather Gather Sparse Sparse Kronecker Kronecker Kronecker Blocks Blocks",
    "identity_per_sample": "Dense Diagonal Dense Identity Identity Sparse Sparse Sparse Sparse Kronecker Kronecker Kronecker Blocks Blocks",
    "gather": "Dense Sparse Shared Gather Sparse Gather Gather Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "gather_injective": "Dense Sparse Shared Gather Sparse Gather Gather Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "sparse": "Dense Sparse Dense Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "sparse_shared": "Dense Sparse Shared Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "kronecker_identity_left": "Dense Blocks Shared Kronecker Kronecker Sparse Sparse Sparse Sparse Kronecker Kronecker Kronecker Blocks Sparse",
    "kronecker_identity_right": "Dense Sparse Dense Kronecker Kronecker Sparse Sparse Sparse Sparse Kronecker Kronecker Kronecker Sparse Sparse",
    "kronecker_matrices": "Dense Dense Dense Kronecker Kronecker Dense Dense Dense Dense Kronecker Kronecker Kronecker Dense Dense",
    "blocks": "Dense Blocks Dense Blocks Blocks Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Sparse",
    "blocks_shared": "Dense Blocks Shared Blocks Blocks Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Blocks",
}  # fmt: skip

SUM_TYPES = {
    "dense": "Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense",
    "diagonal": "Dense Diagonal Dense Diagonal Diagonal Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Blocks",
    "shared": "Dense Dense Shared Shared Dense Shared Shared Dense Shared Shared Dense Dense Dense Shared",
    "identity": "Dense Diagonal Shared Identity Identity Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Blocks",
    "identity_per_sample": "Dense Diagonal Dense Identity Identity Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Blocks",
    "gather": "Dense Sparse Shared Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "gather_injective": "Dense Sparse Shared Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "sparse": "Dense Sparse Dense Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "sparse_shared": "Dense Sparse Shared Sparse Sparse Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Sparse",
    "kronecker_identity_left": "Dense Blocks Shared Blocks Blocks Sparse Sparse Sparse Sparse Kronecker Sparse Dense Blocks Sparse",
    "kronecker_identity_right": "Dense Sparse Dense Sparse Sparse Sparse Sparse Sparse Sparse Sparse Kronecker Dense Sparse Sparse",
    "kronecker_matrices": "Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense Dense",
    "blocks": "Dense Blocks Dense Blocks Blocks Sparse Sparse Sparse Sparse Blocks Sparse Dense Blocks Sparse",
    "blocks_shared": "Dense Blocks Shared Blocks Blocks Sparse Sparse Sparse Sparse Sparse Sparse Dense Sparse Blocks",
}  # fmt: skip

TABLES = {"@": PRODUCT_TYPES, "+": SUM_TYPES}
OPS = {"@": operator.matmul, "+": operator.add}
REFERENCE = {"@": np.matmul, "+": np.add}
PAIRS = [(a, b) for a in KINDS for b in KINDS]
NAMES = {"Blocks": "BlockDiagonal"}


def expected_type(op, left, right):
    name = TABLES[op][left].split()[KINDS.index(right)]
    return NAMES.get(name, name)


def promoted(J, K):
    """NumPy's promotion, an identity without a dtype of its own taking its partner's."""
    dtypes = [X.dtype for X in (J, K) if not getattr(X, "is_weak", False)]
    return np.result_type(*dtypes)


@pytest.fixture
def put(backend, on_device):
    with bj.use_backend(backend):
        yield on_device


def test_the_tables_cover_every_pair():
    for table in TABLES.values():
        assert list(table) == list(KINDS)
        assert all(len(row.split()) == len(KINDS) for row in table.values())


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("left,right", PAIRS)
def test_pair_equals_dense_and_has_its_structure(left, right, op, dtype, batch, rng, put):
    J, K = make(left, batch, rng, dtype, put), make(right, batch, rng, dtype, put)
    R = OPS[op](J.J, K.J)
    assert type(R).__name__ == expected_type(op, left, right)
    assert R.shape == (batch, 6, 6)
    assert R.dtype == promoted(J.J, K.J)
    assert R.batched == (J.J.batched or K.J.batched)
    dense = R.to_dense()
    assert dense.dtype == R.dtype
    assert_close(dense, REFERENCE[op](J.dense, K.dense))


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("left,right", PAIRS)
def test_declared_structure_is_the_structure_computed(left, right, op, rng):
    """The planner reads the rules' declarations; they must describe what the rules return."""
    J, K = make(left, 3, rng).J, make(right, 3, rng).J
    declared = (product_structure if op == "@" else sum_structure)(J.structure(), K.structure())
    R = OPS[op](J, K)
    assert declared.key == R.structure().key
    assert declared.shape == R.shape


@pytest.mark.parametrize("left,right", PAIRS)
def test_pairs_leave_their_inputs_unchanged(left, right, rng):
    J, K = make(left, 4, rng), make(right, 4, rng)
    copies = [x.copy() for x in J.inputs + K.inputs]
    for x in J.inputs + K.inputs:
        x.flags.writeable = False  # an in-place update of an input would raise
    for op in OPS.values():
        op(J.J, K.J).to_dense()
    for x, copy in zip(J.inputs + K.inputs, copies):
        np.testing.assert_array_equal(x, copy)
