"""plan_fusion: which programs fuse, in which mode, and which path fuse="auto" takes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import numpy_mlp

import batchjac as bj
from batchjac.exact.capture import capture
from batchjac.exact.fuse import fused_value_and_jacobians, plan, plan_fusion


def _mlp(widths, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    layers = [(rng.standard_normal((m, n)).astype(dtype), rng.standard_normal(m).astype(dtype))
              for n, m in zip(widths[:-1], widths[1:])]  # fmt: skip

    x = rng.standard_normal((batch, widths[0])).astype(dtype)
    return numpy_mlp(layers), x, layers


def test_the_cpu_mlp_stays_on_the_chain():
    """The MLP 64 -> 256^3 -> 10, B = 256, float32: 150,000 partials per sample."""
    f, x, _ = _mlp((64, 256, 256, 256, 10), 256, np.float32)
    program = bj.trace(f, x)
    decision = plan_fusion(program, program.inputs, 256, np.float32)
    assert not decision.fusable and decision.path == "chain"
    assert "size limit" in decision.reason
    assert decision.explain().startswith("path: chain (not fusable: size limit")


def test_kinematics_fuses():
    q = np.zeros((4, 6))
    program = bj.trace(
        lambda q: np.stack([np.sum(np.cos(np.cumsum(q, -1)), -1), np.sin(q[:, 0]) * q[:, 3]], -1), q
    )
    decision = plan_fusion(program, program.inputs, 100_000, np.float64)
    assert decision.fusable and decision.path == "fused"
    assert decision.fused_operations < decision.chain_operations
    assert "fused" in decision.explain() and decision.plan().path == "fused"


def test_small_networks_fuse_and_the_chain_cost_falls_with_the_batch():
    """A 8 -> 8 -> 8 network fuses (measured: ~4x faster than the chain at B = 10^4); the
    chain's fixed cost per equation and call is shared by the batch."""
    f, x, ((W1, b1), (W2, _)) = _mlp((8, 8, 8), 1000, np.float64)
    program = bj.trace(f, x)
    small, large = (plan_fusion(program, program.inputs, batch, np.float64) for batch in (1, 10**6))
    assert small.path == large.path == "fused" and small.chain_operations > large.chain_operations
    assert small.fused_operations == large.fused_operations
    value, (J,), _ = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 1000)
    t = np.tanh(x @ W1.T + b1)
    expected = np.einsum("ij,bj,jk->bik", W2, 1 - t * t, W1)
    np.testing.assert_allclose(J.to_dense(), expected, rtol=1e-12, atol=1e-12)


def test_a_wide_network_is_over_the_size_limit():
    f, x, _ = _mlp((32, 32, 32), 4, np.float64)
    program = bj.trace(f, x)
    decision = plan_fusion(program, program.inputs, 4, np.float64)
    assert not decision.fusable and "generated statements" in decision.reason


def test_element_wise_programs_fuse_as_one_loop():
    x = np.zeros((3, 4, 5), np.float32)
    program = bj.trace(lambda x: np.tanh(np.exp(x) * x) + x, x)
    decision = plan_fusion(program, program.inputs, 3, np.float32)
    assert decision.mode == "elementwise" and decision.path == "fused"


@pytest.mark.parametrize(
    "f, shape, words",
    [
        (lambda x: np.linalg.cholesky(x.reshape(-1, 2, 2) @ np.swapaxes(x.reshape(-1, 2, 2), 1, 2)).reshape(-1, 4),
         (4,), "cholesky"),
        (lambda x: np.linalg.det(x.reshape(-1, 9, 9)), (81,), "9 x 9"),
        (lambda x: x @ np.ones((300, 300)), (300,), "size limit"),
    ],
    ids=["a primitive without a fused rule", "a matrix too large", "too many partials"],
)  # fmt: skip
def test_not_fusable_says_why(f, shape, words):
    x = np.random.default_rng(0).standard_normal((2, *shape))
    program = bj.trace(f, x)
    decision = plan_fusion(program, program.inputs, 2, np.float64)
    assert not decision.fusable and decision.mode is None and words in decision.reason
    with pytest.raises(ValueError, match="not fusable"):
        fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 2)


def test_planning_is_cached_by_structure(monkeypatch):
    """A second program of the same structure (other weights, batch, literals) is not lowered again."""
    calls = []
    original = plan._lower
    monkeypatch.setattr(plan, "_lower", lambda *a: calls.append(1) or original(*a))
    for scale, batch in ((2.0, 3), (5.0, 7)):
        x = np.ones((batch, 3))
        captured = capture(lambda x: np.sin(x * scale) @ np.full((3, 2), scale), (x,), {}, (0,))
        program = captured.program
        decision = plan_fusion(program, program.inputs, batch, np.float64)
        assert decision.fusable
    assert len(calls) == 1


def test_device_is_checked():
    program = bj.trace(lambda x: np.sin(x), np.ones((2, 2)))
    with pytest.raises(ValueError, match="device"):
        plan_fusion(program, program.inputs, 2, np.float64, device="tpu")
