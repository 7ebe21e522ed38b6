"""Launch configuration and the compiled-kernel cache of the numba-CUDA kernels.

Every kernel of ``kernels/numba_*.py`` walks its index space with a grid-stride loop, so
any grid covers any size; the grid is sized from the device (a few waves of blocks per
multiprocessor) rather than from the data, which keeps launches cheap for huge batches.
Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) every thread is a Python thread:
small fixed sizes keep it fast and still run each grid-stride loop more than once.

Compiler report (``python benchmarks/bench_numba_kernels.py --ptx``, PTX for sm_90 and
``ptxas -v``; ``benchmarks/results/numba_ptx_report.txt``): no kernel spills (0 bytes of
spill stores and loads everywhere; 25-56 registers, 70 for the float64 complex-step
columns). ``.local`` appears in two places only, both by design: ``sin``/``cos``/``tan``
(libdevice's Payne-Hanek argument reduction keeps 32-40 bytes on the stack, touched only
for huge arguments) and the ``device_jacobian`` column kernels, whose per-thread copies
of the sample and outputs are thread-local arrays of ``n`` and ``m`` entries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numba
from numba import cuda

# Blocks per multiprocessor: enough resident warps to hide memory latency.
_WAVES = 8
_THREADS = 256
_SIM_BLOCKS, _SIM_THREADS = 2, 8


def simulated() -> bool:
    """True when the kernels run on numba's CUDA simulator."""
    return bool(numba.config.ENABLE_CUDASIM)


def device_id() -> int:
    """The current device's ordinal (0 under the simulator, which has one fake device)."""
    if simulated():
        return 0
    return cuda.get_current_device().id


@functools.cache
def _device_limits(device: int) -> tuple[int, int]:
    dev = cuda.get_current_device()
    return dev.MULTIPROCESSOR_COUNT, dev.MAX_THREADS_PER_BLOCK


def grid_1d(size: int) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride loop over ``size`` items."""
    if simulated():
        return _SIM_BLOCKS, _SIM_THREADS
    sms, max_threads = _device_limits(device_id())
    threads = min(_THREADS, max_threads)
    blocks = max(1, min(-(-size // threads), sms * _WAVES))
    return blocks, threads


def blocks_per_sample(batch: int, threads: int = 32) -> tuple[int, int]:
    """``(blocks, threads)`` for kernels that give each sample one block (grid-stride over samples)."""
    if simulated():
        return _SIM_BLOCKS, min(threads, _SIM_THREADS)
    sms, max_threads = _device_limits(device_id())
    return max(1, min(batch, sms * _WAVES * 4)), min(threads, max_threads)


def gemm_tile() -> int:
    """The square tile edge of the shared-memory GEMM (a 16 x 16 block on a GPU)."""
    return 4 if simulated() else 16


def grid_tiles(tiles_m: int, tiles_n: int, batch: int) -> tuple[int, int, int]:
    """A 3-D grid over (column tiles, row tiles, batch), each capped; the kernel strides over the rest."""
    if simulated():
        return min(tiles_n, 2), min(tiles_m, 2), min(batch, 2) or 1
    sms, _ = _device_limits(device_id())
    cap = sms * _WAVES
    return max(1, min(tiles_n, cap)), max(1, min(tiles_m, cap)), max(1, min(batch, 65535))


T = TypeVar("T")


def per_device(factory: Callable[..., T]) -> Callable[..., T]:
    """Cache a kernel factory per (device id, dtype, name, ...) so each compiles once per device.

    Called as ``factory(*key)`` (key: a NumPy dtype, a rule name, ...); the cache adds the
    device ordinal in front, because a CUDA module is loaded per context.
    """
    cached = functools.cache(lambda device, *key: factory(*key))

    @functools.wraps(factory)
    def get(*key: Any) -> T:
        return cached(device_id(), *key)

    return get


@cuda.jit(device=True, inline=True)
def unflatten_3d(t, rows, cols):
    """``(slice, row, col)`` of flat index ``t`` over an array ``(_, rows, cols)``, row-major:
    the innermost axis varies fastest across a grid-stride loop, so accesses coalesce."""
    col = t % cols
    r = t // cols
    return r // rows, r % rows, col
