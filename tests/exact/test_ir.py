"""The traced program (IR): listing, structural hash, constants kept apart, cached plans."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, mlp_layers

import batchjac as bj
from batchjac.exact.interpret import jacobian as interpret


def _mlp(weights):
    def f(x):
        for i, (W, b) in enumerate(weights):
            x = bj.linear(x, W, b)
            if i < len(weights) - 1:
                x = bj.tanh(x)
        return x

    return f


def test_the_readme_mlp_prints_as_a_listing_with_shapes(rng):
    W1, W2 = rng.standard_normal((32, 64)) / 8, rng.standard_normal((10, 32)) / 6
    program = bj.trace(lambda x: bj.linear(bj.tanh(bj.linear(x, W1)), W2), rng.standard_normal((4, 64)))
    assert str(program) == (
        "program(x: f64[B,64])\n"
        "  consts c0: f64[64,32], c1: f64[32,10]\n"
        "  v1: f64[B,32] = matmul(x, c0)\n"
        "  v2: f64[B,32] = tanh(v1)\n"
        "  v3: f64[B,10] = matmul(v2, c1)\n"
        "  return v3"
    )
    assert [eq.primitive.name for eq in program.equations] == ["matmul", "tanh", "matmul"]


def test_constants_are_inputs_of_the_program_not_baked_in(rng):
    W = rng.standard_normal((5, 3))
    program = bj.trace(lambda x: np.tanh(x @ W.T), rng.standard_normal((2, 3)))
    (value,) = program.const_values
    assert np.shares_memory(value, W)  # the weight travels beside the program
    assert program.consts[0].shape == (3, 5) and not program.consts[0].batched


def test_the_hash_ignores_weights_and_batch_size_but_not_the_graph(rng):
    f1 = _mlp(mlp_layers(rng, (6, 8, 3)))
    f2 = _mlp(mlp_layers(rng, (6, 8, 3)))
    p1 = bj.trace(f1, rng.standard_normal((4, 6)))
    p2 = bj.trace(f2, rng.standard_normal((17, 6)))
    assert p1.hash == p2.hash and p1 == p2
    p3 = bj.trace(_mlp(mlp_layers(rng, (6, 9, 3))), rng.standard_normal((4, 6)))  # another width
    p4 = bj.trace(lambda x: bj.sigmoid(f1(x)), rng.standard_normal((4, 6)))  # another graph
    p5 = bj.trace(f1, rng.standard_normal((4, 6)).astype(np.float32))  # another dtype
    assert len({p1.hash, p3.hash, p4.hash, p5.hash}) == 4


def test_literal_values_do_not_change_the_hash_but_static_parameters_do(rng):
    x = rng.standard_normal((3, 4))
    assert bj.trace(lambda x: 2.0 * x, x).hash == bj.trace(lambda x: 3.0 * x, x).hash
    assert bj.trace(lambda x: x**2, x).hash != bj.trace(lambda x: x**3, x).hash
    assert bj.trace(lambda x: np.sum(x, axis=-1), x[:, None]).hash != bj.trace(lambda x: np.sum(x, axis=1), x[:, :, None]).hash


def test_the_planner_runs_once_for_repeated_calls_at_any_batch_size(rng):
    f = _mlp(mlp_layers(rng, (5, 7, 7, 2)))
    interpret.PLAN_CACHE.clear()
    before = interpret.PLANNING_COUNT[0]
    results = [bj.jacobian(f, rng.standard_normal((b, 5)), method="exact", fuse=False) for b in (3, 3, 8, 1, 20)]
    assert interpret.PLANNING_COUNT[0] - before == 1
    x = rng.standard_normal((4, 5))
    assert_close(bj.jacobian(f, x, method="exact"), bj.jacobian(f, x, method="central"), rtol=1e-7)
    assert all(J.shape[1:] == (2, 5) for J in results)


def test_the_cached_plan_is_the_plan_of_a_fresh_assembly(rng):
    f = _mlp(mlp_layers(rng, (9, 16, 16, 3)))
    x = rng.standard_normal((6, 9))
    interpret.PLAN_CACHE.clear()
    first = bj.jacobian(f, x, method="exact", structured=True, fuse=False)
    second = bj.jacobian(f, x, method="exact", structured=True, fuse=False)
    assert first.plan.steps == second.plan.steps and first.plan.order == second.plan.order
    assert_close(first.to_dense(), second.to_dense(), rtol=0)


def test_values_only_interpreter_gives_the_function_value(rng):
    from batchjac.exact.interpret.evaluate import evaluate, plain

    f = _mlp(mlp_layers(rng, (4, 6, 2)))
    x = rng.standard_normal((5, 4))
    program = bj.trace(f, x)
    (value,), _ = evaluate(program, [x])
    assert_close(plain(value), f(x), rtol=1e-14)
    (other,), _ = evaluate(program, [x[:2]])  # any batch size
    assert_close(plain(other), f(x[:2]), rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_primitive_declares_its_rules_once(dtype):
    from batchjac.exact.primitives import REGISTRY

    assert len(REGISTRY) == len(set(REGISTRY))
    for name, primitive in REGISTRY.items():
        assert primitive.name == name
        assert callable(primitive.abstract) and callable(primitive.impl)
