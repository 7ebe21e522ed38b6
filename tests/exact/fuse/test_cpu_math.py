"""The vectorisable float32 exp and tanh of the fused CPU kernels: ulp accuracy (exp 1 ulp,
tanh 6 ulp: see batchjac.exact.fuse.cpu_math) and IEEE edges."""

from __future__ import annotations

import numpy as np
from numba import njit

from batchjac.exact.fuse.cpu_math import exp_f32, tanh_f32


@njit
def _apply_exp(x, out):
    for i in range(x.size):
        out[i] = exp_f32(x[i])


@njit
def _apply_tanh(x, out):
    for i in range(x.size):
        out[i] = tanh_f32(x[i])


def _ulps(result, x, function):
    exact = function(x.astype(np.float64))
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(result.astype(np.float64) - exact) / spacing


def _grid():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(-1, 1, 50_000), rng.uniform(-20, 20, 50_000), rng.uniform(-104, 89, 50_000),
                           np.geomspace(1e-30, 1.0, 2_000), -np.geomspace(1e-30, 1.0, 2_000)]).astype(np.float32)  # fmt: skip


def test_exp_within_one_ulp():
    x = _grid()
    x = x[(x > -87.0) & (x < 88.7)]  # normal results
    out = np.empty_like(x)
    _apply_exp(x, out)
    assert _ulps(out, x, np.exp).max() <= 1.0


def test_tanh_within_six_ulps():
    x = _grid()
    x = x[np.abs(x) > 1e-37]
    out = np.empty_like(x)
    _apply_tanh(x, out)
    assert _ulps(out, x, np.tanh).max() <= 6.0
    relative = np.abs(out.astype(np.float64) / np.tanh(x.astype(np.float64)) - 1)
    assert relative.max() <= 4e-7


def test_edges():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 88.72283, 88.7229, -103.9, -104.0, 1e-45, 10.0, -10.0],
                 dtype=np.float32)  # fmt: skip
    out = np.empty_like(x)
    _apply_exp(x, out)
    with np.errstate(over="ignore"):
        expected = np.exp(x.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    assert (
        out[0] == np.inf and out[1] == 0.0 and out[3] == out[4] == 1.0 and out[6] == np.inf and out[8] == 0.0
    )
    assert np.isfinite(out[5]) and 0 < out[7] < 1e-44  # gradual underflow
    _apply_tanh(x, out)
    assert out[0] == 1.0 and out[1] == -1.0 and np.isnan(out[2])
    assert (
        out[3] == 0.0 and np.signbit(out[4]) and out[10] == np.float32(np.tanh(10.0)) and out[11] == -out[10]
    )
    assert out[9] == x[9]
