"""Benchmark of the GPU backends per primitive: CuPy against numba-CUDA, and the dispatch chosen.

For each primitive of the backend interface, the representative call of
``batchjac.backends.autotune.workload`` (batch 256, 256 x 256 matrices) runs on every
available GPU backend that implements it; the time is the median of CUDA-event timings
after a warm-up. The floor of each call is the bytes it must move (its array arguments
read once, its result written once) over the device-to-device copy bandwidth measured at
start (a 256 MiB ``cupy`` copy, read plus write). The report records the dispatch table
the library chose (``batchjac.backends.dispatch.gpu_preference``: measured speed where
both backends implement a primitive) and the GPU's name, driver and library versions.

    python benchmarks/bench_gpu_backends.py [--dtype float32|float64] [--out PATH]

Without a usable CUDA GPU it exits at once with a message saying what is missing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
from harness import DEFAULT_OUT

from batchjac.backends import autotune, dispatch

GPU_BACKENDS = ("cupy", "numba")


def copy_bandwidth(cupy, nbytes=256 * 2**20) -> float:
    """Device-to-device bytes per second of a large copy (read plus write)."""
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    ms = autotune.time_call(lambda: dst.__setitem__(Ellipsis, src), ())
    return 2 * nbytes / (ms * 1e-3)


def _nbytes(value) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def bench_primitive(cupy, prim, dtype, bandwidth) -> dict:
    args = autotune.workload(prim, cupy, dtype)
    backends = [
        b for b in GPU_BACKENDS if dispatch.TABLE[prim][b] is not None and dispatch.backend_problem(b) is None
    ]
    row = {"backends": {}}
    for name in backends:
        fn = dispatch._implementation(prim, name)
        moved = _nbytes(args) + _nbytes(fn(*args))
        ms = autotune.time_call(fn, args)
        row["backends"][name] = {
            "median_ms": ms,
            "bytes": moved,
            "floor_ms": 1e3 * moved / bandwidth,
            "over_floor": ms / (1e3 * moved / bandwidth),
            "module": dispatch.TABLE[prim][name],
        }
    skipped = {
        b: dispatch.backend_problem(b) or f"no {prim} implementation on {b}"
        for b in GPU_BACKENDS
        if b not in backends
    }
    if skipped:
        row["skipped"] = skipped
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON report (default: ./batchjac-bench/gpu_backends_<gpu>.json)",
    )
    args = parser.parse_args(argv)
    problem = dispatch.backend_problem("cupy")
    if problem is not None:
        print(
            f"bench_gpu_backends: needs a CUDA GPU with CuPy, and there is none usable here: {problem}",
            file=sys.stderr,
        )
        return 2
    import cupy

    identity = autotune.device_identity()
    bandwidth = copy_bandwidth(cupy)
    dtype = np.dtype(args.dtype)
    results = {}
    for prim in dispatch.TABLE:
        results[prim] = bench_primitive(cupy, prim, dtype, bandwidth)
        times = ", ".join(
            f"{b} {r['median_ms']:.3f} ms ({r['over_floor']:.1f}x floor)"
            for b, r in results[prim]["backends"].items()
        )
        print(f"{prim:20s} {times}")
    chosen = dispatch.gpu_preference()
    report = {
        "benchmark": "gpu_backends",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gpu": identity,
        "dtype": dtype.name,
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "workload": {"batch": autotune.BATCH, "width": autotune.WIDTH, "slogdet_and_columns": autotune.SMALL},
        "results": results,
        "dispatch": {prim: list(order) for prim, order in chosen.items()},
        "dispatch_serving": {prim: order[0] for prim, order in chosen.items()},
    }
    slug = re.sub(r"[^a-z0-9]+", "_", identity["device"].lower()).strip("_")
    out = args.out or DEFAULT_OUT / f"gpu_backends_{slug}_{dtype.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"dispatch: {report['dispatch_serving']}\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
