"""The chain planner: optimal against brute force for chains of every type, one plan for
every batch size, and repeated sub-chains solved once.

The oracle below enumerates every bracketing and costs it by the model the docstrings of
:mod:`batchjac.structured.algebra` (:class:`Cost`) and :mod:`batchjac.structured.chain` state,
written out here from the rules' declarations (``product_structure``, ``product_cost_terms``)
and the structures' profiles: a sub-chain's product has the structure of the left-to-right
fold of its factors; costs are ``(flops per sample, flops once, numbers moved per sample,
numbers moved once)``, compared in that order.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from structured_cases import KINDS, make

import batchjac as bj
from batchjac.structured import bracketing, chain
from batchjac.structured.algebra import Structure, product_cost_terms, product_structure


def bracketings(lo, hi):
    if lo == hi:
        yield lo
        return
    for split in range(lo, hi):
        for left in bracketings(lo, split):
            for right in bracketings(split + 1, hi):
                yield (left, right)


def fold(structures):
    """``S[i, j]``: the structure of the product of factors ``i..j``, folded left to right."""
    S = {}
    for i, s in enumerate(structures):
        S[i, i] = s
        for j in range(i + 1, len(structures)):
            S[i, j] = product_structure(S[i, j - 1], structures[j])
    return S


def split_cost(S, i, k, j):
    """The cost of multiplying ``(i..k) @ (k+1..j)``, by the documented model."""
    L, R, P = S[i, k], S[k + 1, j], S[i, j]
    c = product_cost_terms(L, R)
    m, inner, n = L.out_size, L.in_size, R.in_size
    left, right = L.count("apply") * n, m * R.count("apply")
    if R.profile.dense or (not L.profile.dense and n <= m):
        fallback, extra, extra_batched = left, (0 if R.profile.dense else inner * n), R.batched
    else:
        fallback, extra, extra_batched = right, (0 if L.profile.dense else m * inner), L.batched
    pairs = L.count("entries") * R.count("entries") / inner if inner else 0.0
    flops = (
        c.result * P.count("stored") + c.contraction * m * inner * n + c.left * left + c.right * right
        + c.pairs * pairs + c.fallback * fallback + c.constant
    )  # fmt: skip
    cost = [flops if P.batched else 0.0, 0.0 if P.batched else flops, 0.0, 0.0]
    if c.moves:
        for X in (L, R, P):
            cost[2 if X.batched else 3] += X.count("stored")
        if c.fallback:
            cost[2 if extra_batched else 3] += extra
    return tuple(cost)


def tree_cost(tree, S):
    """``(cost, (i, j))`` of a bracketing over the factors ``i..j``."""
    if isinstance(tree, int):
        return (0.0, 0.0, 0.0, 0.0), (tree, tree)
    (cl, (i, k)), (cr, (_, j)) = (tree_cost(t, S) for t in tree)
    own = split_cost(S, i, k, j)
    return tuple(a + b + c for a, b, c in zip(cl, cr, own)), (i, j)


def close(a, b):
    return all(np.isclose(x, y, rtol=1e-12, atol=1e-9) for x, y in zip(a, b))


def random_factors(rng, length, batch=3, dtype=np.float64):
    """A chain of random kinds (every type), rectangular at the ends sometimes."""
    factors = [make(str(rng.choice(KINDS)), batch, rng, dtype).J for _ in range(length)]
    if rng.random() < 0.5:
        factors[0] = bj.Dense(rng.standard_normal((batch, 3, 6)).astype(dtype))
    if rng.random() < 0.5:
        factors[-1] = bj.Shared(rng.standard_normal((6, 4)).astype(dtype), batch)
    return factors


@pytest.mark.parametrize("seed", range(40))
def test_plan_is_the_brute_force_optimum_for_chains_of_every_type(seed):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 9))
    Js = random_factors(rng, length)
    structures = [J.structure() for J in Js]
    S = fold(structures)
    costs = {tree: tree_cost(tree, S)[0] for tree in bracketings(0, length - 1)}
    plan = bj.chain_plan(*Js)
    best = min(costs.values())  # tuples compare lexicographically
    assert close(costs[plan.tree], best), (plan.order, costs[plan.tree], best)
    for tree, (flops, nbytes) in [
        (plan.tree, (plan.flops, plan.bytes)),
        (chain.forward_bracketing(length), (plan.forward_flops, plan.forward_bytes)),
        (chain.reverse_bracketing(length), (plan.reverse_flops, plan.reverse_bytes)),
    ]:
        a, c, moved_a, moved_c = costs[tree]
        assert flops == round(a * 3 + c)
        assert nbytes == round(moved_a * 3 + moved_c) * 8
    assert plan.result.key == S[0, length - 1].key


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_programme_plans_like_the_python_one(seed, monkeypatch):
    rng = np.random.default_rng(100 + seed)
    Js = random_factors(rng, 8)
    python = chain.plan_chain_descriptors([J.structure() for J in Js])
    chain._plan.cache_clear()
    chain._plan_core.cache_clear()
    monkeypatch.setattr(bracketing, "COMPILE_FROM", 0)
    compiled = chain.plan_chain_descriptors([J.structure() for J in Js])
    assert compiled == python


@pytest.mark.parametrize("seed", range(8))
def test_the_chain_has_the_structure_the_plan_declares(seed):
    rng = np.random.default_rng(200 + seed)
    Js = random_factors(rng, int(rng.integers(2, 7)))
    plan = bj.chain_plan(*Js)
    reference = Js[0].to_dense()
    for J in Js[1:]:
        reference = reference @ J.to_dense()
    for order in ("optimal", "forward", "reverse"):
        R = bj.chain(*Js, order=order)
        assert R.structure().key == plan.result.key
        np.testing.assert_allclose(R.to_dense(), reference, rtol=1e-10, atol=1e-10)


def mlp_chain(depth, batch, width=256, dtype=np.float32):
    """Structures of the input Jacobian of an MLP: Shared weights between Diagonal factors."""
    factors = [Structure(bj.Shared, batch, 10, width)]
    for _ in range(depth):
        factors += [Structure(bj.Diagonal, batch, width, width), Structure(bj.Shared, batch, width, width)]
    factors[-1] = Structure(bj.Shared, batch, width, 784)
    return factors


def test_one_plan_serves_every_batch_size():
    chain._plan_core.cache_clear()
    small = chain.plan_chain_descriptors(mlp_chain(20, batch=32), itemsize=4)
    large = chain.plan_chain_descriptors(mlp_chain(20, batch=1000), itemsize=4)
    assert chain._plan_core.cache_info().misses == 1  # the programme ran once
    assert small.tree == large.tree
    for p, batch in ((small, 32), (large, 1000)):
        assert p.result.batch == batch
        assert all(s.batch == batch for s in p.factors)
    # every product of this chain is done per sample: its flops scale with the batch; the
    # bytes are linear in it (the Shared weights are read once)
    assert large.flops * 32 == small.flops * 1000
    one, two = (chain.plan_chain_descriptors(mlp_chain(20, batch=b), itemsize=4) for b in (1, 2))
    for name in ("bytes", "forward_bytes", "reverse_bytes"):
        per_sample = getattr(two, name) - getattr(one, name)
        assert getattr(large, name) == getattr(one, name) + 999 * per_sample
        assert getattr(small, name) == getattr(one, name) + 31 * per_sample


def test_flops_done_once_are_reported_once_per_chain():
    """``Shared @ Shared`` is done once for the batch: its flops do not grow with B."""
    chain_of = lambda batch: [Structure(bj.Shared, batch, 8, 16), Structure(bj.Shared, batch, 16, 4)]  # noqa: E731
    assert (
        chain.plan_chain_descriptors(chain_of(2)).flops
        == chain.plan_chain_descriptors(chain_of(50)).flops
        == 8 * 16 * 4
    )


def textbook_matrix_chain(dims):
    """The classic dynamic programme for dense matrices: minimal ``sum m k n``."""
    n = len(dims) - 1

    @functools.cache
    def best(i, j):
        if i == j:
            return 0
        return min(best(i, k) + best(k + 1, j) + dims[i] * dims[k + 1] * dims[j + 1] for k in range(i, j))

    return best(0, n - 1)


@pytest.mark.parametrize("period", [1, 2, 3, 5])
def test_repeated_sub_chains_are_solved_once_and_correctly(period, monkeypatch):
    """A chain repeating a period of dense factors of random sizes has few distinct sub-chains;
    its optimum must still be the textbook programme's (compiled programme, 61 factors)."""
    rng = np.random.default_rng(period)
    sizes = [int(s) for s in rng.integers(2, 30, period)]
    dims = [7] + [sizes[i % period] for i in range(60)] + [5]
    factors = [Structure(bj.Dense, 1, dims[i], dims[i + 1]) for i in range(len(dims) - 1)]
    plan = chain.plan_chain_descriptors(factors)
    assert plan.flops == textbook_matrix_chain(tuple(dims))


def test_a_500_factor_chain_plans_and_names_its_bracketing():
    plan = chain.plan_chain_descriptors(mlp_chain(250, batch=64), itemsize=4)
    assert len(plan.factors) == 501
    assert plan.order.count("J") == 501 and plan.order.count("(") == 500
    assert plan.flops <= min(plan.forward_flops, plan.reverse_flops)
