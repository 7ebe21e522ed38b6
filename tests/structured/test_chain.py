"""Chains of Jacobians: the planner against brute force, every order against NumPy.

References are independent of batchjac: dense float64 matrices built here from the arrays
the factors are made of, ``numpy.matmul``, and cost oracles that count the work of every
bracketing, enumerated recursively, from the kinds of what the products actually return.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, to_numpy

import batchjac as bj
from batchjac.backends.dispatch import get_backend
from batchjac.structured.chain import Structure, plan_chain_descriptors

ORDERS = ("optimal", "forward", "reverse")
KINDS = ("dense", "diagonal", "shared", "identity", "scaled_identity", "per_sample_identity")


# --------------------------------------------------------------------------------------
# Factors and their dense float64 references, built from the same NumPy arrays
# --------------------------------------------------------------------------------------


def make_factor(kind, batch, out_size, in_size, rng, dtype=np.float64, on_device=np.asarray):
    """A factor of the given kind and its dense ``(B, m, n)`` float64 reference."""
    eye = np.eye(in_size)
    if kind == "dense":
        a = rng.standard_normal((batch, out_size, in_size)).astype(dtype)
        return bj.Dense(on_device(a)), a.astype(np.float64)
    if kind == "diagonal":
        d = rng.uniform(0.5, 1.5, (batch, in_size)).astype(dtype)
        return bj.Diagonal(on_device(d)), d.astype(np.float64)[:, :, None] * eye
    if kind == "shared":
        A = rng.standard_normal((out_size, in_size)).astype(dtype)
        return bj.Shared(on_device(A), batch), np.broadcast_to(
            A.astype(np.float64), (batch, out_size, in_size)
        )
    if kind == "identity":
        return bj.Identity(in_size, batch), np.broadcast_to(eye, (batch, in_size, in_size))
    if kind == "scaled_identity":
        return bj.Identity(in_size, batch, scale=-0.75), np.broadcast_to(
            -0.75 * eye, (batch, in_size, in_size)
        )
    s = rng.uniform(0.5, 1.5, batch).astype(dtype)
    return bj.Identity(in_size, batch, scale=on_device(s)), s.astype(np.float64)[:, None, None] * eye


def random_chain(rng, length, batch, kinds=KINDS, max_size=9, **kw):
    """Factors ``[J_L, ..., J_1]`` of random kinds and compatible sizes, and their references."""
    size = int(rng.integers(1, max_size + 1))
    factors = []
    for _ in range(length):  # from J_1 outwards: each factor's input is the last output
        kind = str(rng.choice(kinds))
        out_size = int(rng.integers(1, max_size + 1)) if kind in ("dense", "shared") else size
        factors.append(make_factor(kind, batch, out_size, size, rng, **kw))
        size = out_size
    factors.reverse()
    return [J for J, _ in factors], [ref for _, ref in factors]


def dense_product(refs):
    product = refs[-1]
    for ref in reversed(refs[:-1]):
        product = np.matmul(ref, product)
    return product


def dense_of(J):
    """The float64 dense array of a Jacobian, read from what it stores."""
    if isinstance(J, bj.Dense):
        return to_numpy(J.a).astype(np.float64)
    if isinstance(J, bj.Diagonal):
        return to_numpy(J.d).astype(np.float64)[:, :, None] * np.eye(J.in_size)
    if isinstance(J, bj.Shared):
        return np.broadcast_to(to_numpy(J.A).astype(np.float64), J.shape)
    scale = to_numpy(J.scale).astype(np.float64)[:, None, None] if J.per_sample else J.scale
    return scale * np.broadcast_to(np.eye(J.in_size), J.shape)


# --------------------------------------------------------------------------------------
# Brute force over bracketings
# --------------------------------------------------------------------------------------


def bracketings(lo, hi):
    """Every bracketing of the factors ``lo..hi`` (indices, left to right)."""
    if lo == hi:
        yield lo
        return
    for split in range(lo, hi):
        for left in bracketings(lo, split):
            for right in bracketings(split + 1, hi):
                yield (left, right)


def dense_cost(tree, shapes):
    """Textbook multiply-adds of a bracketing of dense ``(B, m, n)`` factors: (cost, shape)."""
    if isinstance(tree, int):
        return 0, shapes[tree]
    (cl, (b, m, k)), (cr, (_, _, n)) = (dense_cost(t, shapes) for t in tree)
    return cl + cr + b * m * k * n, (b, m, n)


def stored_numbers(J):
    if isinstance(J, bj.Identity):
        return J.batch if J.per_sample else 0
    return getattr(J, {bj.Dense: "a", bj.Diagonal: "d", bj.Shared: "A"}[type(J)]).size


def is_plain_identity(J):
    return isinstance(J, bj.Identity) and not J.per_sample and J.scale == 1.0


def varies_along_batch(R):
    return not isinstance(R, bj.Shared) and not (isinstance(R, bj.Identity) and not R.per_sample)


def executed_cost(tree, Js):
    """Execute a bracketing and count its flops from what each product really returned:
    free with a plain identity, one multiply per stored result entry for a scaling,
    ``m k n`` per distinct sample for a contraction. Returns ((flops per sample, flops
    done once), product): a product whose result varies along the batch is done per sample."""
    if isinstance(tree, int):
        return (0, 0), Js[tree]
    ((al, cl), J), ((ar, cr), K) = (executed_cost(t, Js) for t in tree)
    R = J @ K
    if is_plain_identity(J) or is_plain_identity(K):
        flops = 0
    elif isinstance(J, (bj.Diagonal, bj.Identity)) or isinstance(K, (bj.Diagonal, bj.Identity)):
        flops = stored_numbers(R)
    else:
        flops = J.out_size * J.in_size * K.in_size * (1 if isinstance(R, bj.Shared) else J.batch)
    if varies_along_batch(R):
        return (al + ar + flops // J.batch, cl + cr), R
    return (al + ar, cl + cr + flops), R


def at_batch(cost, batch):
    per_sample, once = cost
    return per_sample * batch + once


def forward_tree(n):
    return _nest(list(range(n)), from_right=True)


def reverse_tree(n):
    return _nest(list(range(n)), from_right=False)


def _nest(indices, from_right):
    if len(indices) == 1:
        return indices[0]
    if from_right:
        return (indices[0], _nest(indices[1:], True))
    return (_nest(indices[:-1], False), indices[-1])


def name_of(tree, n):
    return f"J{n - tree}" if isinstance(tree, int) else "(" + " ".join(name_of(t, n) for t in tree) + ")"


# --------------------------------------------------------------------------------------
# The planner
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(1, 9))
def test_dense_plan_is_the_brute_force_minimum(length):
    rng = np.random.default_rng(1000 + length)
    for _ in range(4):
        batch = int(rng.integers(1, 4))
        sizes = [int(s) for s in rng.integers(1, 40, length + 1)]
        Js = [bj.Dense(np.zeros((batch, sizes[i], sizes[i + 1]))) for i in range(length)]
        shapes = [J.shape for J in Js]
        costs = {tree: dense_cost(tree, shapes)[0] for tree in bracketings(0, length - 1)}
        plan = bj.chain_plan(*Js)
        assert plan.flops == min(costs.values())
        assert costs[plan.tree] == plan.flops
        assert plan.order == name_of(plan.tree, length)
        assert plan.forward_flops == costs[forward_tree(length)]
        assert plan.reverse_flops == costs[reverse_tree(length)]


@pytest.mark.parametrize("seed", range(12))
def test_structured_plan_is_lexicographically_minimal_and_reports_its_cost_at_the_batch(seed):
    """The plan minimises the flops done per sample, then those done once (chain.py's rule,
    one plan for every batch size); its flops, and those of forward and reverse, are the
    executed products' at the chain's batch size."""
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 7))
    Js, _ = random_chain(rng, length, batch=3)
    costs = {tree: executed_cost(tree, Js)[0] for tree in bracketings(0, length - 1)}
    plan = bj.chain_plan(*Js)
    assert costs[plan.tree] == min(costs.values())
    assert plan.flops == at_batch(costs[plan.tree], 3)
    assert plan.forward_flops == at_batch(costs[forward_tree(length)], 3)
    assert plan.reverse_flops == at_batch(costs[reverse_tree(length)], 3)
    assert costs[plan.tree] <= min(costs[forward_tree(length)], costs[reverse_tree(length)])
    assert plan.result.kind is type(bj.chain(*Js))


def test_plan_bytes_count_operands_and_result():
    batch, m, k, n = 3, 4, 5, 6
    W = bj.Shared(np.zeros((m, k), dtype=np.float32), batch)
    D = bj.Diagonal(np.zeros((batch, k), dtype=np.float32))
    plan = bj.chain_plan(W, D)
    assert plan.bytes == 4 * (m * k + batch * k + batch * m * k)
    V = bj.Dense(np.zeros((batch, k, n)))
    assert bj.chain_plan(W, V).bytes == 8 * (m * k + batch * k * n + batch * m * n)  # float64 result


def test_classifier_takes_reverse_and_decoder_forward():
    batch = 64
    classifier = [(bj.Shared, batch, 10, 1024), (bj.Diagonal, batch, 1024, 1024), (bj.Shared, batch, 1024, 1024),
                  (bj.Diagonal, batch, 1024, 1024), (bj.Shared, batch, 1024, 784)]  # fmt: skip
    decoder = [(bj.Shared, batch, 784, 1024), (bj.Diagonal, batch, 1024, 1024), (bj.Shared, batch, 1024, 10)]
    assert plan_chain_descriptors(classifier, itemsize=4).order == name_of(reverse_tree(5), 5)
    assert plan_chain_descriptors(decoder, itemsize=4).order == name_of(forward_tree(3), 3)


def test_classifier_plan_from_jacobians_matches_descriptors():
    rng = np.random.default_rng(5)
    batch, sizes = 64, [10, 1024, 1024, 784]
    Js = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        Js.append(bj.Shared(rng.standard_normal((m, n)).astype(np.float32), batch))
        if i < len(sizes) - 2:
            Js.append(bj.Diagonal(rng.standard_normal((batch, n)).astype(np.float32)))
    plan = bj.chain_plan(*Js)
    assert plan.order == name_of(reverse_tree(5), 5)
    assert plan == plan_chain_descriptors([Structure.of(J) for J in Js], itemsize=4)
    assert "reverse" in plan.explain() and plan.order in str(plan)


def test_identity_factors_cost_nothing_and_change_nothing(rng):
    W, w = make_factor("shared", 2, 3, 4, rng)
    D, d = make_factor("diagonal", 2, 4, 4, rng)
    I4 = bj.Identity(4, 2)
    plain = bj.chain_plan(W, D)
    with_identities = bj.chain_plan(bj.Identity(3, 2), W, I4, D, I4)
    assert (with_identities.flops, with_identities.bytes) == (plain.flops, plain.bytes)
    assert bj.chain_plan(I4).flops == bj.chain_plan(I4, I4, I4).flops == 0
    for order in ORDERS:
        result = bj.chain(bj.Identity(3, 2), W, I4, D, I4, order=order)
        assert type(result) is bj.Dense
        assert_close(dense_of(result), dense_product([w, d]), rtol=1e-12)


def test_diagonal_chain_stays_diagonal(backend, on_device, rng):
    Js, refs = zip(*(make_factor("diagonal", 4, 6, 6, rng, on_device=on_device) for _ in range(5)))
    expected = np.prod([np.diagonal(ref, axis1=1, axis2=2) for ref in refs], axis=0)
    for order in ORDERS:
        result = bj.chain(*Js, order=order)
        assert type(result) is bj.Diagonal
        assert_close(result.d, expected, rtol=1e-12)
    assert bj.chain_plan(*Js).result.kind is bj.Diagonal


def test_shared_chain_stays_shared(backend, on_device, rng):
    sizes = [3, 7, 2, 5]
    As = [rng.standard_normal((m, n)) for m, n in zip(sizes[:-1], sizes[1:])]
    Js = [bj.Shared(on_device(A), batch=4) for A in As]
    plan = bj.chain_plan(*Js)
    assert plan.result.kind is bj.Shared
    assert plan.flops == min(3 * 7 * 2 + 3 * 2 * 5, 7 * 2 * 5 + 3 * 7 * 5)  # no factor of B
    for order in ORDERS:
        result = bj.chain(*Js, order=order)
        assert type(result) is bj.Shared and result.batch == 4
        assert_close(result.A, As[0] @ As[1] @ As[2], rtol=1e-12)


def test_scalings_never_become_dense_products(monkeypatch, rng):
    numpy_backend = get_backend("numpy")

    def forbidden(*args):
        raise AssertionError("a batched dense product was used where a scaling does the job")

    monkeypatch.setattr(numpy_backend, "batched_matmul", forbidden)
    Js, refs = random_chain(rng, 6, batch=3, kinds=("diagonal", "shared", "identity", "per_sample_identity"))
    for order in ORDERS:
        assert_close(bj.chain(*Js, order=order).to_dense(), dense_product(refs), rtol=1e-12)


# --------------------------------------------------------------------------------------
# Every order computes the product
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("batch", [0, 1, 5])
@pytest.mark.parametrize("order", ORDERS)
def test_every_order_gives_the_dense_product(backend, on_device, order, batch, dtype, rtol):
    rng = np.random.default_rng(batch * 31 + len(order))
    for length in range(1, 7):
        Js, refs = random_chain(rng, length, batch, dtype=dtype, on_device=on_device)
        result = bj.chain(*Js, order=order)
        assert result.shape == (batch, Js[0].out_size, Js[-1].in_size)
        weak = all(isinstance(J, bj.Identity) and J.is_weak for J in Js)  # no dtype of their own
        assert result.dtype == (np.float64 if weak else dtype)
        assert_close(result.to_dense(), dense_product(refs), rtol=rtol)


def _frozen(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("order", ORDERS)
def test_non_contiguous_read_only_inputs_are_left_alone(backend, on_device, order, rng):
    batch = 3
    a = _frozen(rng.standard_normal((batch, 5, 4))).transpose(0, 2, 1)  # (B, 4, 5), strided
    d = _frozen(rng.standard_normal((batch, 10)))[:, ::2]  # (B, 5), strided
    A = _frozen(rng.standard_normal((5, 6))).T  # (6, 5), transposed
    s = _frozen(rng.uniform(0.5, 1.5, batch))
    b = _frozen(rng.standard_normal((batch, 5, 3)))
    originals = [x.copy() for x in (a, d, A, s, b)]
    Js = [bj.Dense(on_device(a)), bj.Diagonal(on_device(d)), bj.Identity(5, batch, scale=on_device(s)),
          bj.Shared(on_device(A).T, batch), bj.Shared(on_device(A), batch), bj.Dense(on_device(b))]  # fmt: skip
    expected = dense_product([a, d[:, :, None] * np.eye(5), s[:, None, None] * np.eye(5), A.T, A, b])
    assert_close(bj.chain(*Js, order=order).to_dense(), expected, rtol=1e-10)
    for x, original in zip((a, d, A, s, b), originals):
        np.testing.assert_array_equal(x, original)


def test_a_single_factor_is_returned_as_it_is(rng):
    J, _ = make_factor("dense", 2, 3, 4, rng)
    for order in ORDERS:
        assert bj.chain(J, order=order) is J
    plan = bj.chain_plan(J)
    assert (plan.order, plan.flops, plan.bytes) == ("J1", 0, 0)


# --------------------------------------------------------------------------------------
# JVP and VJP chains
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, 1, 4])
def test_chain_jvp_and_vjp_match_the_dense_product(backend, on_device, batch):
    rng = np.random.default_rng(77 + batch)
    for length in range(1, 7):
        Js, refs = random_chain(rng, length, batch, on_device=on_device)
        product = dense_product(refs)
        v = rng.standard_normal((batch, Js[-1].in_size))
        u = rng.standard_normal((batch, Js[0].out_size))
        assert_close(bj.chain_jvp(Js, on_device(v)), np.einsum("bmn,bn->bm", product, v), rtol=1e-10)
        assert_close(bj.chain_vjp(Js, on_device(u)), np.einsum("bm,bmn->bn", u, product), rtol=1e-10)


def test_chain_jvp_and_vjp_never_form_the_product(monkeypatch, rng):
    Js, refs = random_chain(rng, 5, batch=2)
    for J in Js:
        monkeypatch.setattr(type(J), "__matmul__", lambda *a: pytest.fail("the product was formed"))
    v, u = rng.standard_normal((2, Js[-1].in_size)), rng.standard_normal((2, Js[0].out_size))
    assert_close(bj.chain_jvp(Js, v), np.einsum("bmn,bn->bm", dense_product(refs), v), rtol=1e-10)
    assert_close(bj.chain_vjp(Js, u), np.einsum("bm,bmn->bn", u, dense_product(refs)), rtol=1e-10)


def test_chain_jvp_and_vjp_reject_bad_shapes(rng):
    J2, _ = make_factor("shared", 3, 4, 5, rng)
    J1, _ = make_factor("dense", 3, 5, 6, rng)
    with pytest.raises(
        ValueError, match=r"chain_jvp: v must have shape \(3, 6\) to match factor 1, got \(3, 5\)"
    ):
        bj.chain_jvp([J2, J1], np.ones((3, 5)))
    with pytest.raises(
        ValueError, match=r"chain_vjp: u must have shape \(3, 4\) to match factor 2, got \(2, 4\)"
    ):
        bj.chain_vjp([J2, J1], np.ones((2, 4)))
    with pytest.raises(
        ValueError, match="chain_jvp: factor 2 has input size 5 but factor 1 has output size 4"
    ):
        bj.chain_jvp([J2, J2], np.ones((3, 5)))
    with pytest.raises(TypeError, match="chain_vjp: Js must be a list of Jacobians .*got Shared"):
        bj.chain_vjp(J2, np.ones((3, 4)))
    with pytest.raises(ValueError, match="chain_jvp: expected at least one factor"):
        bj.chain_jvp([], np.ones((3, 5)))


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_size_mismatch_names_both_factors_and_sizes(rng):
    J3, _ = make_factor("dense", 2, 3, 4, rng)
    J2, _ = make_factor("shared", 2, 4, 5, rng)
    J1, _ = make_factor("diagonal", 2, 4, 4, rng)
    for call in (bj.chain, bj.chain_plan):
        with pytest.raises(
            ValueError, match="chain: factor 2 has input size 5 but factor 1 has output size 4"
        ):
            call(J3, J2, J1)


def test_batch_mismatch_names_both_factors_and_batches(rng):
    J2, _ = make_factor("shared", 3, 4, 5, rng)
    J1, _ = make_factor("dense", 4, 5, 6, rng)
    with pytest.raises(ValueError, match="chain: factor 2 has batch 3 but factor 1 has batch 4"):
        bj.chain(J2, J1)
    with pytest.raises(ValueError, match="chain_vjp: factor 2 has batch 3 but factor 1 has batch 4"):
        bj.chain_vjp([J2, J1], np.ones((3, 4)))


def test_non_jacobian_factor_is_a_type_error(rng):
    J, _ = make_factor("dense", 2, 3, 4, rng)
    with pytest.raises(
        TypeError, match=r"chain: factor 1 \(argument 2 of 2\) must be a bj.Jacobian .*got ndarray"
    ):
        bj.chain(J, np.ones((2, 4, 4)))
    with pytest.raises(TypeError, match=r"chain: factor 2 \(argument 1 of 2\) .*got list"):
        bj.chain_plan([J], J)


def test_unknown_order_lists_the_valid_ones(rng):
    J, _ = make_factor("dense", 2, 3, 4, rng)
    with pytest.raises(
        ValueError, match="order: expected one of 'optimal', 'forward', 'reverse', got 'backward'"
    ):
        bj.chain(J, J.T, order="backward")


def test_empty_chain_is_a_value_error():
    for call in (bj.chain, bj.chain_plan):
        with pytest.raises(ValueError, match="chain: expected at least one factor, got none"):
            call()
    with pytest.raises(ValueError, match="chain: expected at least one factor, got none"):
        plan_chain_descriptors([])


def test_descriptors_are_validated():
    with pytest.raises(ValueError, match="chain: factor 2 has input size 5 but factor 1 has output size 4"):
        plan_chain_descriptors([(bj.Dense, 2, 3, 5), (bj.Shared, 2, 4, 6)])
    with pytest.raises(ValueError, match="Structure: a Diagonal is square, got out_size 3 and in_size 4"):
        Structure(bj.Diagonal, 2, 3, 4)
    with pytest.raises(
        ValueError, match="Structure: expected kind Dense, .*got kind 'Dense' with scale 'number'"
    ):
        Structure(bj.Dense, 2, 3, 4, "number")


def test_equal_costs_resolve_to_the_most_reverse_like_bracketing():
    # Every bracketing of a square Shared/Diagonal chain costs the same flops and bytes;
    # the reverse one multiplies batched @ shared, a GEMM on a reshaped view.
    chain = [(bj.Shared, 4, 8, 8), (bj.Diagonal, 4, 8, 8)] * 3 + [(bj.Shared, 4, 8, 8)]
    plan = plan_chain_descriptors(chain)
    assert plan.forward_flops == plan.reverse_flops == plan.flops
    assert plan.order == name_of(reverse_tree(len(chain)), len(chain))
