"""Property test: random compositions of traced operations (up to depth 6, the input
reused along several paths) against an independent float64 complex-step Jacobian."""

from __future__ import annotations

import numpy as np
from helpers import assert_close, complex_step_jacobian
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchjac as bj

N = 4
_rng = np.random.default_rng(7)
W = _rng.standard_normal((N, N)) / 2
w = _rng.standard_normal(N) / 2


def _softmax_np(a):
    e = np.exp(a - a.real.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# name -> (batchjac form, complex-safe NumPy form); every one maps (B, N) -> (B, N)
UNARY = {
    "sin": (bj.sin, np.sin),
    "cos": (bj.cos, np.cos),
    "tanh": (bj.tanh, np.tanh),
    "exp": (lambda a: bj.exp(0.3 * a), lambda a: np.exp(0.3 * a)),
    "sigmoid": (bj.sigmoid, lambda a: 1 / (1 + np.exp(-a))),
    "softplus": (bj.softplus, lambda a: np.log(1 + np.exp(a))),
    "square": (bj.square, lambda a: a * a),
    "log1p_square": (lambda a: bj.log1p(a * a), lambda a: np.log1p(a * a)),
    "linear": (lambda a: bj.linear(a, W, w), lambda a: a @ W.T + w),
    "softmax": (bj.softmax, _softmax_np),
    "scale_by_dot": (lambda a: a * bj.reshape(bj.dot(a, w), (-1, 1)), lambda a: a * (a @ w)[:, None]),
    "reverse": (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    "mean_shift": (lambda a: a - bj.mean(a, keepdims=True), lambda a: a - a.mean(-1, keepdims=True)),
}
BINARY = {
    "add": (lambda u, v: u + v, lambda u, v: u + v),
    "sub": (lambda u, v: u - v, lambda u, v: u - v),
    "mul": (lambda u, v: u * v, lambda u, v: u * v),
    "div": (lambda u, v: u / (1.5 + bj.tanh(v)), lambda u, v: u / (1.5 + np.tanh(v))),
}
MAX_DEPTH = 6


def expressions(depth):
    """Trees over the input ``"x"`` of at most ``depth`` operations from root to leaf."""
    if depth == 0:
        return st.just("x")
    below = expressions(depth - 1)
    return st.one_of(
        st.just("x"),
        st.tuples(st.sampled_from(sorted(UNARY)), below),
        st.tuples(st.sampled_from(sorted(BINARY)), below, below),
    )


def evaluate(tree, x, which):
    if tree == "x":
        return x
    name, *children = tree
    table = UNARY if len(children) == 1 else BINARY
    return table[name][which](*(evaluate(c, x, which) for c in children))


def depth(tree):
    return 0 if tree == "x" else 1 + max(depth(c) for c in tree[1:])


def test_the_vocabulary_has_at_least_eight_operations():
    assert len(UNARY) + len(BINARY) >= 8


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=expressions(MAX_DEPTH), seed=st.integers(0, 2**32 - 1))
def test_random_compositions_match_complex_step(tree, seed):
    assert depth(tree) <= MAX_DEPTH
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (3, N))
    J = bj.jacobian(lambda a: evaluate(tree, a, 0), x, method="exact")
    reference = complex_step_jacobian(lambda a: evaluate(tree, a, 1), x)
    assert_close(J, reference, rtol=1e-10)
