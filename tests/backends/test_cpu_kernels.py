"""The compiled CPU kernels of the NumPy backend give NumPy's numbers bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj
from batchjac.backends import cpu_kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [0, 1, 7])
def test_batched_outer_equals_broadcasting(rng, monkeypatch, dtype, batch):
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ENTRIES", 0)  # the kernel at any size
    a = rng.standard_normal((batch, 9)).astype(dtype)
    b = rng.standard_normal((batch, 2, 5)).astype(dtype)[:, 1, :]  # a strided view
    b.flags.writeable = False
    before = b.copy()
    out = cpu_kernels.batched_outer(a, b)
    assert out.dtype == dtype and out.shape == (batch, 9, 5)
    np.testing.assert_array_equal(out, a[:, :, None] * b[:, None, :])
    np.testing.assert_array_equal(b, before)


def test_batched_outer_promotes_like_numpy(rng, monkeypatch):
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ENTRIES", 0)
    a, b = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((3, 2))
    out = cpu_kernels.batched_outer(a, b)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, a[:, :, None] * b[:, None, :])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_weight_gradients_through_the_kernel(rng, monkeypatch, dtype):
    """The weight gradient of a per-sample loss is ``g x^T`` per sample (the kernel's case)."""
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ENTRIES", 0)
    B, W = 6, rng.standard_normal((3, 4)).astype(dtype)
    x = rng.standard_normal((B, 4)).astype(dtype)
    grads = bj.jacobian(lambda x, W: np.sum(np.tanh(W @ x)), x, W, argnums=1, per_sample=True, in_axes=(0, None))
    x64 = x.astype(np.float64)
    g = 1 - np.tanh(x64 @ W.astype(np.float64).T) ** 2
    expected = g[:, :, None] * x64[:, None, :]
    np.testing.assert_allclose(grads, expected, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6 if dtype == np.float32 else 0)


_CONCURRENT = """
import threading, numpy as np, numba
from batchjac.backends import cpu_kernels
cpu_kernels.PARALLEL_ENTRIES = 0
a, b = np.arange(2000.0).reshape(200, 10), np.arange(3000.0).reshape(200, 15)
expected = a[:, :, None] * b[:, None, :]
failures = []
def work():
    for _ in range(20):
        if not np.array_equal(cpu_kernels.batched_outer(a, b), expected):
            failures.append(1)
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(numba.threading_layer(), len(failures))
"""


@pytest.mark.parametrize("layer", ["workqueue", "default"])
def test_parallel_kernels_launched_from_several_threads(layer):
    """numba's workqueue layer aborts the process on concurrent launches unless they are
    serialised; every layer gives the right numbers."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    done = subprocess.run([sys.executable, "-c", _CONCURRENT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found, failures = done.stdout.split()
    assert failures == "0"
    if layer != "default":
        assert found == layer


def test_the_pool_reuses_a_buffer_only_once_the_caller_dropped_it(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_POOL", [])
    shape = (1024, 1024)  # 8 MB in float64: pooled
    a = cpu_kernels.pooled_empty(shape, np.float64)
    a[...] = 1.0
    view = a[3]  # the caller keeps a view: the buffer stays theirs
    del a
    b = cpu_kernels.pooled_empty(shape, np.float64)
    assert not np.shares_memory(b, view)
    b[...] = 2.0
    assert (view == 1.0).all()
    address = b.__array_interface__["data"][0]
    del b
    c = cpu_kernels.pooled_empty(shape, np.float64)  # dropped: reused
    assert c.__array_interface__["data"][0] == address


def test_the_pool_never_keeps_a_buffer_above_its_limit(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_POOL", [])
    monkeypatch.setattr(cpu_kernels, "POOL_MAXIMUM_BYTES", 16 << 20)
    big = cpu_kernels.pooled_empty((3, 1024, 1024), np.float64)  # 24 MB
    assert big.shape == (3, 1024, 1024) and cpu_kernels._POOL == []
    small = cpu_kernels.pooled_empty((1024, 1024), np.float32)
    assert small.dtype == np.float32 and len(cpu_kernels._POOL) == 1
