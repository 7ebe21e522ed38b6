"""Benchmark and example: batched Jacobians of a Dask array on a LocalCluster (issue 9).

The workload is the numerical (central differences) Jacobian of the black box
``f(x) = tanh(x W^T + b) * x`` (``einsum``, so every sample is computed the same way in any
block) with ``W`` ``(32, 32)`` shared, on ``B = 100,000`` samples in blocks of 10,000
(``--quick``: 20,000 in blocks of 2,500). The batch is generated on the workers; each run
computes the Jacobians ``(B, 32, 32)`` blockwise and brings back one number per sample, the
squared Frobenius norm of its Jacobian, so the timing is the Jacobian work and not a
transfer of 800 MB to the client.

It runs on a ``dask.distributed.LocalCluster`` of CPU worker processes, one thread each,
first with 1 worker and then with 2, and reports the median wall time of ``--repeats`` runs
after one warm-up, and the speed-up from 1 to 2 workers; also the in-memory call
(``bj.jacobian`` on the NumPy batch, no Dask) for the overhead. Before timing, the first
block is checked bit for bit against the in-memory call.

    python benchmarks/bench_dask.py [--quick] [--repeats N] [--out PATH]

The JSON goes to ``./batchjac-bench/dask_cpu.json`` (``--out``) with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from harness import DEFAULT_OUT

import batchjac as bj

N = 32
METHOD = "central"


def layer(x, W, b):
    """The black box: ``(B, 32) -> (B, 32)``; W and b are shared and passed through."""
    return np.tanh(np.einsum("bj,ij->bi", x, W) + b) * x


def weights():
    rng = np.random.default_rng(20261122)
    return rng.standard_normal((N, N)) / np.sqrt(N), 0.1 * rng.standard_normal(N)


def batch(size: int, chunk: int):
    """The batch ``(size, 32)``, generated lazily (on the workers), split every ``chunk`` samples."""
    import dask.array as da

    return da.random.default_rng(7).standard_normal((size, N), chunks=(chunk, N))


def squared_norms(x, W, b):
    """Lazy ``(B,)``: ``|J_i|_F^2`` of every sample's Jacobian, computed blockwise."""
    J = bj.jacobian(layer, x, W, b, method=METHOD)
    return (J**2).sum(axis=(1, 2))


def time_on_cluster(workers: int, x, W, b, repeats: int) -> dict:
    """Median wall time of computing :func:`squared_norms` on ``workers`` processes."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        check_first_block(x, W, b)
        norms = squared_norms(x, W, b)
        client.compute(norms).result()  # warm-up: imports and compilation on every worker
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            client.compute(norms).result()
            times.append(time.perf_counter() - start)
    return {"workers": workers, "median_s": statistics.median(times), "times_s": times}


def check_first_block(x, W, b) -> None:
    """The Dask Jacobian of the first block equals the in-memory one bit for bit."""
    first = x.blocks[0]
    dask_J = bj.jacobian(layer, first, W, b, method=METHOD).compute()
    if not np.array_equal(dask_J, bj.jacobian(layer, first.compute(), W, b, method=METHOD)):
        raise AssertionError("the Dask Jacobian of the first block differs from the in-memory one")


def time_in_memory(x, W, b, repeats: int) -> dict:
    """Median wall time of the same work in memory, in this process (no Dask)."""
    data = x.compute(scheduler="sync")
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        (bj.jacobian(layer, data, W, b, method=METHOD) ** 2).sum(axis=(1, 2))
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times[1:]), "times_s": times[1:]}


def machine() -> dict:
    import dask
    import distributed

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 samples in blocks of 2,500")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(DEFAULT_OUT / "dask_cpu.json"))
    args = parser.parse_args(argv)
    size, chunk = (20_000, 2_500) if args.quick else (100_000, 10_000)
    x, (W, b) = batch(size, chunk), weights()
    load = os.getloadavg()  # 1, 5, 15 minutes: other work on the machine skews the timings
    runs = [time_on_cluster(workers, x, W, b, args.repeats) for workers in (1, 2)]
    result = {
        "benchmark": f"{METHOD} Jacobian of f(x) = tanh(x W^T + b) * x on a Dask array, "
        "blockwise on a LocalCluster of CPU processes (1 thread each); "
        "computes |J_i|_F^2 per sample",
        "command": "python benchmarks/bench_dask.py" + (" --quick" if args.quick else ""),
        "batch": size,
        "block": chunk,
        "n": N,
        "m": N,
        "dtype": "float64",
        "repeats": args.repeats,
        "machine": machine(),
        "load_average_before": load,
        "in_memory": time_in_memory(x, W, b, args.repeats),
        "local_cluster": runs,
        "speedup_1_to_2_workers": runs[0]["median_s"] / runs[1]["median_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for run in runs:
        print(f"{run['workers']} worker(s): median {run['median_s']:.3f} s")
    print(f"in memory: median {result['in_memory']['median_s']:.3f} s")
    print(f"speed-up 1 -> 2 workers: {result['speedup_1_to_2_workers']:.2f}x; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
