"""CPU kernels compiled with numba for the NumPy backend.

Memory-bound passes where NumPy's broadcasting runs well below the memory bandwidth: a
batched outer product ``out[s, i, j] = a[s, i] * b[s, j]`` (each sample's weight gradient
``g x^T``) takes 4.4 ms by broadcasting and 0.7 ms here for ``(1000, 128) x (1000, 64)``
float32 on a 2-core CPU. The kernels run above :data:`PARALLEL_ENTRIES` output entries
(below it, compiling once and waking the threads cost more than they save) and give the
same numbers as NumPy, bit for bit (one rounded product per entry). They are compiled on
first use and cached on disk by numba (``cache=True``).
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

import numpy as np

PARALLEL_ENTRIES = 1 << 20

# numba's "workqueue" threading layer (used where neither OpenMP nor TBB is installed) aborts
# the process when two threads launch parallel kernels at once (a threaded Dask scheduler,
# a thread pool of the caller's); launches are then serialised. "omp" and "tbb" are safe.
_LAUNCH_LOCK = threading.Lock()


def run_parallel(kernel: Any, *args: Any) -> Any:
    """Call a ``@njit(parallel=True)`` ``kernel``, one launch at a time under the workqueue
    threading layer (whose threads cannot serve two callers)."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is chosen by this launch
        with _LAUNCH_LOCK:
            return kernel(*args)
    if layer == "workqueue":
        with _LAUNCH_LOCK:
            return kernel(*args)
    return kernel(*args)


@functools.cache
def _outer_kernel() -> Any:
    from numba import njit, prange

    @njit(parallel=True, cache=True, nogil=True)
    def outer(a, b, out):  # type: ignore[no-untyped-def]
        for s in prange(a.shape[0]):
            for i in range(a.shape[1]):
                ai = a[s, i]
                for j in range(b.shape[1]):
                    out[s, i, j] = ai * b[s, j]

    return outer


# Large CPU results come from a small pool of buffers, each reused once every array made
# from it has been dropped by the caller: a fresh buffer costs the kernel a page fault and
# the operating system's zeroing of every page it writes (as much time again as writing a
# Jacobian at the memory bandwidth; JAX and PyTorch keep caching allocators for the same
# reason). Results never share memory with anything the caller holds. A buffer larger than
# POOL_MAXIMUM_BYTES is never kept.
POOL_MINIMUM_BYTES = 4 << 20
POOL_MAXIMUM_BYTES = 1 << 30
POOL_BUFFERS = 8
_POOL: list[np.ndarray] = []  # raw uint8 buffers, oldest first
_POOL_LOCK = threading.Lock()


def pooled_empty(shape: Any, dtype: Any) -> np.ndarray:
    """An uninitialised NumPy array of ``shape`` and ``dtype``, from the pool when large.

    >>> a = pooled_empty((1024, 1024), np.float64); a.shape, a.dtype.name
    ((1024, 1024), 'float64')
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < POOL_MINIMUM_BYTES or nbytes > POOL_MAXIMUM_BYTES:
        return np.empty(shape, dtype=dtype)
    with _POOL_LOCK:
        for i in range(len(_POOL)):
            if _POOL[i].nbytes == nbytes and _free(i):
                buffer = _POOL.pop(i)
                _POOL.append(buffer)  # most recently used last
                return buffer.view(dtype).reshape(shape)
        buffer = np.empty(nbytes, dtype=np.uint8)
        _POOL.append(buffer)
        while len(_POOL) > POOL_BUFFERS or sum(b.nbytes for b in _POOL) > POOL_MAXIMUM_BYTES:
            free = next((i for i in range(len(_POOL) - 1) if _free(i)), None)
            if free is None:
                break
            del _POOL[free]  # the oldest free buffer
        return buffer.view(dtype).reshape(shape)


def release_buffers() -> int:
    """Drop the pool's buffers that no array uses any more (their memory goes back to the
    allocator); returns how many bytes were released. Buffers still in use stay.

    >>> release_buffers() >= 0
    True
    """
    with _POOL_LOCK:
        free = [i for i in range(len(_POOL)) if _free(i)]
        released = sum(_POOL[i].nbytes for i in free)
        for i in reversed(free):
            del _POOL[i]
    return released


def _free(i: int) -> bool:
    """True when only the pool refers to buffer ``i`` (every array made from a buffer holds
    a reference to it as its base): the list and getrefcount's own argument."""
    return sys.getrefcount(_POOL[i]) == 2


def batched_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(B, m)`` and ``(B, n)`` NumPy arrays -> ``(B, m, n)`` with ``out[s, i, j] = a[s, i] *
    b[s, j]``, in NumPy's result dtype.

    >>> batched_outer(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0, 5.0]])).tolist()
    [[[3.0, 4.0, 5.0], [6.0, 8.0, 10.0]]]
    """
    batch, m = a.shape
    n = b.shape[1]
    dtype = np.result_type(a, b)
    if batch * m * n < PARALLEL_ENTRIES or dtype not in (np.float32, np.float64):
        return a[:, :, None] * b[:, None, :]
    out = pooled_empty((batch, m, n), dtype)
    # contiguous operands (B m + B n numbers) let the inner loop vectorise
    run_parallel(_outer_kernel(), np.ascontiguousarray(a, dtype), np.ascontiguousarray(b, dtype), out)
    return out
