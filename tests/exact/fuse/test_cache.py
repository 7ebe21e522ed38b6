"""Fused kernels are cached in memory and on disk (under $BATCHJAC_CACHE_DIR/kernels), keyed by
structure: a new process imports the module and numba loads the machine code without compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from batchjac.exact.capture import capture
from batchjac.exact.fuse import cache, fused_value_and_jacobians
from batchjac.exact.fuse.plan import lowered


def _run(f, x):
    captured = capture(f, (x,), {}, (0,))
    program = captured.program
    value, (J,), _ = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, x.shape[0])
    return program, value, J.to_dense()


def test_memory_and_disk_cache_with_other_weights(kernel_cache):
    """Other weights and literals: the same kernel object, the same file, never rewritten."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    folder = kernel_cache / "kernels"
    kernels = []
    for scale in (1.5, -2.0):
        weight = np.full((4, 2), scale)
        program, _, J = _run(lambda x: np.cos(x @ weight) * scale + 1.0, x)
        np.testing.assert_allclose(J, -scale * np.sin(x @ weight)[:, :, None] * weight.T[None], rtol=1e-14)
        key = cache.kernel_key(program.hash, (0,), lowered(program, program.inputs).mode, "cpu", "float64")
        kernels.append(cache._KERNELS[(key, str(cache.kernel_path(key)))])
        if scale == 1.5:
            path = kernels[0].path
            stamp = os.stat(path).st_mtime_ns
    assert kernels[0] is kernels[1] and path.parent == folder and path.name.startswith("fused_")
    assert os.stat(path).st_mtime_ns == stamp
    cache.clear_memory()
    _run(lambda x: np.cos(x @ np.ones((4, 2))) * 3.0 + 1.0, x)  # from disk: the file is not rewritten
    assert os.stat(path).st_mtime_ns == stamp


_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from batchjac.exact.capture import capture
    from batchjac.exact.fuse import fused_value_and_jacobians
    from batchjac.exact.fuse.cache import _KERNELS

    q = np.linspace(-1.0, 1.0, 60).reshape(10, 6)
    f = lambda q: np.stack([np.sum(np.cos(np.cumsum(q, axis=-1)), axis=-1), np.sin(q[:, 1]) * q[:, 4]], axis=-1)
    start = time.perf_counter()
    captured = capture(f, (q,), {}, (0,))
    program = captured.program
    value, (J,), _ = fused_value_and_jacobians(program, [q], program.const_values, program.inputs, 10)
    seconds = time.perf_counter() - start
    (kernel,) = _KERNELS.values()
    stats = [f.stats for f in (kernel.function, kernel.serial)]  # B = 10: the serial kernel runs
    hits = sum(sum(s.cache_hits.values()) for s in stats)
    misses = sum(sum(s.cache_misses.values()) for s in stats)
    print(json.dumps({"hits": hits, "misses": misses,
                      "J": J.to_dense().tolist(), "seconds": seconds}))
    """
)


def test_a_new_process_reuses_the_disk_cache(tmp_path):
    env = {**os.environ, "BATCHJAC_CACHE_DIR": str(tmp_path)}
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["misses"] == 1 and first["hits"] == 0  # compiled, and saved
    assert second["misses"] == 0 and second["hits"] == 1  # loaded, not compiled
    assert second["J"] == first["J"]
    assert len(list((tmp_path / "kernels").glob("fused_*.py"))) == 1
    q = np.linspace(-1.0, 1.0, 60).reshape(10, 6)
    phi = np.cumsum(q, axis=-1)
    expected_row = -np.cumsum(np.sin(phi)[:, ::-1], axis=-1)[:, ::-1]
    np.testing.assert_allclose(np.array(first["J"])[:, 0], expected_row, rtol=1e-14)
