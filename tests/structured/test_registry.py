"""The registry of :mod:`batchjac.structured.algebra`: a new type works without editing the
others, a rule it registers is used by ``@`` and by the planner, and resolution is explicit.

The new type here is ``Ones``, ``c 1 1^T`` per sample (shared), written as a user would:
the methods of :class:`batchjac.structured.base.Jacobian` and a profile. The registries are
copied for each test, so the library's own tables stay as they are.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj
from batchjac.structured import algebra, chain
from batchjac.structured.algebra import CONTRACTION, Cost, Kind, Poly, Profile, Structure
from batchjac.structured.base import Jacobian


class Ones(Jacobian):
    """``c`` times the all-ones ``(m, n)`` matrix, for every sample."""

    table_order = 50
    batched_kinds = "never"

    def __init__(self, m, n, batch, c=1.0):
        self.out_size, self.in_size, self.batch, self.c = m, n, batch, float(c)

    @classmethod
    def profile(cls, kind):
        return Profile(batched=False, stored=Poly(const=1), apply=Poly(m=1, n=1), entries=Poly(mn=1))

    def _arrays(self):
        return ()

    @property
    def dtype(self):
        return np.dtype(np.float64)

    def _matrix(self):
        return np.full((self.out_size, self.in_size), self.c)

    def to_dense(self):
        return np.broadcast_to(self._matrix(), self.shape).copy()

    def _apply_left(self, M, ops):  # c 1 (1^T M): a column sum, broadcast
        return np.broadcast_to(
            self.c * M.sum(axis=-2, keepdims=True), (*M.shape[:-2], self.out_size, M.shape[-1])
        )

    def _apply_right(self, M, ops):
        return np.broadcast_to(self.c * M.sum(axis=-1, keepdims=True), (*M.shape[:-1], self.in_size))

    def _add_into(self, out):
        out += self.c

    def _scaled(self, number, per_sample):
        return Ones(self.out_size, self.in_size, self.batch, self.c * number)

    @classmethod
    def scaled_kind(cls, kind, per_sample):
        return Kind(bj.Dense) if per_sample else kind


@pytest.fixture
def registries(monkeypatch):
    """The library's registries, copied: registrations in a test vanish after it."""
    for registry in (algebra.PRODUCTS, algebra.SUMS):
        monkeypatch.setattr(registry, "rules", dict(registry.rules))
        monkeypatch.setattr(registry, "_resolved", {})
    chain._plan.cache_clear()
    chain._plan_core.cache_clear()
    yield
    chain._plan.cache_clear()
    chain._plan_core.cache_clear()


def test_a_new_type_works_through_the_generic_rules(registries, rng):
    O = Ones(3, 4, batch=2, c=0.5)
    a = rng.standard_normal((2, 4, 5))
    d = rng.standard_normal((2, 3))
    ones = 0.5 * np.ones((2, 3, 4))
    assert_close((O @ bj.Dense(a)).to_dense(), ones @ a)
    assert_close((bj.Diagonal(d) @ O).to_dense(), d[:, :, None] * ones)
    assert_close((O + bj.Shared(np.eye(3, 4), 2)).to_dense(), ones + np.eye(3, 4))
    assert type(O @ bj.Shared(np.ones((4, 2)), 2)) is bj.Shared  # neither varies along the batch
    plan = bj.chain_plan(bj.Diagonal(d), O, bj.Dense(a))
    assert plan.result.kind is bj.Dense


def test_a_registered_rule_is_used_and_planned_by_its_declaration(registries):
    calls = []

    @algebra.register_product(Ones, Ones, result=Ones, cost=Cost(constant=1))
    def ones_times_ones(ops, J, K):  # (c 1 1^T)(d 1 1^T) = c d k 1 1^T
        calls.append(1)
        return Ones(J.out_size, K.in_size, J.batch, J.c * K.c * J.in_size)

    J, K = Ones(2, 3, batch=4, c=2.0), Ones(3, 5, batch=4, c=-1.0)
    R = J @ K
    assert calls == [1] and type(R) is Ones
    assert_close(R.to_dense(), J.to_dense() @ K.to_dense())
    plan = chain.plan_chain_descriptors([Structure(Ones, 4, 2, 3), Structure(Ones, 4, 3, 5)])
    assert plan.flops == 1  # the declared constant, done once (the result does not vary)
    assert plan.result.kind is Ones
    assert "Ones" in algebra.product_table().splitlines()[0]


def test_rules_of_equal_specificity_are_an_error_unless_a_priority_decides(registries):
    class A(Ones):
        pass

    algebra.register_product(A, Jacobian, result=bj.Dense, cost=CONTRACTION)(lambda ops, J, K: None)
    algebra.register_product(Jacobian, A, result=bj.Dense, cost=CONTRACTION)(lambda ops, J, K: None)
    with pytest.raises(
        TypeError, match=r"matmul: ambiguous rules for A and A: \(A, Jacobian\), \(Jacobian, A\)"
    ):
        algebra.PRODUCTS.resolve(A, A)


def test_a_pair_has_one_rule(registries):
    with pytest.raises(ValueError, match=r"matmul: a rule for \(Diagonal, Diagonal\) exists"):
        algebra.register_product(bj.Diagonal, bj.Diagonal, result=bj.Dense, cost=CONTRACTION)(
            lambda ops, J, K: None
        )


def test_an_identity_factor_wins_over_the_rules_of_its_base_class():
    """``Identity`` is a ``Diagonal``; its rules (priority 1) scale, returning the operand itself
    for a plain identity, where the ``Diagonal`` rules would multiply by ones."""
    D = bj.Diagonal(np.ones((2, 3)))
    G = bj.Gather(np.array([0, 0, 1]), 3, 2)
    for X in (D, G):
        assert bj.Identity(3, 2) @ X is X and X @ bj.Identity(3, 2) is X


def test_structures_are_validated():
    with pytest.raises(ValueError, match=r"Structure: expected kind a bj.Jacobian type .*got 'int'"):
        Structure(int, 1, 2, 2)
    with pytest.raises(
        ValueError, match=r"Structure: a Sparse structure's detail is \(values_vary_per_sample,\)"
    ):
        Structure(bj.Sparse, 1, 2, 2)
    with pytest.raises(ValueError, match=r"Structure: a Sparse structure needs nnz"):
        Structure(bj.Sparse, 1, 2, 2, detail=(True,))
    with pytest.raises(ValueError, match=r"Structure: a Kronecker structure of factors .* is 6x6"):
        Structure(bj.Kronecker, 1, 6, 5, detail=((2, 2, "identity"), (3, 3, "shared")))
    with pytest.raises(ValueError, match=r"Structure: a BlockDiagonal structure of 2 blocks \(3, 3\) is 6x6"):
        Structure(bj.BlockDiagonal, 1, 6, 4, detail=(2, 3, 3, True))
    assert Structure(bj.Sparse, 1, 2, 2, detail=(False,), nnz=3).stored == 3
