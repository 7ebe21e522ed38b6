"""Programs covering every primitive the fused compiler supports, shared by the CPU tests,
the CUDA-simulator tests and the benchmarks' smoke checks.

Each :class:`Case` is a function of a batch (written with NumPy and batchjac's functions,
so that it traces and also runs eagerly on plain arrays, which gives the independent
reference by complex step or central differences), the per-sample shape of its input and
the interval its entries are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import batchjac as bj
from batchjac.core.elementwise_rules import UNARY
from batchjac.exact import lax

_PARAMETERS = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7}, "power": {"p": 3.0}}
_SHIFTED = {"arccosh": 1.5}  # arccosh needs x > 1
_SIGNED = {"relu", "leaky_relu", "elu", "abs", "sign", "floor", "ceil", "round"}  # probe both sides of 0


def _unary(name, x):
    if name in _SHIFTED:
        x = x + _SHIFTED[name]
    elif name in _SIGNED:
        x = x - 0.5
    return lax.apply(name, x, **_PARAMETERS.get(name, {}))


def every_unary_rule(x):
    """Every unary rule (parameters included) on the entries of ``x`` in (0.2, 0.8)."""
    return np.concatenate([_unary(name, x) for name in sorted(UNARY)], axis=-1)


def every_binary_rule(x):
    u, v = x[:, :3], x[:, 3:]
    names = ("add", "sub", "mul", "div", "maximum", "minimum", "arctan2", "hypot", "logaddexp", "pow")
    return np.concatenate([lax.apply(name, u, v) for name in names], axis=-1)


def elementwise_sum_of_rules(x):
    """An element-wise program (flat loop, diagonal Jacobian) using every smooth unary rule."""
    total = 0.0 * x
    for name in sorted(UNARY):
        if name not in ("sign", "floor", "ceil", "round"):
            total = total + _unary(name, x)
    return total


W = np.random.default_rng(7).standard_normal((4, 6))
ROW = np.random.default_rng(8).standard_normal(6)


@dataclass(frozen=True)
class Case:
    name: str
    f: Callable
    shape: tuple  # per sample
    low: float = -1.0
    high: float = 1.0
    complex_safe: bool = False
    mode: str | None = None  # the fused mode expected ("forward", "reverse", "elementwise")
    tags: tuple = field(default_factory=tuple)


CASES = [
    Case("unary rules", every_unary_rule, (3,), 0.2, 0.8),
    Case("binary rules", every_binary_rule, (6,), 0.5, 1.5),
    Case("element-wise rules, flat", elementwise_sum_of_rules, (4,), 0.2, 0.8, mode="elementwise"),
    Case("element-wise chain (W1)", lambda x: np.tanh(np.exp(x) * x) + x, (5,), complex_safe=True, mode="elementwise"),
    Case("element-wise with constants", lambda x: np.sin(x * ROW + 2.0) / (1.5 + x * x), (6,), complex_safe=True,
         mode="elementwise"),
    Case("select, comparisons, logic",
         lambda x: np.where(np.logical_and(x > -0.5, np.isfinite(x)) | (x <= -0.9), x * x, np.sin(x))
         + np.where(np.logical_not(np.isnan(x)) ^ (x == 0.3), 1.0, 0.0) * x
         + np.where((x >= 0.2) & (x < 0.7) & ~np.isinf(x) & (x != 0.25), x, -x),
         (5,)),
    Case("convert", lambda x: ((x.astype(np.float32) * 2).astype(np.float64) + (x > 0).astype(np.float64)) * x,
         (4,)),
    Case("transpose, reshape", lambda x: np.sin(x.reshape(-1, 2, 3).transpose(0, 2, 1)).reshape(x.shape[0], -1) * x,
         (6,), complex_safe=True),
    Case("indexing", lambda x: x[:, [0, 2, 2]] * x[:, 1:4] + x[:, np.array([True, False, True, False, True, True])][:, :3] ** 2,
         (6,), complex_safe=True),
    Case("broadcast_to, tile, repeat",
         lambda x: np.broadcast_to(x[:, None, :2], (x.shape[0], 3, 2)).reshape(x.shape[0], -1)
         * np.tile(x[:, :2], (1, 3)) + np.repeat(x[:, 2:4], 3, axis=-1),
         (4,), complex_safe=True),
    Case("flip, roll, diagonal, pad",
         lambda x: np.concatenate([np.roll(np.flip(x, -1), 1, -1) * x,
                                   np.diagonal(x.reshape(-1, 2, 2), axis1=1, axis2=2),
                                   np.pad(x, ((0, 0), (1, 2))) * 2.0], axis=-1),
         (4,), complex_safe=True),
    Case("gather, scatter_add",
         lambda x: lax.scatter_add(lax.gather(x, np.array([2, 0, 2, 1])), np.array([1, 1, 0, 3]), (4,)) * np.cos(x),
         (3,), complex_safe=True),
    Case("concatenate, stack",
         lambda x: np.stack([np.sum(np.cos(np.cumsum(x, axis=-1)), axis=-1), np.sin(x[:, 0])], axis=-1),
         (6,), complex_safe=True),
    Case("reductions", lambda x: np.concatenate([
        np.sum(x.reshape(-1, 2, 3) ** 2, axis=1), np.mean(x.reshape(-1, 2, 3), axis=2),
        np.max(x.reshape(-1, 2, 3), axis=2), np.min(x.reshape(-1, 2, 3), axis=(1, 2))[:, None],
        np.prod(x.reshape(-1, 3, 2), axis=-1), bj.logsumexp(x.reshape(-1, 2, 3), axis=-1)], axis=-1),
         (6,)),
    Case("cumsum along both axes",
         lambda x: np.cumsum(np.cumsum(x.reshape(-1, 2, 3), axis=1), axis=2).reshape(x.shape[0], -1) * x, (6,),
         complex_safe=True),
    Case("argmax, argmin", lambda x: x * (np.argmax(x, axis=-1) - np.argmin(x, axis=-1))[:, None], (4,)),
    Case("matmul with a constant", lambda x: np.tanh(x @ W.T) @ W, (6,), complex_safe=True),
    Case("matmul of traced operands",
         lambda x: (x.reshape(-1, 2, 2) @ x.reshape(-1, 2, 2)).reshape(x.shape[0], -1) + x @ x[:, ::-1, None] * x,
         (4,), complex_safe=True),
    Case("matmul, 1-D operands and stacks",
         lambda x: np.concatenate([x[:, :3] @ x[:, 3:], (x.reshape(-1, 2, 3) @ x[:, :3]).reshape(x.shape[0], -1)],
                                  axis=-1),
         (6,), complex_safe=True),
    Case("einsum", lambda x: np.concatenate([
        np.einsum("bij,bjk->bik", x.reshape(-1, 2, 2), x.reshape(-1, 2, 2)).reshape(x.shape[0], -1),
        np.einsum("bii->bi", x.reshape(-1, 2, 2)), np.einsum("bi,bj->bij", x[:, :2], x[:, 2:]).reshape(x.shape[0], -1)],
        axis=-1), (4,), complex_safe=True),
    Case("softmax, log_softmax", lambda x: np.concatenate([
        bj.softmax(x.reshape(-1, 2, 3), axis=-1).reshape(x.shape[0], -1),
        bj.log_softmax(x.reshape(-1, 2, 3), axis=1).reshape(x.shape[0], -1)], axis=-1), (6,), complex_safe=True),
    Case("det, slogdet", lambda x: np.stack([
        np.linalg.det(x[:, :4].reshape(-1, 2, 2)), np.linalg.det(x[:, :9].reshape(-1, 3, 3)),
        np.linalg.slogdet(x[:, :9].reshape(-1, 3, 3))[1], np.linalg.slogdet(x[:, :9].reshape(-1, 3, 3))[0] * x[:, 0],
        np.linalg.det(x.reshape(-1, 4, 4))], axis=-1), (16,)),
    Case("inv", lambda x: np.linalg.inv(x.reshape(-1, 3, 3) + 3 * np.eye(3)).reshape(x.shape[0], -1), (9,),
         complex_safe=True),
    Case("solve", lambda x: np.concatenate([
        np.linalg.solve(x[:, :9].reshape(-1, 3, 3) + 3 * np.eye(3), x[:, 9:12, None])[..., 0],
        np.linalg.solve(x[:, :9].reshape(-1, 3, 3) + 3 * np.eye(3), x[:, 9:15].reshape(-1, 3, 2)).reshape(x.shape[0], -1)],
        axis=-1), (15,), complex_safe=True),
    Case("one output, reverse mode", lambda x: np.sum(np.sin(np.cumsum(x, axis=-1)) * x, axis=-1), (6,),
         complex_safe=True, mode="reverse"),
]  # fmt: skip

BY_NAME = {case.name: case for case in CASES}


def sample(case: Case, batch: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(case.low, case.high, (batch, *case.shape)).astype(dtype)


def reference_jacobian(f, x: np.ndarray, complex_safe: bool) -> np.ndarray:
    """``(B, m, n)`` in float64 by complex step (exact to rounding) or central differences."""
    x = np.asarray(x, dtype=np.float64)
    batch, n = x.shape[0], int(np.prod(x.shape[1:]))
    columns = []
    for j in range(n):
        step = np.zeros((batch, n))
        if complex_safe:
            step[:, j] = 1e-30
            out = np.asarray(f(x + 1j * step.reshape(x.shape))).imag / 1e-30
        else:
            step[:, j] = 1e-6
            out = (np.asarray(f(x + step.reshape(x.shape))) - np.asarray(f(x - step.reshape(x.shape)))) / 2e-6
        columns.append(out.reshape(batch, -1))
    return np.stack(columns, axis=-1)


def fused_and_chain(f, args, *, argnums=0, per_sample=False, in_axes=None, backend=None):
    """``(fused value, fused J (dense), chain value, chain J (dense), decision)`` of ``f``
    traced as ``bj.jacobian`` traces it (the Jacobian w.r.t. every program input)."""
    from batchjac.exact.capture import capture
    from batchjac.exact.fuse import fused_value_and_jacobians
    from batchjac.exact.interpret.jacobian import value_and_jacobians

    argnums = argnums if isinstance(argnums, tuple) else (argnums,)
    captured = capture(f, args, {}, argnums, per_sample=per_sample, in_axes=in_axes)
    program, batch, inputs = captured.program, captured.batch, list(captured.leaves)
    value, jacobians, decision = fused_value_and_jacobians(
        program, inputs, program.const_values, program.inputs, batch, backend=backend
    )
    chain_value, chain_jacobians, _ = value_and_jacobians(program, inputs, program.const_values, program.inputs, batch)
    dense = [np.asarray(J.to_dense()) for J in jacobians]
    chain_dense = [np.asarray(J.to_dense()) for J in chain_jacobians]
    return np.asarray(value), dense, np.asarray(chain_value), chain_dense, decision


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))) / max(1.0, float(np.nanmax(np.abs(b)))))
