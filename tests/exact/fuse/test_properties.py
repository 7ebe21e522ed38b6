"""Property: on random programs built from the supported primitives, the fused kernel and
the structured chain give the same value and Jacobian (float64, 1e-12 relative)."""

from __future__ import annotations

import numpy as np
from cases import fused_and_chain, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

import batchjac as bj

UNARY = ("sin", "cos", "tanh", "sigmoid", "softplus", "arctan", "square", "erf", "gelu")
OPERATIONS = (
    "unary",
    "binary",
    "matmul",
    "sum",
    "cumsum",
    "softmax",
    "concatenate",
    "slice",
    "where",
    "logsumexp",
)


def build(width: int, steps):
    """``f(x)`` of a batch ``(B, width)`` from ``steps``: (operation, seed) pairs, each
    applied to values computed before (every value is ``(B, k)``)."""

    def f(x):
        values = [x]
        for operation, seed in steps:
            rng = np.random.default_rng(seed)
            a = values[rng.integers(len(values))]
            b = values[rng.integers(len(values))]
            k = a.shape[1]
            if operation == "unary":
                out = getattr(bj, UNARY[rng.integers(len(UNARY))])(a)
            elif operation == "binary":
                b = b[:, :1] if b.shape[1] != k else b
                out = [a + b, a - b, a * b, a / (1.5 + b * b), np.maximum(a, b)][rng.integers(5)]
            elif operation == "matmul":
                out = a @ rng.standard_normal((k, int(rng.integers(1, 5))))
            elif operation == "sum":
                out = np.sum(a, axis=-1, keepdims=True)
            elif operation == "cumsum":
                out = np.cumsum(a, axis=-1)
            elif operation == "softmax":
                out = bj.softmax(a)
            elif operation == "concatenate":
                out = np.concatenate([a, b], axis=-1)
            elif operation == "slice":
                out = a[:, int(rng.integers(k)) :]
            elif operation == "where":
                out = np.where(a > 0.1, a, 0.5 * b[:, :1])
            else:
                out = bj.logsumexp(a, axis=-1, keepdims=True)
            values.append(out[:, :6])  # per-sample sizes stay small
        return values[-1] * 1.0 + values[len(values) // 2][:, :1]

    return f


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    width=st.integers(2, 5),
    steps=st.lists(st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 2**31)), min_size=1, max_size=6),
    batch=st.integers(1, 4),
)
def test_fused_equals_chain_on_random_programs(width, steps, batch):
    x = np.random.default_rng(len(steps)).uniform(-1.5, 1.5, (batch, width))
    value, (J,), chain_value, (chain_J,), decision = fused_and_chain(build(width, steps), (x,))
    assert decision.fusable, decision.reason
    assert relative_error(value, chain_value) <= 1e-12
    assert relative_error(J, chain_J) <= 1e-12
