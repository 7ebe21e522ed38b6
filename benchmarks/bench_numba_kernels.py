"""Benchmark and compiler report of the numba-CUDA kernels (issue 6).

Timing (needs a real GPU; the CUDA simulator does not count): the element-wise
value-and-derivative kernels (``tanh``, ``gelu``, binary ``mul``) on ``2**26`` elements and
the scaling kernels (``scale_rows``, ``scale_cols`` of a batched ``(B, 32, 32)`` factor,
``B = 2**16``), in float32 and float64. Each is timed with CUDA events, the median of the
repeats after one warm-up launch, against its floor: the bytes it must read and write over
the device-to-device copy bandwidth measured here (a 512 MiB copy). The JSON goes to
``./batchjac-bench/numba_kernels_gpu.json`` with the device name, driver and versions.

    python benchmarks/bench_numba_kernels.py [--repeats 20] [--out PATH]

Compiler report (``--ptx``; needs NVVM, NVRTC and ``ptxas``, no GPU): every kernel is
compiled to PTX for compute capability 9.0 with representative signatures, the PTX is
searched for ``.local`` (thread-local memory: spills or local arrays) and ``ptxas -v``
reports registers, stack frame and spill bytes per kernel; the text goes to
``./batchjac-bench/numba_ptx_report.txt``.

    python benchmarks/bench_numba_kernels.py --ptx [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from harness import DEFAULT_OUT

COPY_BYTES = 512 << 20


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def gpu_problem():
    """Why no timing can run here, or None."""
    import numba

    if numba.config.ENABLE_CUDASIM:
        return "NUMBA_ENABLE_CUDASIM=1: the simulator runs kernels in Python, timings would mean nothing"
    from batchjac.backends.dispatch import backend_problem

    return backend_problem("numba")


def median_ms(run, repeats):
    from numba import cuda

    run()  # warm-up: compiles and loads the kernel
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop))
    return statistics.median(times)


def copy_bandwidth(repeats):
    """Bytes moved per second (read + write) by a device-to-device copy."""
    from numba import cuda

    src = cuda.device_array(COPY_BYTES // 4, dtype=np.float32)
    dst = cuda.device_array_like(src)
    ms = median_ms(lambda: dst.copy_to_device(src), repeats)
    return 2 * COPY_BYTES / (ms * 1e-3)


def cases(dtype, rng):
    from batchjac.backends import numba_ops

    def on_gpu(*shape):
        a = numba_ops.empty(shape, dtype)
        numba_ops.device_view(a).copy_to_device(rng.standard_normal(shape).astype(dtype))
        return a

    size = 1 << 26
    x, u = on_gpu(size), on_gpu(size)
    batch, m, n = 1 << 16, 32, 32
    a, dr, dc = on_gpu(batch, m, n), on_gpu(batch, m), on_gpu(batch, n)
    item = np.dtype(dtype).itemsize
    return {
        "elementwise tanh": (lambda: numba_ops.elementwise("tanh", x), 3 * size * item),
        "elementwise gelu": (lambda: numba_ops.elementwise("gelu", x), 3 * size * item),
        "elementwise mul": (lambda: numba_ops.elementwise("mul", x, u), 5 * size * item),
        "scale_rows (B,32,32)": (lambda: numba_ops.scale_rows(dr, a), (2 * a.size + dr.size) * item),
        "scale_cols (B,32,32)": (lambda: numba_ops.scale_cols(a, dc), (2 * a.size + dc.size) * item),
    }


def machine():
    import numba
    from numba import cuda

    dev = cuda.get_current_device()
    return {
        "device": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
        "compute_capability": list(dev.compute_capability),
        "driver": ".".join(map(str, cuda.cudadrv.driver.driver.get_version())),
        "runtime": ".".join(map(str, cuda.runtime.get_version())),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def bench(repeats, out):
    problem = gpu_problem()
    if problem is not None:
        sys.exit(f"bench_numba_kernels: no GPU to time on: {problem}")
    bandwidth = copy_bandwidth(repeats)
    rng = np.random.default_rng(20261122)
    rows = []
    for dtype in (np.float32, np.float64):
        for name, (run, nbytes) in cases(dtype, rng).items():
            ms = median_ms(run, repeats)
            floor_ms = nbytes / bandwidth * 1e3
            rows.append({
                "kernel": name, "dtype": np.dtype(dtype).name, "bytes": nbytes,
                "median_ms": ms, "floor_ms": floor_ms, "ratio_to_floor": ms / floor_ms,
            })  # fmt: skip
            print(
                f"{name:24s} {np.dtype(dtype).name:8s} {ms:8.3f} ms  floor {floor_ms:8.3f} ms  x{ms / floor_ms:5.2f}"
            )
    report = {
        "machine": machine(),
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "repeats": repeats,
        "results": rows,
    }
    out = Path(out or DEFAULT_OUT / "numba_kernels_gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


# --------------------------------------------------------------------------------------
# PTX and ptxas report
# --------------------------------------------------------------------------------------


def _pin_compute_capability(cc):
    """Without a GPU, numba asks the driver for the compute capability when it compiles a
    device function called from a kernel; answer it with ``cc`` instead."""
    import types

    import numba.cuda.dispatcher as dispatcher

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)


def kernel_signatures():
    """(label, kernel dispatcher, argument types) for every kernel, float32 and float64."""
    from batchjac.kernels import numba_elementwise as ew
    from batchjac.kernels import numba_numerical as nm
    from batchjac.kernels import numba_products as pr
    from batchjac.kernels import numba_scaling as sc
    from batchjac.kernels import numba_slogdet as sl
    from numba import types
    from numba.cuda import jit

    from batchjac.core.elementwise_rules import BINARY, UNARY

    def uncached(factory):
        return factory.__wrapped__  # the cache keys on the device id, which needs a driver

    rational = jit(device=True)(_rational)
    for dtype in (np.dtype(np.float32), np.dtype(np.float64)):
        import numba

        T = numba.from_dtype(dtype)
        C = nm.complex_type(dtype)
        v, m2, m3 = T[::1], T[:, ::1], T[:, :, ::1]
        i64 = types.int64[::1]
        tag = dtype.name
        for name, r in {**UNARY, **BINARY}.items():
            if r.user:
                continue
            kernel = uncached(ew.rule_kernel)(dtype, name, r.scalar, r.arity, tuple(r.params))
            args = (v, v, v, types.UniTuple(T, len(r.params))) if r.arity == 1 else (v,) * 5
            yield f"elementwise {name} {tag}", kernel, args
        for shared in (False, True):
            a = m2 if shared else m3
            lay = "shared" if shared else "batched"
            yield f"scale_rows {lay} {tag}", uncached(sc.scale_rows_kernel)(shared), (m2, a, m3)
            yield f"scale_cols {lay} {tag}", uncached(sc.scale_cols_kernel)(shared), (a, m2, m3)
            yield f"add_diagonal {lay} {tag}", uncached(sc.add_diagonal_kernel)(shared), (a, m2, m3)
            yield f"matvec {lay} {tag}", uncached(pr.matvec_kernel)(dtype, shared), (a, m2, m2)
            yield f"vecmat {lay} {tag}", uncached(pr.vecmat_kernel)(dtype, shared), (m2, a, m2)
            yield (
                f"tiled_matmul {lay} x batched {tag}",
                uncached(pr.tiled_matmul_kernel)(dtype, shared, False),
                (a, m3, m3),
            )
        yield f"diag_to_dense {tag}", uncached(sc.diag_to_dense_kernel)(), (m2, m3)
        yield f"lu_slogdet {tag}", uncached(sl.lu_slogdet_kernel)(dtype), (m3, v, v)
        yield (
            f"perturb_complex {tag}",
            uncached(nm.perturb_complex_kernel)(dtype),
            (m2, i64, m2, C[:, :, ::1]),
        )
        yield f"perturb_central {tag}", uncached(nm.perturb_central_kernel)(), (m2, i64, m2, T[:, :, :, ::1])
        yield f"perturb_forward {tag}", uncached(nm.perturb_forward_kernel)(), (m2, i64, m2, m3)
        yield (
            f"complex_step_quotient {tag}",
            uncached(nm.complex_step_quotient_kernel)(),
            (C[:, :, ::1], m2, m3),
        )
        yield f"central_quotient {tag}", uncached(nm.central_quotient_kernel)(), (T[:, :, :, ::1], m2, m3)
        yield f"forward_quotient {tag}", uncached(nm.forward_quotient_kernel)(), (m3, m2, m3)
        for n, m in ((3, 2), (64, 64)):
            for label, factory in (
                ("complex_step_columns", nm.complex_step_columns_kernel),
                ("central_columns", nm.central_columns_kernel),
            ):
                kernel = uncached(factory)(dtype, rational, n, m)
                yield f"{label} n={n} m={m} {tag}", kernel, (m2, T, m3)


def _rational(x, out):
    """The test function of tests/test_numba_kernels.py, for the device_jacobian kernels."""
    out[0] = x[0] * x[1] * x[1]
    out[1] = x[0] * x[0] * x[0] - x[1] * x[2] + x[2] / (1.0 + x[0] * x[0])


_PTXAS_FUNCTION = re.compile(r"Compiling entry function '(\S+)'")
_PTXAS_NUMBERS = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads.*?Used (\d+) registers", re.S
)


def ptx_report(out):
    from numba import cuda

    cc = (9, 0)
    _pin_compute_capability(cc)
    lines = [
        f"numba-CUDA kernels of batchjac: PTX for sm_{cc[0]}{cc[1]}, ptxas -v (numba {__import__('numba').__version__})",
        "columns: registers, stack frame bytes, spill store/load bytes, '.local' in the PTX",
        "",
    ]
    worst = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, kernel, args in kernel_signatures():
            ptx, _ = cuda.compile_ptx(kernel.py_func, args, cc=cc)
            path = Path(tmp) / "k.ptx"
            path.write_text(ptx)
            result = subprocess.run(
                ["ptxas", f"-arch=sm_{cc[0]}{cc[1]}", "-v", str(path), "-o", os.devnull],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            stack, stores, loads, registers = map(int, _PTXAS_NUMBERS.search(result.stderr).groups())
            local = ".local" in ptx
            lines.append(
                f"{label:48s} regs {registers:3d}  stack {stack:5d}  spill {stores:4d}/{loads:<4d}  local {'yes' if local else 'no'}"
            )
            if stores or loads or local:
                worst.append(label)
    lines += ["", f"kernels with spills or local memory: {', '.join(worst) or 'none'}"]
    out = Path(out or DEFAULT_OUT / "numba_ptx_report.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ptx", action="store_true", help="write the PTX/ptxas report instead of timing")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.ptx:
        ptx_report(args.out)
    else:
        bench(args.repeats, args.out)


if __name__ == "__main__":
    main()
