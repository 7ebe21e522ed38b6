"""Benchmark: numerical batched Jacobians of a black-box function (issue 5).

``f(x) = tanh(x W^T + b) * x`` with a fixed ``W`` ``(32, 32)``, on ``B = 100,000`` samples
of ``n = m = 32`` (``--quick``: ``B = 10,000``), by complex-step, central and forward
differences with ``chunk_size=None``; on NumPy, and on CuPy when a GPU is usable.

Reported per method: median wall time of the repeats after one warm-up (CPU:
``time.perf_counter``; GPU: CUDA events), peak memory (CPU: ``tracemalloc`` peak of the
warm-up run, which traces NumPy's data buffers; GPU: the CuPy memory pool's size after the
run, the pool having been emptied before), the floor (the bytes of the output Jacobian over
a measured copy bandwidth: bytes copied per second by a 256 MiB ``copyto``) and the ratio
to it, and the max error against the closed form
``J = diag(t) + diag((1 - t^2) x) W``, ``t = tanh(W x + b)``, relative to ``max(1, max |J|)``.

    python benchmarks/bench_numerical.py [--quick] [--out PATH]

The JSON goes to ``./batchjac-bench/numerical_cpu.json`` (``numerical_gpu.json`` when a GPU
is usable) with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
from harness import DEFAULT_OUT, CpuDevice, current_device
from harness import copy_bandwidth as measure_copy_bandwidth

from batchjac.core.arrays import namespace
from batchjac.numerical.differences import METHODS, numerical_value_and_jacobian

N = 32
COPY_BYTES = 256 << 20


def problem(batch: int, xp):
    rng = np.random.default_rng(20261122)
    W = rng.standard_normal((N, N)) / np.sqrt(N)
    b = 0.1 * rng.standard_normal(N)
    x = rng.standard_normal((batch, N))
    return xp.asarray(x), xp.asarray(W), xp.asarray(b)


def layer(x, W, b):
    """The black box: ``(B, 32) -> (B, 32)``; W and b are shared and passed through."""
    return namespace(x).tanh(x @ W.T + b) * x


def closed_form(x, W, b):
    xp = namespace(x)
    t = xp.tanh(x @ W.T + b)
    J = (1 - t**2)[:, :, None] * W * x[:, :, None]
    J[:, xp.arange(N), xp.arange(N)] += t
    return J


def copy_bandwidth(device):
    """Bytes copied per second (half the read + written figure of the harness): this report's
    floor has always been the Jacobian's bytes over this figure."""
    return measure_copy_bandwidth(device, COPY_BYTES) / 2


def bench_device(device, batch: int, repeats: int) -> dict:
    xp = device.xp
    x, W, b = problem(batch, xp)
    expected = closed_form(x, W, b)
    scale = max(1.0, float(xp.abs(expected).max()))
    jacobian_bytes = batch * N * N * 8
    bandwidth = copy_bandwidth(device)
    floor = jacobian_bytes / bandwidth
    results = {}
    for method in METHODS:
        out = {}

        def run():
            out["J"] = numerical_value_and_jacobian(layer, (x, W, b), (0,), method)[1][0]

        peak = device.peak(run)  # the warm-up
        error = float(xp.abs(out.pop("J") - expected).max()) / scale
        times = [device.clock(run) for _ in range(repeats)]
        out.clear()
        median = statistics.median(times)
        results[method] = {
            "median_s": median,
            "times_s": times,
            "peak_bytes": peak,
            "floor_s": floor,
            "ratio_to_floor": median / floor,
            "max_rel_error": error,
        }
        print(
            f"{device.backend:6s} {method:13s} median {median:8.3f} s  peak {peak / 2**30:6.2f} GiB  "
            f"floor {floor * 1e3:7.1f} ms  x{median / floor:7.1f}  error {error:.1e}",
            flush=True,
        )
    return {
        "peak_memory": "tracemalloc peak of the warm-up run"
        if device.backend == "numpy"
        else "CuPy memory pool total after the warm-up run, pool emptied before",
        "copy_bandwidth_bytes_per_s": bandwidth,
        "jacobian_bytes": jacobian_bytes,
        "methods": results,
    }


def gpu_device():
    device = current_device()
    return device if device.name == "gpu" else None


def machine() -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    gpu = gpu_device()
    if gpu is not None:
        props = gpu.cp.cuda.runtime.getDeviceProperties(0)
        info.update(cupy=gpu.cp.__version__, gpu=props["name"].decode())
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 10,000 and 2 repeats")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/numerical_gpu.json with a GPU, else numerical_cpu.json",
    )
    args = parser.parse_args(argv)
    gpu = gpu_device()
    out = args.out or DEFAULT_OUT / f"numerical_{'cpu' if gpu is None else 'gpu'}.json"
    batch, repeats = (10_000, 2) if args.quick else (100_000, 3)
    report = {
        "benchmark": "numerical batched Jacobian of f(x) = tanh(x W^T + b) * x, chunk_size=None",
        "command": "python benchmarks/bench_numerical.py" + (" --quick" if args.quick else ""),
        "batch": batch,
        "n": N,
        "m": N,
        "dtype": "float64",
        "repeats": repeats,
        "machine": machine(),
        "devices": {"numpy": bench_device(CpuDevice(), batch, repeats)},
    }
    if gpu is not None:
        report["devices"]["cupy"] = bench_device(gpu, batch, repeats)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
