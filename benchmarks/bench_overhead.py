"""Per-call overhead of ``bj.jacobian`` on a small network (issue "trace to a program").

The exact input Jacobian of the MLP 64 -> 256 -> 256 -> 256 -> 10 (tanh, float32) at B = 256
on the CPU, split into where the time goes: tracing ``f`` into a program, planning (the
first call only: later calls replay the cached plan), evaluating values and local
Jacobians, the chain products (the BLAS part), and the rest. Overhead is everything but
the BLAS / kernel time. At full size the kernels dominate and differ in detail from any
hand-written sequence, so the overhead is measured on the same program at widths 4, B = 2,
where the kernels take microseconds: a call minus the same maths written by hand in NumPy
at that size.

    python benchmarks/bench_overhead.py [--repeats 200] [--out DIR] [--baseline CHECKOUT]

``--baseline`` times an older version back to back with this one (a checkout of it, e.g.
``git worktree add /tmp/old <commit>``), each in subprocesses that alternate, by the older
version's own copy of this script with ``--total-only`` (the whole calls and the small
program, without the phases).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import CpuDevice, machine, median_ms, median_seconds, versions  # noqa: E402

import batchjac as bj  # noqa: E402

WIDTHS = (64, 256, 256, 256, 10)
BATCH = 256


def _weights(rng):
    return [
        ((rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32), (0.1 * rng.standard_normal(m)).astype(np.float32))
        for n, m in zip(WIDTHS[:-1], WIDTHS[1:])
    ]


def mlp(params, x):
    for i, (W, b) in enumerate(params):
        x = bj.linear(x, W, b)
        if i < len(params) - 1:
            x = bj.tanh(x)
    return x


def by_hand(params, x):
    """The same work in plain NumPy: forward pass, tanh' diagonals, the chain from the output."""
    slopes = []
    for W, b in params[:-1]:
        x = np.tanh(x @ W.T + b)
        slopes.append(1 - x * x)
    J = np.broadcast_to(params[-1][0], (x.shape[0], *params[-1][0].shape))
    for (W, _), d in zip(params[-2::-1], slopes[::-1]):
        J = (J * d[:, None, :]).reshape(-1, W.shape[0]) @ W
        J = J.reshape(x.shape[0], -1, W.shape[1])
    return J


def phases(params, x, repeats):
    """Median time (ms) of each phase of one ``bj.jacobian`` call (the structured chain), each
    phase timed inside the same iteration: tracing ``f`` into a program, its structural key,
    values and local Jacobians (the forward schedule), the chain products (the cached plan
    replayed), and, for the first call of a structure only, planning (a cold assembly minus
    a replayed one)."""
    import time

    from batchjac.backends.dispatch import select_backend
    from batchjac.engine import check_options
    from batchjac.exact.capture import capture
    from batchjac.exact.interpret import jacobian as interpret

    f = lambda x: mlp(params, x)  # noqa: E731
    options = check_options(f, (x,))
    ops = select_backend(x)
    batch = x.shape[0]
    names = ("trace", "structural key", "values and local Jacobians", "products (cached plan)")
    times: dict[str, list[float]] = {name: [] for name in names}
    cold: list[float] = []
    for i in range(repeats + 20):
        t0 = time.perf_counter()
        program = capture(f, (x,), {}, options.argnums).program
        t1 = time.perf_counter()
        key = program.key
        t2 = time.perf_counter()
        (value,), edges = interpret.forward(program, [x], program.const_values, program.inputs, batch, ops)
        t3 = time.perf_counter()
        if i % 10 == 9:  # now and then, a first call of the structure: the plan is made
            for k in [k for k in interpret.PLAN_CACHE if k[0] is key]:
                del interpret.PLAN_CACHE[k]
        t4 = time.perf_counter()
        interpret.assemble(program, program.outputs[0], list(program.inputs), edges, batch, np.float32, np, ops)
        t5 = time.perf_counter()
        if i < 20:
            continue  # warm-up
        if i % 10 == 9:
            cold.append(t5 - t4)
            continue
        for name, seconds in zip(names, (t1 - t0, t2 - t1, t3 - t2, t5 - t4)):
            times[name].append(seconds)
    result = {name: 1e3 * float(np.median(v)) for name, v in times.items()}
    result["planning (first call only)"] = 1e3 * float(np.median(cold)) - result["products (cached plan)"]
    return result


def _commit(checkout):
    """The checkout's commit (short hash), or None outside a git work tree."""
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def _total_only(checkout, repeats):
    """The whole call and the small program's overhead of the batchjac in ``checkout``, by its
    own copy of this benchmark (``--total-only``), in a subprocess with it first on the path."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, PYTHONPATH=str(checkout))
        script = checkout / "benchmarks" / "bench_overhead.py"
        command = [sys.executable, str(script), "--total-only", "--repeats", str(repeats), "--out", folder]
        subprocess.run(command, env=env, cwd=folder, check=True, capture_output=True)
        found = json.loads((Path(folder) / "overhead_cpu.json").read_text())
    keys = ("total_ms", "numpy_by_hand_ms", "tiny_call_ms", "tiny_by_hand_ms", "overhead_ms")
    return {k: found[k] for k in keys}


def _baseline(checkout, repeats, rounds=2):
    """An older version against this one, back to back: ``rounds`` pairs of subprocesses
    (the older first), each timing the whole call and the small program (``--total-only``),
    so that a slow spell of the machine falls on both."""
    older, newer = Path(checkout).resolve(), HERE.parent
    runs = {"baseline": [], "this version": []}
    for _ in range(rounds):
        runs["baseline"].append(_total_only(older, repeats))
        runs["this version"].append(_total_only(newer, repeats))
    return {"commit": _commit(older), "this commit": _commit(newer), "runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="per-call overhead of bj.jacobian on a 4-layer MLP (CPU, float32)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--out", default=None, help="folder for overhead_cpu.json (default: print only)")
    parser.add_argument("--total-only", action="store_true", help="only the total (for older versions)")
    parser.add_argument(
        "--baseline", default=None, metavar="CHECKOUT",
        help="also time an older version (a checkout of batchjac, e.g. a git worktree) in a subprocess, "
        "right after this one, and report both",
    )  # fmt: skip
    options = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    params = _weights(rng)
    x = rng.standard_normal((BATCH, WIDTHS[0])).astype(np.float32)
    total = median_ms(lambda: bj.jacobian(lambda x: mlp(params, x), x, method="exact"), options.repeats)
    numpy_ms = median_ms(lambda: by_hand(params, x), options.repeats)
    # The same program at tiny sizes (widths 4, B = 2): the kernels take microseconds, so the
    # time is the Python overhead of tracing, planning lookups and dispatch.
    tiny = [(W[:4, :4] if W.shape[0] > 10 else W[:, :4], b[:4] if b.shape[0] > 10 else b) for W, b in params]
    tiny[0] = (params[0][0][:4], params[0][1][:4])
    x_tiny = x[:2]
    # The full-size network takes the structured chain (fuse="auto" leaves it there), so the
    # proxy is timed on the chain too; the fused path is reported beside it. The kernel time
    # of the tiny call is taken as that of the same maths written by hand in NumPy at the
    # same size (about 15 NumPy calls; batchjac makes about 40, so the difference, reported
    # as the overhead, still counts some kernel time). The runners alternate in rounds, so a
    # slow spell of the machine falls on all of them.
    tiny_f = lambda x: mlp(tiny, x)  # noqa: E731
    keywords = {} if options.total_only else {"fuse": False}
    runs = {
        "chain": lambda: bj.jacobian(tiny_f, x_tiny, method="exact", **keywords),
        "by hand": lambda: by_hand(tiny, x_tiny),
    }
    if not options.total_only:
        runs["fused"] = lambda: bj.jacobian(tiny_f, x_tiny, method="exact", fuse=True)
    rounds = 5
    tiny_ms = {k: 1e3 * v for k, v in median_seconds(runs, max(options.repeats // rounds, 1), 50, rounds).items()}
    overhead = tiny_ms["chain"] - tiny_ms["by hand"]
    result = {
        "total_ms": total, "numpy_by_hand_ms": numpy_ms, "tiny_call_ms": tiny_ms["chain"],
        "tiny_by_hand_ms": tiny_ms["by hand"], "overhead_ms": overhead,
    }  # fmt: skip
    if not options.total_only:
        result["tiny_call_fused_ms"] = tiny_ms["fused"]
        result["overhead_fused_ms"] = tiny_ms["fused"] - tiny_ms["by hand"]
        result["phases_ms"] = phases(params, x, options.repeats)
        result["tiny_phases_ms"] = phases(tiny, x_tiny, options.repeats)
        result["tiny_phases_ms"]["the rest (validation, backend, results)"] = tiny_ms["chain"] - sum(
            v for k, v in result["tiny_phases_ms"].items() if k != "planning (first call only)"
        )
    print(f"bj.jacobian MLP {'-'.join(map(str, WIDTHS))} B={BATCH} float32: {total:.3f} ms median of {options.repeats}")
    print(f"  same products and passes by hand in NumPy: {numpy_ms:.3f} ms")
    print(f"  the same program at widths 4, B = 2 (structured chain): {tiny_ms['chain']:.3f} ms a call, by hand in NumPy "
          f"{tiny_ms['by hand']:.3f} ms: overhead {overhead:.3f} ms")  # fmt: skip
    if "tiny_call_fused_ms" in result:
        print(f"  the same, fused kernel (fuse=True): {tiny_ms['fused']:.3f} ms a call, overhead {result['overhead_fused_ms']:.3f} ms")
    for title, key in (("full size", "phases_ms"), ("widths 4, B = 2", "tiny_phases_ms")):
        if key in result:
            print(f"  phases at {title}:")
            for name, ms in result[key].items():
                print(f"    {name:40s} {ms:.3f} ms")
    if options.baseline:
        result["baseline"] = _baseline(Path(options.baseline), options.repeats)
        for name, runs in result["baseline"]["runs"].items():
            print(f"  back to back, {name}: overhead " + ", ".join(f"{r['overhead_ms']:.3f}" for r in runs) + " ms")
    result["commit"] = _commit(HERE.parent)
    result["machine"] = machine(CpuDevice)
    result["versions"] = versions()
    result["command"] = "python benchmarks/bench_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if options.out:
        out = Path(options.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "overhead_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
