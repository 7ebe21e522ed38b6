"""Peak memory of an exact Jacobian of a deep element-wise chain.

A depth-6 element-wise chain at B = 100,000 and n = 1,000 in float32 has a diagonal
Jacobian. Dense it would be B n^2 = 1e11 numbers (400 GB); batchjac keeps it ``Diagonal``.
This script records the peak of NumPy's allocations (tracemalloc sees them) during
``bj.jacobian(..., structured=True)`` and reports it as a multiple of the input's size,
plus the median time of repeated runs and the error against the closed form.

    python benchmarks/bench_exact_memory.py [--batch B] [--n N] [--repeats R] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from harness import DEFAULT_OUT, CpuDevice, host_seconds

import batchjac as bj


def chain(x):
    """sin -> tanh -> exp(0.5 .) -> sigmoid -> softplus -> square: six element-wise steps."""
    return bj.square(bj.softplus(bj.sigmoid(bj.exp(0.5 * bj.tanh(bj.sin(x))))))


def closed_form(x):
    """The same derivative by hand, in float64, one step at a time."""
    x = x.astype(np.float64)
    s = np.sin(x)
    t = np.tanh(s)
    e = np.exp(0.5 * t)
    g = 1 / (1 + np.exp(-e))
    p = np.log1p(np.exp(g))
    return (2 * p) * (1 / (1 + np.exp(-g))) * (g * (1 - g)) * (0.5 * e) * (1 - t * t) * np.cos(x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "exact_memory_cpu.json")
    args = parser.parse_args(argv)

    x = np.random.default_rng(0).uniform(-2, 2, (args.batch, args.n)).astype(np.float32)
    bj.jacobian(chain, x[:2], structured=True)  # warm-up: imports, numba's erf, caches

    held = {}
    peak = CpuDevice.peak(lambda: held.update(J=bj.jacobian(chain, x, structured=True)))
    J = held.pop("J")
    assert isinstance(J, bj.Diagonal), type(J)
    error = float(np.max(np.abs(J.diagonal() - closed_form(x)) / (1 + np.abs(closed_form(x)))))
    del J

    times = [host_seconds(lambda: bj.jacobian(chain, x, structured=True)) for _ in range(args.repeats)]

    dense_bytes = args.batch * args.n * args.n * x.itemsize
    result = {
        "benchmark": "exact Jacobian of a depth-6 element-wise chain",
        "batch": args.batch,
        "n": args.n,
        "dtype": "float32",
        "input_bytes": x.nbytes,
        "peak_bytes": peak,
        "peak_over_input": peak / x.nbytes,
        "dense_jacobian_bytes": dense_bytes,
        "structure": "Diagonal",
        "median_seconds": float(np.median(times)),
        "repeats": args.repeats,
        "max_relative_error": error,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "peak_measured_by": "tracemalloc (NumPy's allocations), one run after a warm-up",
    }
    print(f"B={args.batch} n={args.n} float32, depth-6 element-wise chain")
    print(f"  input          {x.nbytes / 2**20:10.1f} MiB")
    print(f"  peak           {peak / 2**20:10.1f} MiB = {peak / x.nbytes:.1f} x the input")
    print(f"  dense would be {dense_bytes / 2**30:10.1f} GiB (never built)")
    print(f"  median time    {np.median(times):10.3f} s over {args.repeats}")
    print(f"  max rel error  {error:10.2e} (float64 closed form)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
