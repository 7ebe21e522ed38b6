"""Dispatch by measured speed: which GPU backend serves each primitive fastest on this GPU.

Where several GPU backends implement a primitive (CuPy and numba-CUDA), the default GPU
dispatch (:func:`batchjac.backends.dispatch.gpu_preference`) orders them by the median
time of one representative call (:func:`workload`), measured with CUDA events after a
warm-up. The measurement runs once per device and set of library versions and is kept on
disk, in ``$BATCHJAC_CACHE_DIR`` or else ``~/.cache/batchjac``, as
``dispatch-<key>.json``; a new driver, CuPy, numba-cuda or batchjac measures afresh.
``BATCHJAC_AUTOTUNE=0`` turns measuring off, and a measurement that fails warns: the
fixed order of ``GPU_PREFERENCE`` then serves. ``backend="cupy"`` or ``"numba"`` still
forces one backend for a call.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import tempfile
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "BATCHJAC_CACHE_DIR"
AUTOTUNE_ENV = "BATCHJAC_AUTOTUNE"
WARMUP = 3
REPEAT = 15

# The representative sizes: an MLP layer's Jacobians for a batch of 256 in float32.
BATCH, WIDTH, SMALL = 256, 256, 32


def cache_dir() -> Path:
    """Where measured dispatch tables are kept: batchjac's cache directory
    (:func:`batchjac.core.config.cache_dir`: ``$BATCHJAC_CACHE_DIR``, else the platform's)."""
    from batchjac.core.config import cache_dir as package_cache_dir

    return package_cache_dir()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_identity() -> dict[str, Any]:
    """What a measurement depends on: the current GPU's name and compute capability, the
    driver and runtime versions, and the versions of CuPy, numba-cuda and batchjac."""
    import cupy

    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    return {
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": device.compute_capability,
        "driver": cupy.cuda.runtime.driverGetVersion(),
        "runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cupy": cupy.__version__,
        "numba-cuda": _version("numba-cuda"),
        "batchjac": _version("batchjac"),
    }


def cache_file(identity: dict[str, Any]) -> Path:
    """The file of the measured table for ``identity`` (a hash of it names the file)."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"dispatch-{key}.json"


def workload(prim: str, xp: Any, dtype: Any = np.float32) -> tuple[Any, ...]:
    """The arguments of one representative call of primitive ``prim`` on namespace ``xp``.

    Batched ``(256, 256, 256)`` matrices and ``(256, 256)`` diagonals (``(256, 32, 32)``
    for ``slogdet``); ``elementwise`` is ``tanh`` of ``(256, 65536)`` values;
    ``difference_columns`` takes central differences of ``sin`` in 32 columns;
    ``csr_matvec`` applies a pentadiagonal ``(8192, 8192)`` pattern with per-sample values.
    """
    rng = np.random.default_rng(0)

    def draw(*shape: int) -> Any:
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    B, n, k = BATCH, WIDTH, SMALL
    cases: dict[str, Callable[[], tuple[Any, ...]]] = {
        "elementwise": lambda: ("tanh", draw(B, n * n)),
        "scale_rows": lambda: (draw(B, n), draw(B, n, n)),
        "scale_cols": lambda: (draw(B, n, n), draw(B, n)),
        "batched_matmul": lambda: (draw(B, n, n), draw(B, n, n)),
        "shared_matmul": lambda: (draw(n, n), draw(B, n, n)),
        "matmul_shared": lambda: (draw(B, n, n), draw(n, n)),
        "diag_to_dense": lambda: (draw(B, n),),
        "add_diagonal": lambda: (draw(B, n, n), draw(B, n)),
        "matvec": lambda: (draw(B, n, n), draw(B, n)),
        "vecmat": lambda: (draw(B, n), draw(B, n, n)),
        "slogdet": lambda: (draw(B, k, k),),
        "csr_matvec": lambda: _banded_csr(xp, n * k, draw),
        "difference_columns": lambda: (
            xp.sin,
            draw(B, k),
            list(range(k)),
            xp.full((B, k), 1e-3, dtype),
            "central",
        ),
    }
    if prim not in cases:
        raise ValueError(f"prim: no workload for {prim!r}; known: {', '.join(cases)}")
    return cases[prim]()


def _banded_csr(xp: Any, size: int, draw: Callable[..., Any]) -> tuple[Any, ...]:
    """A pentadiagonal CSR pattern of ``size`` rows, per-sample values and a batch of vectors."""
    rows = np.repeat(np.arange(size), 5)
    cols = np.clip(rows + np.tile(np.arange(-2, 3), size), 0, size - 1)
    indptr = np.arange(0, 5 * size + 1, 5)
    return (xp.asarray(indptr), xp.asarray(cols), draw(BATCH, 5 * size), draw(BATCH, size))


def time_call(
    fn: Callable[..., Any], args: Sequence[Any], warmup: int = WARMUP, repeat: int = REPEAT
) -> float:
    """Median milliseconds of ``fn(*args)`` on the GPU, by CUDA events, after ``warmup`` calls."""
    import cupy

    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeat):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return statistics.median(times)


def measure(prim: str, backends: Sequence[str]) -> dict[str, float]:
    """Median milliseconds of ``prim``'s representative call on each of ``backends``."""
    import cupy

    from batchjac.backends.dispatch import _implementation

    args = workload(prim, cupy)
    implementations = {name: _implementation(prim, name) for name in backends}
    return {name: time_call(fn, args) for name, fn in implementations.items() if fn is not None}


def decide(timings: dict[str, float], order: Sequence[str]) -> tuple[str, ...]:
    """``order`` sorted by measured time, fastest first; unmeasured backends keep their
    place after the measured ones, and ties keep the order given."""
    return tuple(sorted(order, key=lambda name: (timings.get(name, math.inf), order.index(name))))


def _load(path: Path, identity: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The readable timings of the cache file: ``{primitive: {backend: milliseconds}}``.

    Anything unreadable is left out, entry by entry, and so measured afresh: a file that
    is not JSON, of another identity, or whose primitives, backends or times are not a
    string, a string and a finite positive number (a cache edited by hand, or written by
    another version).
    """
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(stored, dict) or stored.get("identity") != identity:
        return {}
    timings = stored.get("timings")
    if not isinstance(timings, dict):
        return {}
    readable: dict[str, dict[str, float]] = {}
    for prim, per_backend in timings.items():
        if not isinstance(prim, str) or not isinstance(per_backend, dict):
            continue
        times = {
            name: float(ms) for name, ms in per_backend.items() if isinstance(name, str) and _is_time(ms)
        }
        if times:
            readable[prim] = times
    return readable


def _is_time(ms: object) -> bool:
    """A measured time: a finite positive number (not a bool, a string or a list)."""
    return isinstance(ms, (int, float)) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0


def _save(path: Path, identity: dict[str, Any], timings: dict[str, dict[str, float]]) -> None:
    """Write atomically (a concurrent reader sees the old table or the new, never half);
    a cache that cannot be written only costs a measurement next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump({"identity": identity, "timings": timings}, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:
        return


def measured_preference(candidates: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The measured order of the GPU backends for each primitive that has a choice.

    ``candidates`` maps each primitive to the available GPU backends implementing it, in
    the default order. Primitives with fewer than two get no entry (nothing to decide);
    so does every primitive when ``BATCHJAC_AUTOTUNE=0``. Timings come from the disk
    cache of this device and these versions; missing ones are measured and stored.
    """
    contested = {prim: order for prim, order in candidates.items() if len(order) > 1}
    if not contested or os.environ.get(AUTOTUNE_ENV, "1") == "0":
        return {}
    try:
        identity = device_identity()
        path = cache_file(identity)
        timings = _load(path, identity)
        missing = {
            prim: order for prim, order in contested.items() if not set(order) <= set(timings.get(prim, {}))
        }
        for prim, order in missing.items():
            timings[prim] = {**timings.get(prim, {}), **measure(prim, order)}
    except Exception as err:  # a failed measurement must not fail the call that needed a backend
        warnings.warn(
            f"batchjac: could not time the GPU backends ({type(err).__name__}: {err}); using the "
            f"default order {', '.join(next(iter(contested.values())))} (BATCHJAC_AUTOTUNE=0 skips timing)",
            RuntimeWarning,
            stacklevel=2,
        )
        return {}
    if missing:
        _save(path, identity, timings)
    return {prim: decide(timings[prim], order) for prim, order in contested.items()}
