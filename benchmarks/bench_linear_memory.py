"""Linear memory at any size (issue "linear memory"): peak memory of exact Jacobians that
used to be quadratic in the per-sample size, per-sample parameter gradients against
``torch.func``, and spatial kinematics at B = 10^5.

    python benchmarks/bench_linear_memory.py [--out DIR] [--quick]

Peak memory is ``tracemalloc``'s (every NumPy allocation on the CPU) during one call,
after a warm-up; times are medians of repeats after warm-up. The scaling cases return the
structured Jacobian (``structured=True``): its dense form is itself quadratic (e.g. a
partial sum of ``n x n`` entries to ``n`` outputs has ``n^3`` entries), the structured one is
not, and doubling the per-sample size must double the peak, not quadruple it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_OUT, median_ms, median_seconds, save_result  # noqa: E402

import batchjac as bj  # noqa: E402
from batchjac.backends.cpu_kernels import release_buffers  # noqa: E402

B = 64


def _peak(fn):
    fn()  # warm-up (plans, caches)
    release_buffers()  # the result's buffers are allocated (and counted) in the traced call
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, result


def scaling_cases(rng, sizes):
    """name -> list of (per-sample input size, peak bytes, stored bytes of the result)."""
    cases = {}

    def partial_sums(n):
        x = rng.standard_normal((B, n * n))
        return lambda: bj.jacobian(lambda x: bj.sum(bj.reshape(x, (B, n, n)), axis=1), x, structured=True), n * n

    def linear_positions(n):
        S, m = n, 16
        W = rng.standard_normal((m, 16))
        x = rng.standard_normal((B, S, 16))
        return lambda: bj.jacobian(lambda x: bj.linear(x, W), x, structured=True), S * 16

    def broadcast(n):
        x, y = rng.standard_normal((B, n)), rng.standard_normal((B, 8, n))
        return lambda: bj.jacobian(lambda x: x[:, None, :] + y, x, structured=True), n

    def repeated_index(n):
        index = np.concatenate([np.arange(n), np.arange(n)[::-1]])  # every input picked twice
        W = rng.standard_normal((4, 2 * n))
        x = rng.standard_normal((B, n))
        return lambda: bj.jacobian(lambda x: np.tanh(x[:, index]) @ W.T, x, structured=True), n

    for name, make in (("partial sums", partial_sums), ("linear on (B, S, n)", linear_positions),
                       ("broadcast x[:, None, :] + y", broadcast), ("reverse through a repeated index", repeated_index)):  # fmt: skip
        rows = []
        for n in sizes:
            fn, size = make(n)
            peak, J = _peak(fn)
            stored = sum(a.nbytes for a in J._arrays() if hasattr(a, "nbytes"))
            rows.append({"per_sample_size": size, "peak_bytes": peak, "stored_bytes": stored, "type": type(J).__name__})
        cases[name] = rows
    return cases


def per_sample_gradients(rng, batch=1000):
    """Per-sample weight gradients of an MLP 64 -> 128 -> 10 (all layers), float32."""
    W1, b1 = (rng.standard_normal((128, 64)) / 8).astype(np.float32), np.zeros(128, np.float32)
    W2, b2 = (rng.standard_normal((10, 128)) / 11).astype(np.float32), np.zeros(10, np.float32)
    x = rng.standard_normal((batch, 64)).astype(np.float32)
    y = rng.standard_normal((batch, 10)).astype(np.float32)

    def loss(x, W1, b1, W2, b2, y):
        h = np.tanh(W1 @ x + b1)
        return np.sum((W2 @ h + b2 - y) ** 2)

    args = (x, W1, b1, W2, b2, y)
    keywords = dict(argnums=(1, 2, 3, 4), per_sample=True, in_axes=(0, None, None, None, None, 0))
    run = lambda: bj.jacobian(loss, *args, **keywords)  # noqa: E731
    peak, grads = _peak(run)
    result_bytes = sum(g.nbytes for g in grads)
    out = {"batch": batch, "peak_bytes": peak, "result_bytes": result_bytes}
    runs = {"batchjac": run}
    try:
        import torch
        from torch.func import grad, vmap
    except ImportError:
        out["torch"] = "not installed"
    else:
        t_args = [torch.tensor(a) for a in (W1, b1, W2, b2, x, y)]

        def t_loss(W1, b1, W2, b2, x, y):
            return ((W2 @ torch.tanh(W1 @ x + b1) + b2 - y) ** 2).sum()

        per_sample = vmap(grad(t_loss, argnums=(0, 1, 2, 3)), in_dims=(None, None, None, None, 0, 0))
        runs["torch"] = lambda: per_sample(*t_args)
        out["max_error_vs_torch"] = float(max(np.abs(a.numpy() - b).max() for a, b in zip(per_sample(*t_args), grads)))
    # Rounds alternate the runners, each warmed up in turn: the first calls that allocate a
    # 32 MB result take fresh pages from the kernel (page faults, zeroing) until the C
    # allocator keeps such blocks; both runners get the same chance to reach that state.
    medians = median_seconds(runs, repeats=10, warmup=5, rounds=3)
    out["batchjac_ms"] = 1e3 * medians["batchjac"]
    if "torch" not in runs:
        return out
    out["torch_ms"] = 1e3 * medians["torch"]
    out["ratio_to_torch"] = out["batchjac_ms"] / out["torch_ms"]
    return out


DH = [(0.0, 0.4, np.pi / 2), (0.3, 0.0, 0.0), (0.05, 0.0, np.pi / 2), (0.0, 0.35, -np.pi / 2), (0.0, 0.0, np.pi / 2), (0.0, 0.1, 0.0)]


def spatial_kinematics(q):
    """A spatial 6R arm (Denavit-Hartenberg): joint angles (B, 6) -> position (3) and the
    rotation matrix (9) of the tool, as (B, 12). Plain NumPy, batched."""
    T = None
    for i, (a, d, alpha) in enumerate(DH):
        c, s = np.cos(q[:, i]), np.sin(q[:, i])
        ca, sa = np.cos(alpha), np.sin(alpha)
        zero, one = 0.0 * c, 0.0 * c + 1.0
        A = np.stack([
            np.stack([c, -s * ca, s * sa, a * c], axis=-1),
            np.stack([s, c * ca, -c * sa, a * s], axis=-1),
            np.stack([zero, zero + sa, zero + ca, zero + d], axis=-1),
            np.stack([zero, zero, zero, one], axis=-1),
        ], axis=1)  # fmt: skip
        T = A if T is None else T @ A
    return np.concatenate([T[:, :3, 3], T[:, :3, :3].reshape(len(q), 9)], axis=-1)


def kinematics_memory(rng, batch=100_000):
    q = rng.uniform(-np.pi, np.pi, (batch, 6))
    run = lambda: bj.jacobian(spatial_kinematics, q, method="exact")  # noqa: E731
    peak, J = _peak(run)
    small = q[:4]
    error = float(np.abs(bj.jacobian(spatial_kinematics, small) - bj.jacobian(spatial_kinematics, small, method="complex-step")).max())
    return {"batch": batch, "ms": median_ms(run, 3), "peak_bytes": peak, "result_bytes": J.nbytes,
            "peak_over_result": peak / J.nbytes, "max_error_vs_complex_step": error}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="peak memory of exact Jacobians and per-sample gradients")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for linear_memory_cpu.json")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    options = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    sizes = (16, 32, 64, 128) if not options.quick else (8, 16, 32, 64)
    result = {
        "machine": platform.platform(),
        "numpy": np.__version__,
        "command": "python benchmarks/bench_linear_memory.py" + (" --quick" if options.quick else ""),
        "scaling": scaling_cases(rng, sizes),
        "per_sample_gradients": per_sample_gradients(rng, 200 if options.quick else 1000),
        "spatial_kinematics": kinematics_memory(rng, 10_000 if options.quick else 100_000),
    }
    for name, rows in result["scaling"].items():
        peaks = [r["peak_bytes"] for r in rows]
        growth = [b / a for a, b in zip(peaks, peaks[1:])]
        sizes_ = [r["per_sample_size"] for r in rows]
        print(f"{name:34s} sizes {sizes_} peak {['%.2f MB' % (p / 2**20) for p in peaks]} growth per doubling {['%.2f' % g for g in growth]} ({rows[0]['type']})")
    g = result["per_sample_gradients"]
    print(f"per-sample gradients MLP 64-128-10 B={g['batch']}: {g['batchjac_ms']:.1f} ms, torch.func {g.get('torch_ms', float('nan')):.1f} ms, "
          f"peak {g['peak_bytes'] / g['result_bytes']:.2f}x the result")  # fmt: skip
    k = result["spatial_kinematics"]
    print(f"spatial 6R kinematics B={k['batch']}: {k['ms']:.0f} ms, peak {k['peak_over_result']:.2f}x the result, error {k['max_error_vs_complex_step']:.1e}")
    save_result(options.out, "linear_memory_cpu.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
