"""The command line: ``python -m batchjac [--version] {info, demo, bench}``.

``info`` lists versions (batchjac, its dependencies, the optional GPU and framework
libraries, the CUDA driver and runtime), the backends with what each is missing, the
devices and the cache directory. ``demo`` computes the batched input Jacobians of a small
network on the best backend here, checks them and times them. ``bench`` runs the
benchmark suite (or one benchmark script), shipped in the package as
``batchjac.benchmarks``; its results go to ``--out`` (default ``./batchjac-bench/``).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

PROG = "python -m batchjac"
SOURCE = "https://github.com/batchjac/batchjac"

# The optional pieces `info` reports, by distribution name (CuPy is found under any of its
# CUDA-specific names, e.g. cupy-cuda12x).
OPTIONAL = ("numba-cuda", "jax", "jaxlib", "torch", "dask", "distributed", "tqdm", "matplotlib")


# --------------------------------------------------------------------------------------
# Arguments: one-line errors, whole positive numbers
# --------------------------------------------------------------------------------------


class CommandLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (the message and where to find
    help, no usage block) with exit status 2. Shared by the benchmark scripts."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """``text`` as a whole number >= 1 (``"512"``, ``"1e6"``), for an argparse ``type=``.

    >>> positive_int("1e3")
    1000
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(value)


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of whole numbers >= 1 (``"1000,1e4"``), for ``type=``.

    >>> positive_ints("1000, 1e4")
    [1000, 10000]
    """
    try:
        return [positive_int(item.strip()) for item in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers of at least 1, such as 1000,10000; got {text!r}"
        ) from None


# --------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed versions of batchjac's dependencies and optional pieces (None: absent)."""
    import batchjac as bj

    found: dict[str, str | None] = {"batchjac": bj.__version__}
    for name in ("numpy", "numba", "platformdirs"):
        found[name] = _version(name)
    cupy_names = sorted(set(metadata.packages_distributions().get("cupy", [])))
    found["cupy"] = (
        ", ".join(f"{version} ({name})" for name in cupy_names if (version := _version(name))) or None
    )
    for name in OPTIONAL:
        found[name] = _version(name)
    return found


def cuda_versions() -> dict[str, str]:
    """The CUDA driver's and runtime's versions (``"12.4"``), as far as CuPy or numba-cuda
    can read them here; empty without a driver, and under the CUDA simulator."""
    from batchjac.core.arrays import cupy_module

    cupy = cupy_module()
    if cupy is not None:
        readers: dict[str, Callable[[], Any]] = {
            "driver": cupy.cuda.runtime.driverGetVersion,
            "runtime": cupy.cuda.runtime.runtimeGetVersion,
        }
        return {name: _cuda_version(version) for name, read in readers.items() if (version := _read(read))}
    if importlib.util.find_spec("numba_cuda") is None or _simulating():
        return {}
    from numba import cuda

    readers = {"driver": cuda.cudadrv.driver.driver.get_version, "runtime": cuda.runtime.get_version}
    return {name: _cuda_version(version) for name, read in readers.items() if (version := _read(read))}


def _simulating() -> bool:
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def _read(read: Callable[[], Any]) -> Any:
    """``read()``, or None where the driver or the library behind it is missing."""
    try:
        return read()
    except Exception:  # CUDA errors differ by library; any of them means "not here"
        return None


def _cuda_version(version: int | tuple[int, int]) -> str:
    """``12040`` (CUDA's encoding) or ``(12, 4)`` as ``"12.4"``."""
    if isinstance(version, tuple):
        return ".".join(map(str, version))
    return f"{version // 1000}.{version % 1000 // 10}"


def info() -> int:
    """Print versions, backends (with what each is missing), devices and the cache."""
    from batchjac.backends.dispatch import BACKENDS, backend_problem
    from batchjac.core.config import cache_dir

    versions = library_versions()
    print(
        f"batchjac {versions.pop('batchjac')} on Python {platform.python_version()} ({platform.platform()})"
    )
    print("libraries:")
    for name, version in versions.items():
        print(f"  {name:13s} {version or 'not installed'}")
    cuda = cuda_versions()
    print("CUDA:")
    for name in ("driver", "runtime"):
        print(f"  {name:13s} {cuda.get(name, 'not found')}")
    print("backends:")
    for name, spec in BACKENDS.items():
        problem = backend_problem(name)
        print(f"  {name:6s} ({spec.device}) {'available' if problem is None else f'unavailable: {problem}'}")
    print("devices:")
    print(f"  cpu: {platform.processor() or platform.machine()}")
    for line in _gpu_lines():
        print(f"  {line}")
    print(f"cache: {cache_dir()}")
    return 0


def _gpu_lines() -> Iterator[str]:
    from batchjac.backends.dispatch import backend_problem
    from batchjac.core.arrays import cupy_module

    if backend_problem("cupy") is None:
        runtime = cupy_module().cuda.runtime
        for i in range(runtime.getDeviceCount()):
            props = runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            yield f"gpu {i}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB"
        return
    if backend_problem("numba") is None:
        from numba import cuda

        if _simulating():
            yield "gpu: the numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a real device"
        else:
            for device in cuda.list_devices():
                yield f"gpu {device.id}: {device.name.decode() if isinstance(device.name, bytes) else device.name}"
        return
    yield "gpu: none usable"


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------

Layers = list[tuple[Any, Any]]  # (W, b) per layer, NumPy or CuPy arrays


def _mlp(
    layers: Sequence[int], rng: np.random.Generator
) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    return [
        (rng.standard_normal((m, n)) / np.sqrt(n), rng.standard_normal(m) * 0.1)
        for n, m in zip(layers[:-1], layers[1:])
    ]


def _mlp_forward(fns: Any, params: Layers, x: Any) -> Any:
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


def demo(batch: int = 512, layers: Sequence[int] = (64, 128, 128, 10), repeats: int = 5) -> int:
    """Batched input Jacobians of a small MLP on the best backend here, checked against a
    float64 complex-step reference and timed; 1 when the error is too large."""
    import batchjac as bj

    backend = "cupy" if "cupy" in bj.available_backends() else "numpy"
    device = "gpu" if backend == "cupy" else "cpu"
    rng = np.random.default_rng(0)
    params64 = _mlp(layers, rng)
    x64 = rng.standard_normal((batch, layers[0]))
    params = [
        (bj.to_device(W.astype(np.float32), device), bj.to_device(b.astype(np.float32), device))
        for W, b in params64
    ]
    x = bj.to_device(x64.astype(np.float32), device)

    def f(x: Any) -> Any:
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


def _synchronize(device: str) -> None:
    if device == "gpu":
        from batchjac.core.arrays import cupy_module

        cupy_module().cuda.get_current_stream().synchronize()


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------


def benchmarks_folder() -> Path | None:
    """The benchmark scripts: ``batchjac/benchmarks/`` in an installed package, else
    ``benchmarks/`` beside the package in a source checkout (editable install or none);
    None where neither is present."""
    package = Path(__file__).parent
    for folder in (package / "benchmarks", package.parent / "benchmarks"):
        if (folder / "run.py").is_file():
            return folder
    return None


def bench(args: Sequence[str]) -> int:
    """Run the suite (``run.py``) with ``args``, or the script ``bench_NAME.py`` when
    ``args`` starts with a NAME; every argument after the name is the script's."""
    folder = benchmarks_folder()
    if folder is None:
        print(
            f"bench: the benchmark scripts are not in this installation; run `git clone {SOURCE}` "
            f"and `{PROG} bench` inside the clone",
            file=sys.stderr,
        )
        return 2
    scripts = {p.stem.removeprefix("bench_"): p for p in folder.glob("bench_*.py")}
    named = bool(args) and not args[0].startswith("-")
    name, rest = (args[0], list(args[1:])) if named else ("", list(args))
    if named and name not in scripts:
        print(
            f"bench: unknown benchmark {name!r}; choose a benchmark: {', '.join(sorted(scripts))}, "
            f"or none for the suite (see {PROG} bench --help)",
            file=sys.stderr,
        )
        return 2
    script = scripts[name] if named else folder / "run.py"
    return subprocess.call([sys.executable, str(script), *rest])


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def build_parser() -> CommandLineParser:
    import batchjac as bj

    parser = CommandLineParser(
        prog=PROG,
        description="batchjac: batched Jacobians on the GPU and the CPU.",
        epilog=f"`{PROG} COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"batchjac {bj.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "info",
        help="versions, CUDA, backends, devices and the cache directory",
        description="Versions of batchjac, its dependencies and the optional pieces (CuPy, numba-cuda, "
        "JAX, PyTorch, Dask), the CUDA driver and runtime, the backends (and what each is missing), "
        "the devices, and the cache directory.",
    )
    demo_parser = commands.add_parser(
        "demo",
        help="batched Jacobians of a small network, checked and timed",
        description="The input Jacobians of a small MLP (64 -> 128 -> 128 -> 10, tanh) for a batch of "
        "inputs, on the best backend here, in float32; checked against a float64 complex-step "
        "reference and timed. Exits with 1 if the error is above 1e-4.",
    )
    demo_parser.add_argument(
        "--batch",
        type=positive_int,
        default=512,
        metavar="B",
        help="the number of inputs, each a vector of 64 (default: 512)",
    )
    commands.add_parser(
        "bench",
        help="the benchmark suite, or one benchmark with bench NAME",
        add_help=False,  # `bench --help` is the suite's own help
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return bench(argv[1:])  # every argument after it, options included, is the script's
    options = build_parser().parse_args(argv)
    if options.command == "info":
        return info()
    return demo(batch=options.batch)


if __name__ == "__main__":
    sys.exit(main())
