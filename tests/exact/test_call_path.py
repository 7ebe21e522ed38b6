"""What a repeated exact call reuses and what it must not leak: the interned structural key,
unit local Jacobians passed on, traces freed by reference counting, the per-structure
memory estimate, and pickled programs."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian, mlp_layers, numpy_mlp

import batchjac as bj
from batchjac import engine
from batchjac.exact.interpret import jacobian as interpret


def test_equal_structures_share_one_interned_key_and_others_do_not(rng):
    f = numpy_mlp(mlp_layers(rng, (5, 7, 3)))
    g = numpy_mlp(mlp_layers(rng, (5, 7, 3)))  # other weights, same structure
    p1 = bj.trace(f, rng.standard_normal((4, 5)))
    p2 = bj.trace(g, rng.standard_normal((9, 5)))
    p3 = bj.trace(numpy_mlp(mlp_layers(rng, (5, 8, 3))), rng.standard_normal((4, 5)))
    assert p1.key is p2.key and hash(p1.key) == hash(p2.key)
    assert p1.key != p3.key and p1.hash != p3.hash
    assert p1.hash == p2.hash  # the digest is of the key


def test_a_pickled_program_comes_back_with_its_primitives_and_structure(rng):
    W = rng.standard_normal((4, 3))
    program = bj.trace(lambda x: bj.sigmoid(bj.linear(x, W)) * 2.0, rng.standard_normal((2, 3)))
    key = program.key
    back = pickle.loads(pickle.dumps(program))
    assert back.hash == program.hash and back.key is key  # re-interned, with this process's hash
    assert [eq.primitive for eq in back.equations] == [eq.primitive for eq in program.equations]
    assert all(b.primitive is a.primitive for a, b in zip(program.equations, back.equations))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    ["bias then tanh", "x + x", "residual", "difference", "constant minus x", "wider constant"],
)
def test_unit_local_jacobians_pass_their_operands_edges_on(case, dtype, rng):
    W = (rng.standard_normal((4, 4)) / 2).astype(dtype)
    c = rng.standard_normal(4).astype(dtype)
    C = rng.standard_normal((3, 4)).astype(dtype)
    functions = {  # NumPy functions: traced for batchjac, complex-safe for the reference
        "bias then tanh": lambda x: np.tanh(x @ W.T + c),
        "x + x": lambda x: np.sin(x) + np.sin(x),
        "residual": lambda x: np.tanh(x @ W.T) + x,
        "difference": lambda x: (np.exp(0.3 * x) - c) - x @ W.T,
        "constant minus x": lambda x: c - np.tanh(x),
        "wider constant": lambda x: np.tanh(x)[:, None, :] + C,  # broadcast: a Gather, not a unit
    }
    f = functions[case]
    x = rng.standard_normal((5, 4)).astype(dtype)
    y = f(x)
    J = bj.jacobian(f, x, method="exact", fuse=False)
    expected = complex_step_jacobian(f, x.astype(np.float64))
    assert J.dtype == y.dtype and J.shape == (5, *y.shape[1:], 4)
    assert_close(J, expected)


def test_a_float32_operand_added_to_a_float64_constant_is_promoted_not_passed_on(rng):
    c = rng.standard_normal(3)  # float64
    x = rng.standard_normal((4, 3)).astype(np.float32)
    J = bj.jacobian(lambda x: np.tanh(x) + c, x, method="exact", fuse=False)
    assert J.dtype == np.float64
    assert_close(J, np.einsum("bi,ij->bij", 1 - np.tanh(x.astype(np.float64)) ** 2, np.eye(3)), rtol=1e-6)


def test_the_mlp_chain_has_no_identity_factors(rng):
    f = numpy_mlp(mlp_layers(rng, (6, 8, 8, 3)))
    J = bj.jacobian(f, rng.standard_normal((4, 6)), method="exact", structured=True, fuse=False)
    assert "Identity" not in J.plan.explain()
    x = rng.standard_normal((4, 6))
    assert_close(bj.jacobian(f, x, method="exact", fuse=False), complex_step_jacobian(f, x))


def test_a_call_leaves_no_reference_cycles(rng):
    """The trace (variables, equations, tracers) is freed by reference counting when the
    call returns, not kept until the garbage collector runs."""
    f = numpy_mlp(mlp_layers(rng, (5, 6, 2)))
    x = rng.standard_normal((3, 5))
    for keywords in ({"fuse": False}, {}, {"structured": True, "fuse": False}):
        bj.jacobian(f, x, method="exact", **keywords)  # caches filled
        gc.collect()
        gc.disable()
        try:
            bj.jacobian(f, x, method="exact", **keywords)
            assert gc.collect() == 0, keywords
        finally:
            gc.enable()


def test_the_memory_estimate_counts_a_shared_weight_once(rng):
    """A product with a weight shared by the batch has a Shared local Jacobian: per sample it
    costs its output, not output x input (which made large MLPs read the free memory and
    split into passes for nothing)."""
    x = rng.standard_normal((2, 300))
    wide = bj.trace(lambda x: bj.linear(x, rng.standard_normal((200, 300))), x)
    per_sample = engine.exact_memory_per_sample(wide, [x])
    itemsize = 8
    # values and local Jacobians (a few entries per output) plus three copies of the result
    assert per_sample <= itemsize * (4 * 200 + 3 * 200 * 300)
    # a product of two per-sample operands keeps its dense block
    batched = bj.trace(lambda x: x.reshape(2, 15, 20) @ np.swapaxes(x.reshape(2, 15, 20), 1, 2), x)
    assert engine.exact_memory_per_sample(batched, [x]) >= itemsize * 15 * 15 * 300


def test_the_memory_estimate_is_made_once_per_structure(rng, monkeypatch):
    f = numpy_mlp(mlp_layers(rng, (4, 5, 2)))
    calls = []
    count = engine._count_memory_per_sample
    monkeypatch.setattr(engine, "_count_memory_per_sample", lambda p: calls.append(1) or count(p))
    engine._MEMORY_PER_SAMPLE.clear()
    for b in (3, 3, 7):
        bj.jacobian(f, rng.standard_normal((b, 4)), method="exact", fuse=False)
    assert len(calls) == 1


def test_a_backend_named_in_the_environment_is_checked_once_per_call(monkeypatch, rng):
    monkeypatch.setenv("BATCHJAC_BACKEND", "not-a-backend")
    with pytest.raises(ValueError, match="not-a-backend"):
        bj.jacobian(bj.tanh, rng.standard_normal((2, 3)), method="exact")
    monkeypatch.setenv("BATCHJAC_BACKEND", "numpy")
    x = rng.standard_normal((2, 3))
    assert_close(
        bj.jacobian(bj.tanh, x, method="exact"), np.einsum("bi,ij->bij", 1 - np.tanh(x) ** 2, np.eye(3))
    )


def test_inside_a_call_nothing_requested_reads_as_none_and_a_context_still_wins(rng):
    from batchjac.backends.dispatch import call_backend, requested_backend

    with call_backend(None):
        assert requested_backend() is None
        with bj.use_backend("numpy"):
            assert requested_backend() == "numpy"
        assert requested_backend("numpy") == "numpy"
    with call_backend("numpy"):
        assert requested_backend() == "numpy"


def test_plans_and_schedules_are_keyed_by_structure_not_by_program_object(rng):
    f = numpy_mlp(mlp_layers(rng, (4, 6, 3)))
    interpret._SCHEDULES.clear()
    interpret.PLAN_CACHE.clear()
    for b in (2, 5, 2):
        bj.jacobian(f, rng.standard_normal((b, 4)), method="exact", fuse=False)
    assert len(interpret._SCHEDULES) == 1 and len(interpret.PLAN_CACHE) == 1
