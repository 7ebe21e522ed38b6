"""Programs covering every primitive the fused compiler supports, shared by the CPU tests,
the CUDA-simulator tests and the benchmarks' smoke checks.

Each :class:`Case` is a function of a batch (written with NumPy and batchjac's functions,
so that it traces and also runs eagerly on plain arrays, which gives the independent
reference by complex step or central differences), the per-sample shape of its input and
the interval its entries are drawn from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import batchjac as bj
from batchjac.core.elementwise_rules import UNARY
from batchjac.exact import lax

# the rules batchjac defines (tests elsewhere register rules of their own, in the same table)
BUILT_IN_UNARY = sorted(name for name, found in UNARY.items() if not found.user)
_PARAMETERS = {"leaky_relu": {"alpha": 0.2}, "elu": {"alpha": 0.7}, "power": {"p": 3.0}}
_SHIFTED = {"arccosh": 1.5}  # arccosh needs x > 1
_SIGNED = {"relu", "leaky_relu", "elu", "abs", "sign", "floor", "ceil", "round"}  # probe both sides of 0


def _unary(name, x):
    if name in _SHIFTED:
        x = x + _SHIFTED[name]
    elif name in _SIGNED:
        x = x - 0.5
    return lax.apply(name, x, **_PARAMETERS.get(name, {}))


BINARY_RULES = ("add", "sub", "mul", "div", "maximum", "minimum", "arctan2", "hypot", "logaddexp", "pow")
PIECEWISE = (
    "sign",
    "floor",
    "ceil",
    "round",
    "relu",
    "leaky_relu",
    "elu",
    "abs",
    "power",
    "sigmoid",
    "softplus",
)


def piecewise_unary_rules(x):
    """The piecewise and parametrised unary rules, per sample (entries in (0.2, 0.8))."""
    return np.concatenate([_unary(name, x) for name in PIECEWISE], axis=-1)


def binary_rules_broadcast(x):
    """Every binary rule of a (3,) operand and a (1,) one broadcast against it."""
    u, v = x[:, :3], x[:, 3:]
    return np.concatenate([lax.apply(name, u, v) for name in BINARY_RULES], axis=-1)


def elementwise_unary_rules(x):
    """Every unary rule in one element-wise program (a flat loop, a diagonal Jacobian)."""
    total = 0.0 * x
    for name in BUILT_IN_UNARY:
        total = total + _unary(name, x)
    return total


def elementwise_binary_rules(x):
    total = 0.0 * x
    for name in BINARY_RULES:
        total = total + lax.apply(name, x, 0.5 * x + 1.0) + lax.apply(name, 1.3 - 0.5 * x, x)
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
    per_sample: bool = False  # f is written for one sample (traced with per_sample=True)
    closed_form: Callable | None = None  # x (B, *shape) -> J (B, m, n), else a numerical reference


def _convert_jacobian(x):
    # float32 rounding inside f is invisible to differences; astype between floating dtypes
    # has derivative 1, to bool 0: J = diag(2 x + 2 round32(x) + [x > 0])
    rounded = x.astype(np.float32).astype(x.dtype)
    return np.einsum("bi,ij->bij", 2 * x + 2 * rounded + (x > 0), np.eye(x.shape[1]))


def _eye(x):
    return np.eye(3, dtype=x.dtype)


CASES = [
    Case("unary rules, element-wise", elementwise_unary_rules, (4,), 0.2, 0.8, mode="elementwise"),
    Case("binary rules, element-wise", elementwise_binary_rules, (4,), 0.5, 1.5, mode="elementwise"),
    Case("piecewise unary rules", piecewise_unary_rules, (3,), 0.2, 0.8),
    Case("binary rules, broadcast", binary_rules_broadcast, (4,), 0.5, 1.5),
    Case("element-wise chain (W1)", lambda x: np.tanh(np.exp(x) * x) + x, (5,), complex_safe=True, mode="elementwise"),
    Case("element-wise with constants", lambda x: np.sin(x * ROW.astype(x.dtype) + 2.0) / (1.5 + x * x), (6,),
         complex_safe=True, mode="elementwise"),
    Case("select, comparisons, logic",
         lambda x: np.where(np.logical_and(x > -0.5, np.isfinite(x)) | (x <= -0.9), x * x, np.sin(x))
         + np.where(np.logical_not(np.isnan(x)) ^ (x == 0.3), x, 0.0 * x) * x
         + np.where((x >= 0.2) & (x < 0.7) & ~np.isinf(x) & (x != 0.25), x, -x),
         (5,)),
    Case("convert", lambda x: ((x.astype(np.float32) * 2).astype(x.dtype) + (x > 0).astype(x.dtype)) * x, (4,),
         closed_form=_convert_jacobian),
    Case("transpose, reshape",
         lambda x: np.sin(x.reshape(x.shape[0], 2, 3).transpose(0, 2, 1)).reshape(x.shape[0], 6) * x,
         (6,), complex_safe=True),
    Case("indexing", lambda x: x[:, [0, 2, 2]] * x[:, 1:4] + x[:, np.array([True, False, True, False, True, True])][:, :3] ** 2,
         (6,), complex_safe=True),
    Case("broadcast_to, tile, repeat",
         lambda x: np.broadcast_to(x[:, None, :2], (x.shape[0], 3, 2)).reshape(x.shape[0], 6)
         * np.tile(x[:, :2], (1, 3)) + np.repeat(x[:, 2:4], 3, axis=-1),
         (4,), complex_safe=True),
    Case("flip, roll, diagonal, pad",
         lambda x: np.concatenate([np.roll(np.flip(x, -1), 1, -1) * x,
                                   np.diagonal(x.reshape(x.shape[0], 2, 2), axis1=1, axis2=2),
                                   np.pad(x, ((0, 0), (1, 2))) * 2.0], axis=-1),
         (4,), complex_safe=True),
    Case("gather, scatter_add",
         lambda x: lax.scatter_add(lax.gather(x, np.array([2, 0, 2, 1])), np.array([1, 1, 0, 2]), (3,)) * np.cos(x),
         (3,), complex_safe=True, per_sample=True),
    Case("concatenate, stack",
         lambda x: np.stack([np.sum(np.cos(np.cumsum(x, axis=-1)), axis=-1), np.sin(x[:, 0])], axis=-1),
         (6,), complex_safe=True),
    Case("reductions", lambda x: np.concatenate([
        np.sum(x.reshape(x.shape[0], 2, 3) ** 2, axis=1), np.mean(x.reshape(x.shape[0], 2, 3), axis=2),
        np.max(x.reshape(x.shape[0], 2, 3), axis=2), np.min(x.reshape(x.shape[0], 2, 3), axis=(1, 2))[:, None],
        np.prod(x.reshape(x.shape[0], 3, 2), axis=-1), bj.logsumexp(x.reshape(x.shape[0], 2, 3), axis=-1)], axis=-1),
         (6,)),
    Case("cumsum along both axes",
         lambda x: np.cumsum(np.cumsum(x.reshape(x.shape[0], 2, 3), axis=1), axis=2).reshape(x.shape[0], 6) * x,
         (6,), complex_safe=True),
    Case("argmax, argmin",
         lambda x: x * (np.argmax(x, axis=-1) - np.argmin(x, axis=-1))[:, None].astype(x.dtype), (4,)),
    Case("matmul with a constant", lambda x: np.tanh(x @ W.T.astype(x.dtype)) @ W.astype(x.dtype), (6,),
         complex_safe=True),
    Case("matmul of traced operands",
         lambda x: np.concatenate([(x[:4].reshape(2, 2) @ x[:4].reshape(2, 2)).ravel(), (x[:4] @ x[2:]).reshape(1),
                                   x[:3] @ x[3:].reshape(3, 1), x.reshape(2, 3) @ x[:3]]),
         (6,), complex_safe=True, per_sample=True),
    Case("matmul of stacks", lambda x: (x.reshape(x.shape[0], 2, 2, 2) @ x.reshape(x.shape[0], 2, 2, 2)[:, :1]).reshape(
        x.shape[0], 8), (8,), complex_safe=True),
    Case("einsum", lambda x: np.concatenate([
        np.einsum("bij,bjk->bik", x.reshape(x.shape[0], 2, 2), x.reshape(x.shape[0], 2, 2)).reshape(x.shape[0], 4),
        np.einsum("bii->bi", x.reshape(x.shape[0], 2, 2)),
        np.einsum("bi,bj->bij", x[:, :2], x[:, 2:]).reshape(x.shape[0], 4)], axis=-1), (4,), complex_safe=True),
    Case("softmax, log_softmax", lambda x: np.concatenate([
        bj.softmax(x.reshape(x.shape[0], 2, 3), axis=-1).reshape(x.shape[0], 6),
        bj.log_softmax(x.reshape(x.shape[0], 2, 3), axis=1).reshape(x.shape[0], 6)], axis=-1), (6,)),
    Case("det, slogdet", lambda x: np.stack([
        np.linalg.det(x[:, :4].reshape(x.shape[0], 2, 2)), np.linalg.det(x[:, :9].reshape(x.shape[0], 3, 3)),
        np.linalg.slogdet(x[:, :9].reshape(x.shape[0], 3, 3))[1],
        np.linalg.slogdet(x[:, :9].reshape(x.shape[0], 3, 3))[0] * x[:, 0],
        np.linalg.det(x.reshape(x.shape[0], 4, 4))], axis=-1), (16,)),
    Case("inv", lambda x: np.linalg.inv(x.reshape(x.shape[0], 3, 3) + 3 * _eye(x)).reshape(x.shape[0], 9), (9,),
         complex_safe=True),
    Case("solve", lambda x: np.concatenate([
        np.linalg.solve(x[:, :9].reshape(x.shape[0], 3, 3) + 3 * _eye(x), x[:, 9:12, None])[..., 0],
        np.linalg.solve(x[:, :9].reshape(x.shape[0], 3, 3) + 3 * _eye(x), x[:, 9:15].reshape(x.shape[0], 3, 2)
                        ).reshape(x.shape[0], 6)], axis=-1), (15,), complex_safe=True),
    Case("one output, reverse mode", lambda x: np.sum(np.sin(np.cumsum(x, axis=-1)) * x, axis=-1), (6,),
         complex_safe=True, mode="reverse"),
]  # fmt: skip

BY_NAME = {case.name: case for case in CASES}


def sample(case: Case, batch: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(case.low, case.high, (batch, *case.shape)).astype(dtype)


def reference_jacobian(case: Case, x: np.ndarray) -> np.ndarray:
    """``(B, m, n)`` in float64: the case's closed form, or complex step (exact to rounding),
    or central differences."""
    x = np.asarray(x, dtype=np.float64)
    if case.closed_form is not None:
        return case.closed_form(x)
    complex_safe = case.complex_safe
    f = (lambda x: np.stack([case.f(sample) for sample in x])) if case.per_sample else case.f
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
    chain_value, chain_jacobians, _ = value_and_jacobians(
        program, inputs, program.const_values, program.inputs, batch
    )
    dense = [np.asarray(J.to_dense()) for J in jacobians]
    chain_dense = [np.asarray(J.to_dense()) for J in chain_jacobians]
    return np.asarray(value), dense, np.asarray(chain_value), chain_dense, decision


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    both_nan = np.isnan(a) & np.isnan(b)
    return float(np.max(np.where(both_nan, 0.0, np.abs(a - b))) / max(1.0, float(np.nanmax(np.abs(b)))))
