"""What every benchmark of batchjac shares: clocks, peak memory, ceilings, machine info,
peers (JAX, PyTorch) and the suite's output (terminal table, JSON, Markdown, PNG).

A *device* (:class:`CpuDevice`, :class:`GpuDevice`) times a callable, measures its peak
memory, syncs, and opens NVTX ranges (GPU only). A *peer* (:class:`JaxPeer`,
:class:`TorchPeer`) puts NumPy arrays on that device in its framework and builds the
batched Jacobian transforms of a per-sample function. Ceilings are measured once per run:
copy bandwidth (bytes read + written per second) and matmul rates (multiply-adds per
second) in float32 and float64.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import statistics
import textwrap
import time
import tracemalloc
from importlib import metadata
from pathlib import Path

import numpy as np

import batchjac as bj

# Where results go unless --out says otherwise: a folder under the one the command runs in,
# never the package or the reference results kept in the repository (benchmarks/results/).
DEFAULT_OUT = Path("batchjac-bench")

# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


def host_seconds(run):
    """Wall time of one call of ``run`` by the host's clock (``time.perf_counter``)."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def median_ms(run, repeats=5):
    """Median wall time of ``run`` in milliseconds over ``repeats`` calls after one warm-up
    (host clock: for CPU work, or GPU work that synchronises inside ``run``)."""
    run()
    return 1e3 * statistics.median(host_seconds(run) for _ in range(repeats))


def save_result(out, name, result):
    """Print ``result`` as JSON and write it to ``out/name`` (the folder is created)."""
    text = json.dumps(result, indent=2, default=_jsonable)
    print(text)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text + "\n")


def median_seconds(runs, repeats, warmup=1, rounds=1, clock=host_seconds):
    """Median time of each callable of ``runs`` (name -> callable) by ``clock``.

    Each round gives every callable in turn ``warmup`` untimed calls and then ``repeats``
    timed ones: several rounds spread a slow spell of the machine over all of them, and the
    warm-up of each turn lets the thread pool of the previous one (OpenBLAS, XLA, PyTorch's
    OpenMP) go idle before the clock starts.
    """
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(warmup):
                run()
            for _ in range(repeats):
                times[name].append(clock(run))
    return {name: statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------


class CpuDevice:
    """The host: NumPy arrays, host timers, ``tracemalloc`` peaks, no NVTX."""

    name = "cpu"
    backend = "numpy"
    xp = np
    clock = staticmethod(host_seconds)
    timing_method = "host timer (time.perf_counter) per call; median of the repeats after warm-up"
    peak_method = (
        "tracemalloc peak of one call (NumPy's data buffers; JAX and PyTorch allocate outside its view)"
    )

    @staticmethod
    def peak(run):
        tracemalloc.start()
        try:
            run()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    @staticmethod
    def to_host(a):
        return np.asarray(a)

    @staticmethod
    def free_bytes():
        return None

    @staticmethod
    def nvtx(name):
        return contextlib.nullcontext()

    @staticmethod
    def profiler():
        return contextlib.nullcontext()


class GpuDevice:
    """An NVIDIA GPU through CuPy: CUDA-event clocks, the memory pool's peak, NVTX ranges."""

    name = "gpu"
    backend = "cupy"
    timing_method = (
        "CUDA events recorded on CuPy's stream around each call; a peer's call ends by waiting "
        "for its own work, so its span covers it; median of the repeats after warm-up"
    )
    peak_method = "CuPy memory pool bytes after one call, the pool emptied before (batchjac); torch.cuda.max_memory_allocated (PyTorch); device peak_bytes_in_use since start (JAX)"

    def __init__(self, cp):
        self.cp = cp
        self.xp = cp

    def clock(self, run):
        start, stop = self.cp.cuda.Event(), self.cp.cuda.Event()
        start.record()
        run()
        stop.record()
        stop.synchronize()
        return self.cp.cuda.get_elapsed_time(start, stop) / 1e3

    def peak(self, run):
        pool = self.cp.get_default_memory_pool()
        pool.free_all_blocks()
        run()
        self.cp.cuda.Device().synchronize()
        return pool.total_bytes()

    @staticmethod
    def to_host(a):
        return a.get()

    def free_bytes(self):
        return self.cp.cuda.runtime.memGetInfo()[0] + self.cp.get_default_memory_pool().free_bytes()

    def nvtx(self, name):
        return _nvtx_range(self.cp, name)

    def profiler(self):
        """``cudaProfilerStart/Stop`` around the block, for ``--profile-from-start off``."""
        from cupyx.profiler import profile

        return profile()


@contextlib.contextmanager
def _nvtx_range(cp, name):
    cp.cuda.nvtx.RangePush(name)
    try:
        yield
    finally:
        cp.cuda.nvtx.RangePop()


def current_device(want_gpu=None):
    """The GPU when batchjac's CuPy backend works here (or ``want_gpu`` is True), else the CPU."""
    usable = "cupy" in bj.available_backends()
    if want_gpu and not usable:
        raise SystemExit(
            "--device gpu: batchjac's CuPy backend is not available here (python -m batchjac info)"
        )
    if usable and want_gpu is not False:
        from batchjac.core.arrays import cupy_module

        return GpuDevice(cupy_module())
    return CpuDevice()


# --------------------------------------------------------------------------------------
# Ceilings of this machine
# --------------------------------------------------------------------------------------


def copy_bandwidth(device, nbytes, repeats=5):
    """Bytes read + written per second by a copy of ``nbytes`` on ``device`` (device to
    device on a GPU), the median of ``repeats``."""
    src = device.xp.ones(nbytes, dtype=np.uint8)
    dst = device.xp.empty_like(src)
    seconds = median_seconds({"copy": lambda: device.xp.copyto(dst, src)}, repeats, clock=device.clock)
    return 2 * nbytes / seconds["copy"]


def measure_ceilings(device, copy_bytes, matmul_n, repeats=5):
    """Copy bandwidth (bytes read + written per second, :func:`copy_bandwidth`) and matmul
    rates (multiply-adds per second of an ``(n, n) @ (n, n)`` product, the median of
    ``repeats``) for float32 and float64 on ``device``."""
    squares = {
        np.dtype(t).name: device.xp.ones((matmul_n, matmul_n), dtype=t) for t in (np.float32, np.float64)
    }
    runs = {name: (lambda a=a: a @ a) for name, a in squares.items()}
    seconds = median_seconds(runs, repeats=repeats, clock=device.clock)
    return {
        "copy_bytes_per_s": copy_bandwidth(device, copy_bytes, repeats),
        "matmul_madds_per_s": {name: matmul_n**3 / seconds[name] for name in squares},
    }


# --------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------


def openblas_core():
    """The kernel family OpenBLAS chose at load time (``"Haswell"``, ``"SkylakeX"``), or None."""
    for path in (Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas*.so*"):
        lib = ctypes.CDLL(str(path))  # already loaded by NumPy: the same library
        for symbol in (
            "scipy_openblas_get_corename64_",
            "scipy_openblas_get_corename",
            "openblas_get_corename",
        ):
            if hasattr(lib, symbol):
                getter = getattr(lib, symbol)
                getter.restype = ctypes.c_char_p
                return getter().decode()
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    """Versions of batchjac, Python and every library the suite may touch (None: absent)."""
    found = {"batchjac": bj.__version__, "python": platform.python_version()}
    for package in (
        "numpy",
        "numba",
        "numba-cuda",
        "cupy",
        "cupy-cuda12x",
        "cupy-cuda13x",
        "jax",
        "jaxlib",
        "torch",
        "tqdm",
        "matplotlib",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def machine(device):
    """The device the suite ran on: CPU model and OpenBLAS kernels; GPU name, memory, driver."""
    info = {
        "device": device.name, "platform": platform.platform(), "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "openblas_core": openblas_core(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }  # fmt: skip
    if isinstance(device, GpuDevice):
        runtime = device.cp.cuda.runtime
        props = runtime.getDeviceProperties(device.cp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info |= {
            "gpu": name, "gpu_memory_bytes": props["totalGlobalMem"],
            "cuda_driver": runtime.driverGetVersion(), "cuda_runtime": runtime.runtimeGetVersion(),
        }  # fmt: skip
    return info


# --------------------------------------------------------------------------------------
# Peers: JAX and PyTorch on the suite's device
# --------------------------------------------------------------------------------------


class PeerUnavailable(Exception):
    """A peer framework is not installed, or has no backend for the suite's device."""


class JaxPeer:
    """``jax.jit(jax.vmap(jax.jacfwd(f)))`` and friends, float64 enabled, on the device."""

    name = "jax"

    def __init__(self, device):
        try:
            import jax
        except ImportError as err:
            raise PeerUnavailable(f"jax is not installed ({err})") from err
        jax.config.update("jax_enable_x64", True)  # W4 and W5 are float64
        platform_name = "gpu" if device.name == "gpu" else "cpu"
        try:
            self.device = jax.devices(platform_name)[0]
        except RuntimeError as err:
            raise PeerUnavailable(f"jax has no {platform_name} device here ({err})") from err
        self.jax = jax
        self.xp = jax.numpy
        self.version = jax.__version__
        self.peak_method = "device peak_bytes_in_use since start" if platform_name == "gpu" else None

    def asarray(self, a):
        return self.jax.device_put(a, self.device)

    def jacobian(self, f, mode):
        transform = {"jacfwd": self.jax.jacfwd, "jacrev": self.jax.jacrev}[mode]
        return self.jax.jit(self.jax.vmap(transform(f)))

    def elementwise_grad(self, g):
        """The element-wise trick: the gradient of ``sum(g(x))`` is ``g'(x)``."""
        return self.jax.jit(self.jax.vmap(self.jax.grad(lambda x: g(x).sum())))

    @staticmethod
    def sync(out):
        out.block_until_ready()

    @staticmethod
    def to_numpy(out):
        return np.asarray(out)

    def peak_bytes(self):
        stats = self.device.memory_stats() if self.peak_method else None
        return stats.get("peak_bytes_in_use") if stats else None


class TorchPeer:
    """``torch.func.vmap(torch.func.jacfwd(f))`` and friends on the device."""

    name = "torch"

    def __init__(self, device):
        try:
            import torch
        except ImportError as err:
            raise PeerUnavailable(f"torch is not installed ({err})") from err
        if device.name == "gpu" and not torch.cuda.is_available():
            raise PeerUnavailable("torch has no CUDA device here (a CPU-only build?)")
        self.torch = torch
        self.xp = torch
        self.device = "cuda" if device.name == "gpu" else "cpu"
        self.version = torch.__version__
        self.peak_method = "torch.cuda.max_memory_allocated" if self.device == "cuda" else None

    def asarray(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def jacobian(self, f, mode):
        transform = {"jacfwd": self.torch.func.jacfwd, "jacrev": self.torch.func.jacrev}[mode]
        return self.torch.func.vmap(transform(f))

    def elementwise_grad(self, g):
        return self.torch.func.vmap(self.torch.func.grad(lambda x: g(x).sum()))

    def sync(self, out):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    @staticmethod
    def to_numpy(out):
        return out.detach().cpu().numpy()

    def peak_bytes(self):
        if not self.peak_method:
            return None
        peak = self.torch.cuda.max_memory_allocated()
        self.torch.cuda.reset_peak_memory_stats()
        return peak


def load_peers(device, enabled=True):
    """``(peers, skipped)``: the peer frameworks usable on ``device`` and why others are not."""
    if not enabled:
        return [], {"jax": "peers disabled (--no-peers)", "torch": "peers disabled (--no-peers)"}
    peers, skipped = [], {}
    for make in (JaxPeer, TorchPeer):
        try:
            peers.append(make(device))
        except PeerUnavailable as err:
            skipped[make.name] = str(err)
    return peers, skipped


# --------------------------------------------------------------------------------------
# Output: terminal table, JSON, Markdown, PNG
# --------------------------------------------------------------------------------------


def _fmt(value, spec, empty="-"):
    return empty if value is None else format(value, spec)


def table_lines(results):
    """The terminal table: one line per (workload, batch, runner); ``bj/peer`` is batchjac's
    time over that peer's (above 1: batchjac is slower)."""
    head = f"{'wl':<3} {'batch':>8} {'runner':<18} {'time ms':>10} {'x floor':>8} {'floor':<8} {'peak MiB':>9} {'max err':>9} {'bj/peer':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        if r.get("skipped"):
            lines.append(f"{r['workload']:<3} {r['batch']:>8} {r['runner']:<18} skipped: {r['skipped']}")
            continue
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        lines.append(
            f"{r['workload']:<3} {r['batch']:>8} {r['runner']:<18} {1e3 * r['median_s']:>10.3f} "
            f"{_fmt(r['ratio_to_floor'], '.2f'):>8} {r['floor_kind']:<8} {_fmt(peak, '.1f'):>9} "
            f"{_fmt(r['max_error'], '.1e'):>9} {_fmt(r.get('batchjac_over_this'), '.2f'):>8}"
        )
    return lines


def write_json(path, report):
    path.write_text(json.dumps(report, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


TARGETS_NOTE = (
    "Targets are goals the batchjac developers set for the library, not checks of this machine or "
    "of this run: a target not yet met says where batchjac is still slower than its goal, and the "
    "measurements are valid either way."
)


def verdict_text(verdict):
    """A target's verdict as the reader sees it: ``missed`` reads "not yet met"."""
    return "not yet met" if verdict == "missed" else verdict


def target_lines(targets):
    """The terminal's summary of the targets: the note, then one line per workload."""
    lines = ["", *textwrap.wrap("Development targets. " + TARGETS_NOTE, 100)]
    for t in targets:
        lines.append(f"  {t['workload']}: {verdict_text(t['verdict'])}. {t['by_how_much']}")
    return lines


def markdown(report):
    """The summary: machine, ceilings, the results table, the floors, then the development
    targets: one row per workload saying whether its target is met and, when not, by how
    much and why."""
    m, c = report["machine"], report["ceilings"]
    where = m.get("gpu") or m["cpu_model"]
    lines = [
        f"# batchjac benchmark suite: {report['mode']} sizes on the {m['device'].upper()} ({where})",
        "",
        f"Command: `{report['command']}`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v is not None)
        + ".",
        "",
        f"Ceilings, measured once: copy {c['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + written); matmul "
        + ", ".join(f"{k} {v / 1e9:.1f} G multiply-adds/s" for k, v in c["matmul_madds_per_s"].items())
        + ".",
        f"Timing: {report['timing_method']}. Peak memory: {report['peak_method']}.",
        "",
        "## Results",
        "",
        "`x floor` is the time over the workload's floor (named under Floors); `bj/peer` is "
        "batchjac's time over the peer's (above 1: batchjac is slower).",
        "",
        "```",
        *table_lines(report["results"]),
        "```",
        "",
        "## Floors",
        "",
        *(f"- **{key}**: {text}" for key, text in report["floors"].items()),
        "",
        "## Development targets",
        "",
        TARGETS_NOTE,
        "",
        "| workload | target | status | by how much | why |",
        "|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        lines.append(
            f"| {t['workload']} | {t['target']} | {verdict_text(t['verdict'])} | {t['by_how_much']} | {t['why']} |"
        )
    if report["skipped_peers"]:
        lines += [
            "",
            "Skipped peers: " + "; ".join(f"{k}: {v}" for k, v in report["skipped_peers"].items()) + ".",
        ]
    return "\n".join(lines) + "\n"


# matplotlib's ten "tab" colours, by name: distinct, and readable for most colour vision.
PALETTE = tuple(
    f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")
)


def runner_colours(results):
    """One colour per runner for every panel of the plot: batchjac first, then the others
    in the order they first appear."""
    names = list(dict.fromkeys(["batchjac", *(r["runner"] for r in results if not r.get("skipped"))]))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def plot(path, results, titles):
    """Median time per call, one panel per workload, one colour per runner in every panel
    and one legend for all, the floor drawn in black. A workload run at one batch size is a
    bar per runner, fastest on top; a sweep of batch sizes is a line per runner against the
    batch (log-log). ``titles`` maps a workload to its title. Returns None, or a note saying
    why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    colours = runner_colours(results)
    workloads = sorted({r["workload"] for r in results})
    columns = min(3, len(workloads))
    rows = -(-len(workloads) // columns)
    height = 3.4 * rows + 0.6  # inches: the panels and a strip for the legend
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, height), squeeze=False)
    for ax in axes.flat[len(workloads) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, workloads):
        rows_here = [r for r in results if r["workload"] == key]
        timed = [r for r in rows_here if not r.get("skipped")]
        batches = sorted({r["batch"] for r in rows_here})
        scale, unit = _time_unit(max((r["median_s"] for r in timed), default=1.0))
        ax.set_axisbelow(True)
        if len(batches) == 1:
            _bars(ax, timed, colours, scale, unit)
            ax.set_title(f"{key}, batch {batches[0]}: {titles.get(key, '')}", fontsize=9, wrap=True)
        else:
            _lines(ax, timed, colours, scale, unit)
            ax.set_title(f"{key}: {titles.get(key, '')}", fontsize=9, wrap=True)
    handles = [Patch(color=colour, label=name) for name, colour in colours.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", label="floor (the least time possible)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _time_unit(seconds):
    """``(scale, unit)`` that shows ``seconds`` as a number between 1 and 1000."""
    for scale, unit in ((1.0, "s"), (1e3, "ms"), (1e6, "µs")):
        if seconds * scale >= 1:
            return scale, unit
    return 1e9, "ns"


def _bars(ax, timed, colours, scale, unit):
    """One batch size: a horizontal bar per runner, fastest on top, each labelled with its
    time over the floor; the floor is a dashed vertical line."""
    timed = sorted(timed, key=lambda r: r["median_s"], reverse=True)
    positions = range(len(timed))
    ax.barh(positions, [scale * r["median_s"] for r in timed], color=[colours[r["runner"]] for r in timed])
    ax.set_yticks(list(positions), [r["runner"] for r in timed], fontsize=8)
    ax.set_xscale("log")
    floor = timed[0]["floor_s"] if timed else None
    if floor:
        ax.axvline(scale * floor, color="black", linestyle="--", linewidth=1)
    for y, r in zip(positions, timed):
        if r["ratio_to_floor"]:
            label = f" {r['ratio_to_floor']:.1f}x floor"
            ax.annotate(label, (scale * r["median_s"], y), va="center", fontsize=7)
    ax.margins(x=0.3)
    ax.grid(True, which="major", axis="x", alpha=0.3)
    ax.set_xlabel(f"median time per call ({unit}); shorter is faster", fontsize=8)


def _lines(ax, timed, colours, scale, unit):
    """A sweep: time against batch per runner (log-log), batchjac drawn thicker; the floor
    dashed in black."""
    for runner in dict.fromkeys(r["runner"] for r in timed):
        points = sorted((r["batch"], scale * r["median_s"]) for r in timed if r["runner"] == runner)
        width = 2.5 if runner == "batchjac" else 1.2
        ax.loglog(*zip(*points), marker="o", markersize=4, color=colours[runner], linewidth=width)
    floors = sorted({(r["batch"], scale * r["floor_s"]) for r in timed if r["floor_s"]})
    if floors:
        ax.loglog(*zip(*floors), color="black", linestyle="--", linewidth=1)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_xlabel("batch", fontsize=8)
    ax.set_ylabel(f"median time per call ({unit})\nlower is faster", fontsize=8)
