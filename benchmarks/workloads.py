"""The six workloads of the suite (issue 8): what each computes, at which sizes, its floor
and its target.

Each workload is written once as a function of an array namespace ``xp`` (NumPy, CuPy,
``jax.numpy``, ``torch`` or ``batchjac`` itself for tracing), so that batchjac and every peer
differentiate the same mathematics. ``make(size, rng, rotations)`` gives a :class:`Problem`:
``rotations`` independent input batches (NumPy) that the timed calls cycle through, the
shared parameters, and the cost figures from which the floors are computed.

Floors (``floor_kind``): ``memory`` is the bytes that must be read and written over the
measured copy bandwidth; ``write`` is the bytes of the output Jacobian over that bandwidth;
``compute`` is multiply-adds over the measured matmul rate in the workload's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import batchjac as bj

# --------------------------------------------------------------------------------------
# The functions, once for every namespace
# --------------------------------------------------------------------------------------


def mlp(xp, params, x):
    """The W2 network: linear layers with tanh between them; ``x`` is one sample or a batch."""
    layers = params["layers"]
    for i, (W, b) in enumerate(layers):
        x = x @ W.T + b
        if i < len(layers) - 1:
            x = xp.tanh(x)
    return x


def linear_chain(xp, params, x, *factors):
    """``J_8 ... J_1 x`` for one sample: its Jacobian with respect to ``x`` is the chain."""
    for A in factors:
        x = A @ x
    return x


LINKS = (0.4, 0.35, 0.3, 0.2, 0.1, 0.05)
OFFSETS = (0.3, 0.2, 0.1, 0.05, 0.05, 0.02)


def kinematics(xp, params, q):
    """A 6-joint arm, kinematics-like: joint angles ``q (..., 6)`` to a tool position (3)
    and a unit quaternion (4). NumPy, complex-safe: a black box for numerical methods."""
    phi = xp.cumsum(q, -1)
    c, s = xp.cos(phi), xp.sin(phi)
    x = sum(L * c[..., i] for i, L in enumerate(LINKS))
    y = sum(L * s[..., i] for i, L in enumerate(LINKS))
    z = sum(h * xp.sin(q[..., i]) * xp.cos(q[..., (i + 1) % 6]) for i, h in enumerate(OFFSETS))
    a, b = phi[..., 5] / 2, (q[..., 1] + q[..., 3]) / 2
    ca, sa, cb, sb = xp.cos(a), xp.sin(a), xp.cos(b), xp.sin(b)
    return xp.stack([x, y, z, ca * cb, sa * cb, ca * sb, sa * sb], -1)


def elementwise_chain(xp, params, x):
    """W1: ``tanh(exp(x) x) + x``, an element-wise chain of depth 3 (a diagonal Jacobian)."""
    return xp.tanh(xp.exp(x) * x) + x


def newton_residual(xp, params, x):
    """``F(x) = A x + x^3 / 10``, a stiff-ish nonlinear system; ``J = A + diag(0.3 x^2)``."""
    return x @ params["A"].T + 0.1 * x**3


def tanh_layer(xp, params, x):
    """``tanh(W x + b) * x``, square ``W``: ``J = diag(t) + diag((1 - t^2) x) W``."""
    return xp.tanh(x @ params["W"].T + params["b"]) * x


# --------------------------------------------------------------------------------------
# Closed forms in plain NumPy: the NumPy peer, and in float64 the reference
# --------------------------------------------------------------------------------------


def elementwise_chain_derivative(params, x):
    e = np.exp(x)
    t = np.tanh(e * x)
    return (1 - t * t) * (e * x + e) + 1


def mlp_jacobian(params, x):
    """Forward pass for the tanh' diagonals, then the chain from the output side."""
    layers = params["layers"]
    slopes = []
    for W, b in layers[:-1]:
        x = np.tanh(x @ W.T + b)
        slopes.append(1 - x * x)
    J = layers[-1][0]
    for (W, _), d in zip(layers[-2::-1], slopes[::-1]):
        J = (J * d[:, None, :]) @ W
    return J


def chain_product(params, x, *factors):
    J = factors[0]
    for A in factors[1:]:
        J = A @ J
    return J


def complex_step(params, q, f=kinematics, h=1e-30):
    """The Jacobian of ``f`` by complex step, one column at a time, in plain NumPy."""
    columns = []
    for j in range(q.shape[1]):
        z = q.astype(np.result_type(q.dtype, np.complex64))
        z[:, j] += 1j * h
        columns.append(f(np, params, z).imag / h)
    return np.stack(columns, -1)


def newton_jacobian(params, x):
    J = np.broadcast_to(params["A"], (x.shape[0], *params["A"].shape)).copy()
    J.reshape(x.shape[0], -1)[:, :: x.shape[1] + 1] += 0.3 * x * x
    return J


def tanh_layer_jacobian(params, x):
    t = np.tanh(x @ params["W"].T + params["b"])
    J = ((1 - t * t) * x)[:, :, None] * params["W"]
    J.reshape(x.shape[0], -1)[:, :: x.shape[1] + 1] += t
    return J


# --------------------------------------------------------------------------------------
# Problems and workloads
# --------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One workload at one size. ``inputs``: the batched arguments of each rotation (NumPy);
    ``params``: shared arrays, a dict of arrays or lists of ``(W, b)``; ``batchjac(xp,
    params, *args)`` gives batchjac's Jacobian on the device; ``function(xp, params, *args)``
    is the per-sample function the peers differentiate with respect to its first argument;
    ``closed_form(params, *args)`` is the Jacobian in plain NumPy; ``bytes`` and ``flops``
    (multiply-adds) are the floors' work."""

    inputs: list
    params: dict
    batchjac: Callable
    function: Callable
    closed_form: Callable
    bytes: int
    flops: int = 0

    @property
    def batch(self):
        return self.inputs[0][0].shape[0]


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    dtype: str
    sizes: dict  # "tiny" | "quick" | "full" -> list of size dicts (a batch sweep)
    make: Callable  # (size, rng, rotations) -> Problem
    floor_kind: str  # "memory" | "write" | "compute"
    floor_text: str
    target: str
    checks: tuple  # (label, "floor" or a tuple of peer-name prefixes, limit on the ratio)
    why: str  # where batchjac's time goes, for a missed target
    peer_mode: str = "jacobian"  # or "elementwise" (W1: vmap of grad of sum)


def _normal(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _make_w1(size, rng, rotations):
    B, n = size["batch"], size["n"]
    inputs = [(_normal(rng, (B, n), np.float32),) for _ in range(rotations)]
    return Problem(
        inputs, {},
        lambda xp, params, x: bj.jacobian(
            lambda x: elementwise_chain(np, params, x), x, method="exact", structured=True
        ).diagonal(),
        elementwise_chain, elementwise_chain_derivative, bytes=3 * B * n * 4,
    )  # fmt: skip


def _make_w2(size, rng, rotations):
    B, widths = size["batch"], size["widths"]
    layers = [
        (_normal(rng, (m, n), np.float32, 1 / np.sqrt(n)), _normal(rng, (m,), np.float32, 0.1))
        for n, m in zip(widths[:-1], widths[1:])
    ]
    inputs = [(_normal(rng, (B, widths[0]), np.float32),) for _ in range(rotations)]
    factors = []  # the chain W_L D_{L-1} ... D_1 W_1 by structure, for the planner
    for i, (W, _) in enumerate(layers):
        if i:
            factors.append(bj.Diagonal(np.ones((B, W.shape[1]), np.float32)))
        factors.append(bj.Shared(W, B))
    plan = bj.chain_plan(*factors[::-1])
    return Problem(
        inputs, {"layers": layers},
        lambda xp, params, x: bj.jacobian(lambda x: mlp(bj, params, x), x, method="exact"),
        mlp, mlp_jacobian, bytes=B * widths[-1] * widths[0] * 4, flops=plan.flops,
    )  # fmt: skip


def _make_w3(size, rng, rotations):
    B, k, count = size["batch"], size["k"], size["factors"]
    inputs = [
        (
            _normal(rng, (B, k), np.float32),
            *(_normal(rng, (B, k, k), np.float32, 1 / np.sqrt(k)) for _ in range(count)),
        )
        for _ in range(rotations)
    ]
    plan = bj.chain_plan(*(bj.Dense(A) for A in inputs[0][:0:-1]))
    return Problem(
        inputs, {},
        lambda xp, params, x, *factors: bj.chain(*(bj.Dense(A) for A in factors[::-1])).to_dense(),
        linear_chain, chain_product, bytes=(count + 1) * B * k * k * 4, flops=plan.flops,
    )  # fmt: skip


def _make_w4(size, rng, rotations):
    B = size["batch"]
    inputs = [(rng.uniform(-np.pi, np.pi, (B, 6)),) for _ in range(rotations)]
    return Problem(
        inputs, {},
        lambda xp, params, q: bj.jacobian(lambda q: kinematics(np, params, q), q, method="exact"),
        kinematics, complex_step, bytes=B * (6 + 7 * 6) * 8,
    )  # fmt: skip


def _make_w5(size, rng, rotations):
    B, n = size["batch"], size["n"]
    A = np.eye(n) * 4 + rng.standard_normal((n, n)) / np.sqrt(n)
    inputs = [(rng.standard_normal((B, n)),) for _ in range(rotations)]
    return Problem(
        inputs, {"A": A},
        lambda xp, params, x: bj.jacobian(lambda x: newton_residual(bj, params, x), x, method="exact"),
        newton_residual, newton_jacobian, bytes=B * n * n * 8,
    )  # fmt: skip


def _make_w6(size, rng, rotations):
    B, n, chunk = size["batch"], size["n"], size["chunk"]
    params = {"W": _normal(rng, (n, n), np.float32, 1 / np.sqrt(n)), "b": _normal(rng, (n,), np.float32, 0.1)}
    inputs = [(_normal(rng, (B, n), np.float32),) for _ in range(rotations)]
    return Problem(
        inputs, params,
        lambda xp, params, x: bj.jacobian(
            lambda x: tanh_layer(xp, params, x), x, method="complex-step", chunk_size=chunk
        ),
        tanh_layer, tanh_layer_jacobian, bytes=B * n * n * 4, flops=4 * B * n * n * n,
    )  # fmt: skip


def _sweep(**fixed):
    return lambda *batches: [{"batch": b, **fixed} for b in batches]


MLP_FULL = (784, 1024, 1024, 1024, 10)

WORKLOADS = {
    w.key: w
    for w in (
        Workload(
            "W1", "element-wise chain of depth 3, tanh(exp(x) x) + x: value and diagonal Jacobian", "float32",
            {"tiny": _sweep(n=32)(64), "quick": _sweep(n=1024)(4096), "full": _sweep(n=4096)(16384)},
            _make_w1, "memory",
            "x read, the value and the diagonal written (12 bytes an element) over the copy bandwidth; "
            "the peers' trick writes only the derivative (8 bytes)",
            "within 1.3x of the memory floor, and as fast as JAX's element-wise trick",
            (("1.3x the memory floor", "floor", 1.3), ("as fast as JAX's element-wise trick", ("jax.",), 1.0)),
            "traced into a program of 4 element-wise primitives; one fused kernel (a flat loop, value and "
            "derivative in registers) when the engine fuses, else one pass per primitive and a product of "
            "diagonals per step",
            peer_mode="elementwise",
        ),
        Workload(
            "W2", "MLP input Jacobian, tanh", "float32",
            {"tiny": _sweep(widths=(16, 32, 32, 32, 4))(8), "quick": _sweep(widths=MLP_FULL)(16),
             "full": _sweep(widths=MLP_FULL)(4096)},
            _make_w2, "compute",
            "multiply-adds of the optimal plan of bj.chain_plan (forward pass not counted) over the float32 matmul rate",
            "at least 1.3x faster than the better of JAX's jacfwd and jacrev; within 1.3x of the floor",
            (("1.3x faster than best of jax.jacfwd/jacrev", ("jax.jacfwd", "jax.jacrev"), 1 / 1.3), ("within 1.3x of the floor", "floor", 1.3)),
            "tracing in Python, the forward pass and the chain products (B m n scalings of tanh' plus one "
            "GEMM per layer in reverse order)",
        ),
        Workload(
            "W3", "per-sample dense chain J_8 ... J_1 of 64 x 64 factors", "float32",
            {"tiny": _sweep(k=8, factors=8)(8), "quick": _sweep(k=64, factors=8)(1024),
             "full": _sweep(k=64, factors=8)(16384)},
            _make_w3, "memory",
            "8 factors read and 1 product written over the copy bandwidth (the compute floor, plan flops "
            "over the matmul rate, is in the JSON)",
            "within 1.5x of the memory floor",
            (("within 1.5x of the memory floor", "floor", 1.5),),
            "7 batched 64 x 64 products, each writing its intermediate (B k^2) and reading two; batched "
            "small GEMMs run well below the large-matmul rate",
        ),
        Workload(
            "W4", "many tiny Jacobians: 6-input, 7-output kinematics (traced)", "float64",
            {"tiny": _sweep()(100), "quick": _sweep()(1_000, 10_000, 100_000),
             "full": _sweep()(1_000, 10_000, 100_000, 1_000_000)},
            _make_w4, "memory",
            "q read and J (42 numbers a sample) written, float64, over the copy bandwidth",
            "at most half the time of jax.jit(jax.vmap(jax.jacfwd))",
            (("0.5x jax.jacfwd", ("jax.jacfwd",), 0.5),),
            "traced into ~100 primitives on (B,)-sized arrays; one fused kernel (value and the 42 "
            "tangent entries per sample in registers) when the engine fuses, else one NumPy pass and a "
            "structured local Jacobian per primitive",
        ),
        Workload(
            "W5", "Newton-style float64 Jacobians, 54 x 54, F(x) = A x + x^3/10", "float64",
            {"tiny": _sweep(n=6)(16), "quick": _sweep(n=54)(4096), "full": _sweep(n=54)(131072)},
            _make_w5, "write",
            "the output Jacobian's bytes over the copy bandwidth",
            "within 1.5x of the output-write floor",
            (("within 1.5x of the output-write floor", "floor", 1.5),),
            "traced; one fused kernel copies A into each sample's Jacobian by a loop and adds the diagonal "
            "when the engine fuses, else Shared + Diagonal assembled as a dense (B, n, n): a broadcast copy "
            "of A and a strided diagonal add; fresh output pages are faulted in by every runner",
        ),
        Workload(
            "W6", "large output m = n = 2048, chunked complex step of tanh(W x + b) * x", "float32",
            {"tiny": _sweep(n=16, chunk=4)(4), "quick": _sweep(n=1024, chunk=256)(8),
             "full": _sweep(n=2048, chunk=512)(256)},
            _make_w6, "write",
            "the output Jacobian's bytes over the copy bandwidth (the compute floor of the complex step, "
            "4 B n^3 real multiply-adds, is in the JSON)",
            "within 1.5x of the output-write floor; fits in device memory by chunking",
            (("within 1.5x of the output-write floor", "floor", 1.5),),
            "a numerical method costs n evaluations of f, each a (B, n) @ (n, n) complex product: "
            "O(B n^3) work for an O(B n^2) output; the floor counts the output only",
        ),
    )
}  # fmt: skip
