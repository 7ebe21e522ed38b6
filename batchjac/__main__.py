"""Command line: ``python -m batchjac info | demo | bench [NAME] [ARGS...]``."""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np


def _version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def info() -> int:
    """Print versions, backends (with what is missing) and devices."""
    import batchjac as bj
    from batchjac.backends.dispatch import BACKENDS, backend_problem

    print(f"batchjac {bj.__version__} on Python {platform.python_version()} ({platform.platform()})")
    for package in ("numpy", "numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x", "cupy"):
        version = _version(package)
        if version is not None:
            print(f"  {package:13s} {version}")
    print("backends:")
    for name, spec in BACKENDS.items():
        problem = backend_problem(name)
        state = "available" if problem is None else f"unavailable: {problem}"
        print(f"  {name:6s} ({spec.device}) {state}")
    print("devices:")
    print(f"  cpu: {platform.processor() or platform.machine()}")
    for line in _gpu_lines():
        print(f"  {line}")
    return 0


def _gpu_lines():
    from batchjac.backends.dispatch import backend_problem
    from batchjac.core.arrays import cupy_module

    if backend_problem("cupy") is None:
        cupy = cupy_module()
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            yield f"gpu {i}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB, driver {cupy.cuda.runtime.driverGetVersion()}"
        return
    if backend_problem("numba") is None:
        from numba import config, cuda

        if config.ENABLE_CUDASIM:
            yield "gpu: the numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a real device"
        else:
            for device in cuda.list_devices():
                yield f"gpu {device.id}: {device.name}"
        return
    yield "gpu: none usable"


def _mlp(layers, dtype, rng):
    return [
        (rng.standard_normal((m, n)).astype(dtype) / np.sqrt(n), rng.standard_normal(m).astype(dtype) * 0.1)
        for n, m in zip(layers[:-1], layers[1:])
    ]


def _mlp_forward(fns, params, x):
    """An MLP with tanh between layers, written once for batchjac's and NumPy's functions."""
    for i, (W, b) in enumerate(params):
        x = fns.linear(x, W, b)
        if i < len(params) - 1:
            x = fns.tanh(x)
    return x


class _NumpyFunctions:
    """The NumPy (complex-safe) forms of the two functions the demo network uses."""

    linear = staticmethod(lambda x, W, b: x @ W.T + b)
    tanh = staticmethod(np.tanh)


def demo(batch=512, layers=(64, 128, 128, 10), repeats=5) -> int:
    """Batched input Jacobians of a small MLP on the best backend here, checked and timed."""
    import batchjac as bj

    backend = "cupy" if "cupy" in bj.available_backends() else "numpy"
    device = "gpu" if backend == "cupy" else "cpu"
    rng = np.random.default_rng(0)
    params64 = _mlp(layers, np.float64, rng)
    x64 = rng.standard_normal((batch, layers[0]))
    params = [
        (bj.to_device(W.astype(np.float32), device), bj.to_device(b.astype(np.float32), device))
        for W, b in params64
    ]
    x = bj.to_device(x64.astype(np.float32), device)

    def f(x):
        return _mlp_forward(bj, params, x)

    J = bj.jacobian(f, x, method="exact")  # warm-up (and the result)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        J = bj.jacobian(f, x, method="exact")
        _synchronize(device)
        times.append(time.perf_counter() - start)
    reference = bj.jacobian(lambda x: _mlp_forward(_NumpyFunctions, params64, x), x64, method="complex-step")
    error = float(np.max(np.abs(bj.to_device(J, "cpu") - reference)) / np.max(np.abs(reference)))
    plan = bj.jacobian(f, x, method="exact", structured=True).plan
    print(
        f"batchjac demo: input Jacobian of an MLP {' -> '.join(map(str, layers))} (tanh), batch {batch}, float32"
    )
    print(f"  backend   {backend} ({device})")
    print(f"  shape     {tuple(J.shape)}")
    print(f"  plan      {plan.order}")
    print(f"  max error {error:.2e} (relative to the largest entry; float64 complex-step reference)")
    print(f"  time      {np.median(times) * 1e3:.2f} ms (median of {repeats})")
    tolerance = 1e-4
    if not error < tolerance:
        print(f"  FAILED: error above {tolerance}")
        return 1
    return 0


def _synchronize(device):
    if device == "gpu":
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def _benchmarks_dir() -> Path | None:
    here = Path(__file__).resolve().parent.parent / "benchmarks"
    return here if here.is_dir() else None


def bench(args) -> int:
    """Run the suite ``benchmarks/run.py`` with ``args``, or ``benchmarks/bench_NAME.py``
    when ``args`` starts with a NAME (``all`` is the suite too)."""
    folder = _benchmarks_dir()
    if folder is None:
        print(
            "bench: the benchmarks/ folder is not here; run from a source checkout of batchjac",
            file=sys.stderr,
        )
        return 2
    scripts = {p.stem.removeprefix("bench_"): p for p in folder.glob("bench_*.py")}
    scripts["all"] = folder / "run.py"
    named = bool(args) and not args[0].startswith("-")
    name, rest = (args[0], args[1:]) if named else ("all", args)
    if name not in scripts:
        known = ", ".join(sorted(scripts))
        print(f"bench: choose a benchmark: {known}, or none for the suite (got {name!r})", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(scripts[name]), *rest])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batchjac", description="batched Jacobians on the GPU and the CPU"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="backends, devices and versions")
    demo_parser = commands.add_parser("demo", help="Jacobians of a small network, checked and timed")
    demo_parser.add_argument("--batch", type=int, default=512)
    commands.add_parser(
        "bench", help="the benchmark suite (benchmarks/run.py; bench --help), or bench NAME [ARGS...]"
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return bench(argv[1:])  # every argument after it, options included, is the script's
    options = parser.parse_args(argv)
    return info() if options.command == "info" else demo(batch=options.batch)


if __name__ == "__main__":
    sys.exit(main())
