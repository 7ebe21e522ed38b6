"""The benchmark suite of batchjac: six workloads (W1 to W6) timed against JAX, PyTorch and
plain NumPy on the same device, each set against its floor and against its target.

    python -m batchjac bench [--tiny | --quick | --full] [--workloads W1,W3] [--sizes 1000,10000]
                             [--repeats N] [--out DIR] [--no-peers] [--device auto|cpu|gpu]
    python -m batchjac bench --profile W2      # one run of one workload, for Nsight or cProfile
    python benchmarks/run.py [same arguments]  # the same, in a source checkout

Results go to ``--out`` (default ``./batchjac-bench/``): ``suite_{cpu,gpu}.json``, ``.md``
and ``.png``. The reference results kept in the repository are written on purpose, with
``--out benchmarks/results``. ``README.md`` beside this file explains every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import harness
import numpy as np
from workloads import WORKLOADS

from batchjac.__main__ import PROG, CommandLineParser, positive_int, positive_ints

REFERENCE_SAMPLES = 64  # the max error is taken over the first samples of the first input
CEILING_SIZES = {"tiny": (8 << 20, 256), "quick": (64 << 20, 1024), "full": (1 << 30, 8192)}
REPEATS = {"tiny": 1, "quick": 5, "full": 10}

DESCRIPTION = """\
Times batchjac's batched Jacobians on six workloads against JAX and PyTorch (when
installed: pip install "batchjac[bench]") and a plain NumPy closed form, on the same
device. Each result is set against a floor, the time its memory traffic or arithmetic
needs at this machine's measured copy bandwidth and matmul rate, and against the target
the batchjac developers set for the workload. Prints a table; writes JSON, Markdown and
a PNG plot.
"""


def epilog():
    workloads = "\n".join(f"  {w.key}  {w.title} ({w.dtype})" for w in WORKLOADS.values())
    singles = ", ".join(
        sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    )
    return (
        f"workloads:\n{workloads}\n\n"
        "Targets are goals for batchjac's development, not checks of your machine: a target\n"
        "not yet met says where batchjac is still slower than its goal; the measurements are\n"
        "valid either way.\n\n"
        f"one benchmark: {PROG} bench NAME [--help], NAME one of\n  {singles}"
    )


def parse_args(argv):
    parser = CommandLineParser(
        prog=f"{PROG} bench", description=DESCRIPTION, epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    for name, text in (("tiny", "the smallest sizes, a few seconds in all (a smoke test)"),
                       ("quick", "moderate sizes, seconds a workload (the default on the CPU)"),
                       ("full", "the largest sizes, for a GPU (the default when batchjac's CuPy backend works)")):  # fmt: skip
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name, help=text)
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), metavar="W1,W3",
        help="the workloads to run, comma-separated (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", type=positive_ints, metavar="B1,B2",
        help="batch sizes to sweep, comma-separated, in place of each workload's own (e.g. 1000,1e4)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=positive_int, metavar="N",
        help="timed calls per runner in each round (default: tiny 1, quick 5, full 10)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=harness.DEFAULT_OUT, metavar="DIR",
        help=f"the folder for the JSON, Markdown and PNG, created if needed (default: ./{harness.DEFAULT_OUT}/)",
    )  # fmt: skip
    parser.add_argument(
        "--no-peers", action="store_true", help="leave JAX and PyTorch out: batchjac and NumPy only"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "gpu"), default="auto",
        help="where to run (default: auto, the GPU when batchjac's CuPy backend works)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", metavar="WORKLOAD",
        help="call batchjac once on WORKLOAD (after a warm-up) for a profiler and write nothing: inside "
        "the NVTX range profile/WORKLOAD and cudaProfilerStart/Stop on a GPU, under cProfile on the CPU",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.workloads = [key.strip().upper() for key in args.workloads.split(",")]
    unknown = [
        key
        for key in args.workloads + ([args.profile.upper()] if args.profile else [])
        if key not in WORKLOADS
    ]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose among {', '.join(WORKLOADS)}")
    return args


# --------------------------------------------------------------------------------------
# Runners: batchjac, each peer transform, plain NumPy
# --------------------------------------------------------------------------------------


@dataclass
class Runner:
    """One contestant on one problem: ``call(i)`` computes the Jacobians of input ``i``
    and waits for them; ``to_numpy`` brings the first samples of an output to the host."""

    name: str
    version: str
    call: Callable
    to_numpy: Callable
    peak: Callable  # () -> bytes or None
    peak_method: str | None

    def rotating(self, count):
        indices = itertools.cycle(range(count))
        return lambda: self.call(next(indices))


def _tree(params, convert):
    """``params`` with every array converted: a dict of arrays or of lists of tuples."""
    if isinstance(params, dict):
        return {k: _tree(v, convert) for k, v in params.items()}
    if isinstance(params, (list, tuple)):
        return type(params)(_tree(v, convert) for v in params)
    return convert(params)


def batchjac_runner(problem, device):
    import batchjac as bj

    params = _tree(problem.params, device.xp.asarray)
    inputs = [tuple(device.xp.asarray(a) for a in args) for args in problem.inputs]
    call = lambda i: problem.batchjac(device.xp, params, *inputs[i])
    return Runner(
        "batchjac", bj.__version__, call, lambda out: device.to_host(out[:REFERENCE_SAMPLES]),
        lambda: device.peak(lambda: call(0)), device.peak_method,
    )  # fmt: skip


def numpy_runner(problem, device):
    call = lambda i: problem.closed_form(problem.params, *problem.inputs[i])
    return Runner(
        "numpy", np.__version__, call, lambda out: np.asarray(out[:REFERENCE_SAMPLES]),
        lambda: device.peak(lambda: call(0)), device.peak_method,
    )  # fmt: skip


def peer_runners(problem, peer, peer_mode):
    """The peer's transforms of ``problem.function``: ``vmap-grad`` for element-wise
    workloads, else ``jacfwd`` and ``jacrev``; each name is ``framework.transform``."""
    params = _tree(problem.params, peer.asarray)
    inputs = [tuple(peer.asarray(a) for a in args) for args in problem.inputs]

    def f(*args):
        return problem.function(peer.xp, params, *args)

    if peer_mode == "elementwise":
        transforms = {"vmap-grad": peer.elementwise_grad(f)}
    else:
        transforms = {mode: peer.jacobian(f, mode) for mode in ("jacfwd", "jacrev")}
    for mode, jacobian in transforms.items():

        def call(i, jacobian=jacobian):
            out = jacobian(*inputs[i])
            peer.sync(out)
            return out

        def peak(call=call):
            call(0)
            return peer.peak_bytes()

        yield Runner(
            f"{peer.name}.{mode}", peer.version, call, lambda out: peer.to_numpy(out[:REFERENCE_SAMPLES]),
            peak, peer.peak_method,
        )  # fmt: skip


def all_runners(problem, workload, device, peers):
    """``(name, make)`` pairs: ``make()`` gives a runner or a list of them."""
    yield "batchjac", lambda: batchjac_runner(problem, device)
    if device.name == "cpu":
        yield "numpy", lambda: numpy_runner(problem, device)
    for peer in peers:
        yield peer.name, lambda peer=peer: list(peer_runners(problem, peer, workload.peer_mode))


# --------------------------------------------------------------------------------------
# Measuring one problem
# --------------------------------------------------------------------------------------


def reference(problem):
    """The float64 closed form on the first samples of the first input."""
    to64 = lambda a: np.asarray(a, dtype=np.float64)
    args = [to64(a[:REFERENCE_SAMPLES]) for a in problem.inputs[0]]
    return problem.closed_form(_tree(problem.params, to64), *args)


def max_error(out, expected):
    """Max absolute error relative to ``max(1, max |expected|)``."""
    return float(np.max(np.abs(out - expected)) / max(1.0, float(np.max(np.abs(expected)))))


def checked_runners(problem, workload, device, peers):
    """``(runners, failures)``: each runner after a first call (JAX compiles there), its
    error and peak memory; a runner that fails is reported, never raised."""
    expected = reference(problem)
    runners, failures = {}, {}
    for maker, make in all_runners(problem, workload, device, peers):
        try:
            made = make()
            for runner in made if isinstance(made, list) else [made]:
                with device.nvtx(f"{workload.key}/{runner.name}/first-call"):
                    error = max_error(runner.to_numpy(runner.call(0)), expected)
                with device.nvtx(f"{workload.key}/{runner.name}/peak-memory"):
                    runners[runner.name] = (runner, error, runner.peak())
        except Exception as err:  # a peer without an op, or out of memory: report, go on
            failures[maker] = f"{type(err).__name__}: {str(err)[:200]}"
    return runners, failures


def bench_problem(workload, size, problem, device, peers, ceilings, repeats, rounds):
    runners, failures = checked_runners(problem, workload, device, peers)
    runs = {name: runner.rotating(len(problem.inputs)) for name, (runner, _, _) in runners.items()}
    with device.nvtx(f"{workload.key}/timed"):
        seconds = harness.median_seconds(runs, repeats, warmup=2, rounds=rounds, clock=device.clock)
    floors = floor_seconds(workload, problem, ceilings)
    base = {"workload": workload.key, "batch": problem.batch, "size": size, "dtype": workload.dtype,
            "floor_kind": workload.floor_kind, "floor_s": floors[workload.floor_kind], "floors_s": floors}  # fmt: skip
    rows = []
    for name, (runner, error, peak) in runners.items():
        rows.append(base | {
            "runner": name, "version": runner.version, "median_s": seconds[name],
            "ratio_to_floor": seconds[name] / base["floor_s"] if base["floor_s"] else None,
            "peak_bytes": peak, "peak_method": runner.peak_method, "max_error": error,
        })  # fmt: skip
    rows += [base | {"runner": name, "skipped": why} for name, why in failures.items()]
    return with_peer_ratios(rows)


def floor_seconds(workload, problem, ceilings):
    bandwidth = ceilings["copy_bytes_per_s"]
    rate = ceilings["matmul_madds_per_s"][workload.dtype]
    moved = problem.bytes / bandwidth
    return {"memory": moved, "write": moved, "compute": problem.flops / rate if problem.flops else None}


def with_peer_ratios(rows):
    """batchjac's time over each peer's, on batchjac's row and on each peer's."""
    timed = {r["runner"]: r for r in rows if not r.get("skipped")}
    ours = timed.get("batchjac")
    if ours is None:
        return rows
    ours["ratio_to_peers"] = {}
    for name, row in timed.items():
        if name != "batchjac":
            row["batchjac_over_this"] = ours["ratio_to_peers"][name] = ours["median_s"] / row["median_s"]
    return rows


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------

CPU_CHECK = ("CPU: as fast as the best peer", ("",), 1.0)


def target_verdict(workload, rows, device):
    """Met / missed / not checked for every check of the workload's target (and, on the
    CPU, the CPU target), at every batch size of the sweep, the worst one reported."""
    checks = workload.checks + ((CPU_CHECK,) if device.name == "cpu" else ())
    outcomes = [check_outcome(check, rows) for check in checks]
    checked = [o for o in outcomes if o[0] is not None]
    missed = [o for o in checked if not o[0]]
    verdict = "not checked" if not checked else "missed" if missed else "met"
    if checked and len(checked) < len(outcomes) and not missed:
        verdict = f"met ({len(checked)} of {len(outcomes)} checks run)"
    return {
        "workload": workload.key,
        "target": workload.target + (" (CPU: and as fast as the best peer)" if device.name == "cpu" else ""),
        "verdict": verdict,
        "checks": [{"check": c[0], "met": o[0], "detail": o[1]} for c, o in zip(checks, outcomes)],
        "by_how_much": "; ".join(o[1] for o in (missed or outcomes)),
        "why": why(workload, rows) if missed else "",
    }


def check_outcome(check, rows):
    """``(met or None, detail)`` for one check over every batch size."""
    label, kind, limit = check
    worst = None
    for batch in sorted({r["batch"] for r in rows}):
        at = [r for r in rows if r["batch"] == batch and not r.get("skipped")]
        ours = next((r for r in at if r["runner"] == "batchjac"), None)
        if ours is None:
            return False, f"batchjac did not run at batch {batch}"
        ratio, against = _check_ratio(kind, ours, at)
        if ratio is not None and (worst is None or ratio / limit > worst[0] / limit):
            worst = (ratio, against, batch)
    if worst is None:
        return None, f"{label}: not checked (no peer ran)"
    ratio, against, batch = worst
    return ratio <= limit, f"{label}: {ratio:.2f}x {against} at batch {batch} (needs <= {limit:.2f}x)"


def _check_ratio(kind, ours, rows):
    if kind == "floor":
        return ours["ratio_to_floor"], f"the {ours['floor_kind']} floor"
    peers = [r for r in rows if r["runner"] != "batchjac" and r["runner"].startswith(kind)]
    if not peers:
        return None, None
    best = min(peers, key=lambda r: r["median_s"])
    return ours["median_s"] / best["median_s"], f"{best['runner']}'s time"


def why(workload, rows):
    """The workload's account of where batchjac's time goes, with what the figures add."""
    ours = [r for r in rows if r["runner"] == "batchjac" and not r.get("skipped")]
    notes = [workload.why]
    for r in ours[-1:]:
        compute, memory = r["floors_s"]["compute"], r["floors_s"]["memory"]
        if compute and workload.floor_kind != "compute" and compute > memory:
            notes.append(f"the compute floor is {compute / memory:.1f}x the {workload.floor_kind} floor")
        if r["peak_bytes"]:
            notes.append(f"peak {r['peak_bytes'] / 2**20:.0f} MiB")
    return "; ".join(notes)


# --------------------------------------------------------------------------------------
# The suite
# --------------------------------------------------------------------------------------


def problem_sizes(workload, mode, batches):
    sizes = workload.sizes[mode]
    return [dict(sizes[0], batch=b) for b in batches] if batches else sizes


def make_fitting(workload, size, device, rotations):
    """The problem at ``size``, the batch halved while four times its bytes (inputs,
    intermediates, the Jacobian) exceed the device's free memory: "as memory allows"."""
    rng = np.random.default_rng(8)
    problem = workload.make(size, rng, rotations)
    free = device.free_bytes()
    while free is not None and 4 * problem.bytes > free and size["batch"] > 1:
        size = dict(size, batch=size["batch"] // 2, reduced_to_fit=True)
        problem = workload.make(size, rng, rotations)
    return size, problem


def progress(total):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="problem", file=sys.stderr)


def run_suite(args, device):
    mode = args.mode or ("full" if device.name == "gpu" else "quick")
    peers, skipped_peers = harness.load_peers(device, enabled=not args.no_peers)
    with device.nvtx("ceilings"):
        ceilings = harness.measure_ceilings(device, *CEILING_SIZES[mode])
    repeats = args.repeats or REPEATS[mode]
    rounds = 1 if mode == "tiny" else 2
    rotations = 3 if device.name == "gpu" else 2
    plan = [
        (WORKLOADS[k], size) for k in args.workloads for size in problem_sizes(WORKLOADS[k], mode, args.sizes)
    ]
    bar = progress(len(plan))
    results, targets = [], []
    for key in args.workloads:
        workload, rows = WORKLOADS[key], []
        for size in problem_sizes(workload, mode, args.sizes):
            if bar is not None:
                bar.set_description(f"{key} batch {size['batch']}")
            size, problem = make_fitting(workload, size, device, rotations)
            rows += bench_problem(workload, size, problem, device, peers, ceilings, repeats, rounds)
            if bar is not None:
                bar.update()
        results += rows
        targets.append(target_verdict(workload, rows, device))
    if bar is not None:
        bar.close()
    return {
        "suite": "batchjac benchmark suite",
        "command": " ".join([f"{PROG} bench", *sys.argv[1:]]),
        "mode": mode, "repeats": repeats, "rounds": rounds, "rotations": rotations,
        "machine": harness.machine(device), "versions": harness.versions(), "ceilings": ceilings,
        "timing_method": device.timing_method, "peak_method": device.peak_method,
        "floors": {f"{w.key} ({w.floor_kind})": w.floor_text for w in map(WORKLOADS.get, args.workloads)},
        "results": results, "targets": targets, "skipped_peers": skipped_peers,
    }  # fmt: skip


def write_outputs(report, folder, device):
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"suite_{device.name}"
    titles = {key: WORKLOADS[key].title for key in {r["workload"] for r in report["results"]}}
    note = harness.plot(stem.with_suffix(".png"), report["results"], titles)
    report["plot"] = note or stem.with_suffix(".png").name
    harness.write_json(stem.with_suffix(".json"), report)
    stem.with_suffix(".md").write_text(harness.markdown(report))
    return [stem.with_suffix(s) for s in (".json", ".md", ".png")[: 2 if note else 3]], note


def profile(key, args, device):
    """One warm-up, then one run of batchjac inside the NVTX range ``profile/KEY`` and,
    on a GPU, ``cudaProfilerStart/Stop``; on the CPU under cProfile (top 25 printed)."""
    workload = WORKLOADS[key]
    mode = args.mode or ("full" if device.name == "gpu" else "quick")
    size, problem = make_fitting(workload, problem_sizes(workload, mode, args.sizes)[0], device, 1)
    runner = batchjac_runner(problem, device)
    runner.call(0)
    print(f"profile {key} ({workload.title}), size {size}, on the {device.name}", file=sys.stderr)
    with device.nvtx(f"profile/{key}"), device.profiler():
        if device.name == "gpu":
            runner.call(0)
            device.cp.cuda.Device().synchronize()
            return 0
        stats = cProfile.Profile()
        stats.runcall(runner.call, 0)
    pstats.Stats(stats).sort_stats("cumulative").print_stats(25)
    return 0


def main(argv=None):
    args = parse_args(argv)
    device = harness.current_device({"auto": None, "cpu": False, "gpu": True}[args.device])
    if args.profile:
        return profile(args.profile.upper(), args, device)
    report = run_suite(args, device)
    print("\n".join(harness.table_lines(report["results"])))
    print("\n".join(harness.target_lines(report["targets"])))
    written, note = write_outputs(report, args.out, device)
    if note:
        print(note)
    print("wrote " + ", ".join(str(path.resolve()) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
