"""Fused kernels (issue 16) against the structured chain, JAX and PyTorch on this CPU.

Workloads (each batchjac runner traces ``f`` on every call, as ``bj.jacobian`` does):

- **W1** element-wise chain of depth 3, ``tanh(exp(x) * x) + x``, (4096, 1024) float32: the
  value and the diagonal of the Jacobian. Peers: JAX's and PyTorch's vmap of grad of
  ``sum(f(x))`` (the derivative only). Floor: memory, x read and value and diagonal written.
- **W4** kinematics 6 -> 7 (``workloads.kinematics``), float64, B = 10^5 and 10^6. Peers:
  ``jax.jit(jax.vmap(jax.jacfwd))``, jacrev, ``torch.func.vmap(jacfwd)``, jacrev. Floor:
  memory, q read and J written.
- **W5** Newton Jacobians ``A x + x^3 / 10``, 54 x 54, float64, B = 4096. Peers as W4.
  Floor: the output Jacobian's bytes written.
- **compile**: the first call of the W4 program in a new process with an empty kernel cache
  (tracing, code generation, numba's compile), then in another new process with that cache.

Runners: ``batchjac.fused`` (trace, plan, fused kernel: the path ``fuse=True`` takes),
``batchjac.kernel`` (the fused kernel alone on a program traced once), ``batchjac.chain``
(``bj.jacobian(method="exact")`` on the structured chain), the peers, and NumPy's closed
form where there is one. Timing: ``harness.median_seconds``, 2 warm-up calls then the
repeats, 2 rounds interleaved across runners; each call allocates its outputs.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_fused.py [--quick] [--out DIR]

(the OpenBLAS variables are unset for the comparison with JAX and PyTorch, which bring
their own BLAS; the JSON records the kernels in use).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import workloads  # noqa: E402

import batchjac as bj  # noqa: E402
from batchjac.exact.capture import capture  # noqa: E402
from batchjac.exact.fuse import fused_value_and_jacobians, plan_fusion  # noqa: E402

REFERENCE_SAMPLES = 64


def w1(x):
    return np.tanh(np.exp(x) * x) + x


def w1_derivative(x):
    e = np.exp(x)
    t = np.tanh(e * x)
    return (1 - t * t) * (e * x + e) + 1


def w1_peer(xp):
    return lambda x: xp.tanh(xp.exp(x) * x) + x


def fused_call(f, x):
    """What ``bj.jacobian(f, x, fuse=True)`` computes: trace, plan, one fused kernel."""
    captured = capture(f, (x,), {}, (0,))
    program = captured.program
    value, (J,), _ = fused_value_and_jacobians(
        program, [x], program.const_values, program.inputs, captured.batch
    )
    return value, J


def kernel_call(f, x):
    """The fused kernel alone, on a program traced once."""
    program = capture(f, (x,), {}, (0,)).program
    batch = x.shape[0]
    return lambda: fused_value_and_jacobians(program, [x], program.const_values, program.inputs, batch)


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------


def problem_w1(quick):
    rng = np.random.default_rng(1)
    shape = (1024, 1024) if quick else (4096, 1024)
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    runners = {
        "batchjac.fused": lambda x: fused_call(w1, x)[1].diagonal(),
        "batchjac.chain": lambda x: bj.jacobian(w1, x, method="exact", structured=True).diagonal(),
        "numpy": lambda x: (w1(x), w1_derivative(x))[1],
    }
    return dict(
        key="W1", title="tanh(exp(x) x) + x, element-wise, float32", dtype="float32", inputs=xs,
        batch=shape[0], runners=runners, kernel=kernel_call(w1, xs[0]), peer_mode="elementwise",
        function=w1_peer, reference=lambda x: w1_derivative(x.astype(np.float64)),
        floor_bytes=3 * xs[0].size * 4, floor_kind="memory",
        floor_text="x read, value and diagonal written (12 bytes an entry) over the copy bandwidth",
    )  # fmt: skip


def _kinematics(q):
    return workloads.kinematics(np, None, q)


def problem_w4(batch):
    rng = np.random.default_rng(4)
    qs = [rng.uniform(-np.pi, np.pi, (batch, 6)) for _ in range(2)]
    runners = {
        "batchjac.fused": lambda q: fused_call(_kinematics, q)[1].to_dense(),
        "batchjac.chain": lambda q: bj.jacobian(_kinematics, q, method="exact"),
    }
    return dict(
        key="W4", title="kinematics 6 -> 7, float64", dtype="float64", inputs=qs, batch=batch,
        runners=runners, kernel=kernel_call(_kinematics, qs[0]), peer_mode="jacobian",
        function=lambda xp: (lambda q: workloads.kinematics(xp, None, q)),
        reference=lambda q: workloads.complex_step(None, q), floor_bytes=batch * (6 + 42) * 8,
        floor_kind="memory", floor_text="q read and J written (48 float64 a sample) over the copy bandwidth",
    )  # fmt: skip


def problem_w5(batch):
    rng = np.random.default_rng(5)
    n = 54
    params = {"A": np.eye(n) * 4 + rng.standard_normal((n, n)) / np.sqrt(n)}
    xs = [rng.standard_normal((batch, n)) for _ in range(2)]
    f = lambda x: workloads.newton_residual(bj, params, x)  # noqa: E731
    runners = {
        "batchjac.fused": lambda x: fused_call(f, x)[1].to_dense(),
        "batchjac.chain": lambda x: bj.jacobian(f, x, method="exact"),
        "numpy": lambda x: workloads.newton_jacobian(params, x),
    }
    return dict(
        key="W5", title="Newton Jacobians A x + x^3/10, 54 x 54, float64", dtype="float64", inputs=xs,
        batch=batch, runners=runners, kernel=kernel_call(f, xs[0]), peer_mode="jacobian", params=params,
        function=lambda xp: None, reference=lambda x: workloads.newton_jacobian(params, x),
        floor_bytes=batch * n * n * 8, floor_kind="write", floor_text="the output Jacobian's bytes over the copy bandwidth",
    )  # fmt: skip


def peer_runners(problem, peers):
    """The peers' transforms on the problem's first input: name -> (call(i), to_numpy)."""
    found = {}
    for peer in peers:
        inputs = [peer.asarray(x) for x in problem["inputs"]]
        if problem["key"] == "W5":
            A = peer.asarray(problem["params"]["A"])
            f = lambda x, peer=peer, A=A: workloads.newton_residual(peer.xp, {"A": A}, x)  # noqa: E731
        else:
            f = problem["function"](peer.xp)
        if problem["peer_mode"] == "elementwise":
            transforms = {"vmap-grad": peer.elementwise_grad(f)}
        else:
            transforms = {mode: peer.jacobian(f, mode) for mode in ("jacfwd", "jacrev")}
        for mode, transform in transforms.items():

            def call(i, transform=transform, inputs=inputs, peer=peer):
                out = transform(inputs[i])
                peer.sync(out)
                return out

            found[f"{peer.name}.{mode}"] = (call, peer.to_numpy)
    return found


def bench(problem, peers, repeats, ceilings):
    inputs = problem["inputs"]
    calls = {
        name: (lambda i, run=run: run(inputs[i]), np.asarray) for name, run in problem["runners"].items()
    }
    calls["batchjac.kernel"] = (lambda i, kernel=problem["kernel"]: kernel(), None)
    calls.update(peer_runners(problem, peers))
    reference = problem["reference"](inputs[0][:REFERENCE_SAMPLES])
    errors, failures = {}, {}
    for name, (call, to_numpy) in list(calls.items()):
        try:
            out = call(0)
            if to_numpy is not None:
                got = np.asarray(to_numpy(out[:REFERENCE_SAMPLES]), dtype=np.float64)
                errors[name] = float(
                    np.max(np.abs(got - reference)) / max(1.0, float(np.max(np.abs(reference))))
                )
        except Exception as err:  # a peer without an operation, or out of memory: report and go on
            failures[name] = f"{type(err).__name__}: {str(err)[:200]}"
            del calls[name]
    cycle = {name: _rotating(call, len(inputs)) for name, (call, _) in calls.items()}
    seconds = harness.median_seconds(cycle, repeats, warmup=2, rounds=2)
    floor = problem["floor_bytes"] / ceilings["copy_bytes_per_s"]
    rows = []
    for name, median in seconds.items():
        rows.append({
            "workload": problem["key"], "title": problem["title"], "batch": problem["batch"], "runner": name,
            "median_s": median, "floor_s": floor, "floor_kind": problem["floor_kind"],
            "ratio_to_floor": median / floor, "max_error": errors.get(name),
        })  # fmt: skip
    rows += [
        {"workload": problem["key"], "batch": problem["batch"], "runner": n, "skipped": why}
        for n, why in failures.items()
    ]
    return rows


def _rotating(call, count):
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % count
        return call(state["i"])

    return run


# --------------------------------------------------------------------------------------
# Compile time and the planner's decision for the CPU MLP
# --------------------------------------------------------------------------------------

_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import numpy as np
    import batchjac as bj
    sys.path.insert(0, sys.argv[1])
    import workloads
    from batchjac.exact.capture import capture
    from batchjac.exact.fuse import fused_value_and_jacobians
    imported = time.perf_counter()
    q = np.random.default_rng(0).uniform(-3, 3, (1000, 6))
    captured = capture(lambda q: workloads.kinematics(np, None, q), (q,), {}, (0,))
    program = captured.program
    fused_value_and_jacobians(program, [q], program.const_values, program.inputs, 1000)
    first = time.perf_counter()
    fused_value_and_jacobians(program, [q], program.const_values, program.inputs, 1000)
    second = time.perf_counter()
    print(json.dumps({"import_s": imported - start, "first_call_s": first - imported, "second_call_s": second - first}))
    """
)


_NUMBA_BASELINE = textwrap.dedent(
    """
    import json, sys, time
    start = time.perf_counter()
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from trivial_kernel import kernel
    imported = time.perf_counter()
    kernel(10, np.ones(10))
    first = time.perf_counter()
    kernel(10, np.ones(10))
    second = time.perf_counter()
    print(json.dumps({"import_s": imported - start, "first_call_s": first - imported, "second_call_s": second - first}))
    """
)
_TRIVIAL_KERNEL = textwrap.dedent(
    """
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def kernel(n, x):
        for i in prange(n):
            x[i] += 1.0
    """
)


def _fresh_process(script, argument, env):
    done = subprocess.run(
        [sys.executable, "-c", script, argument], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_times():
    """First call of the W4 program in a new process, with an empty cache and then with the
    cache the first process wrote; and, for comparison, numba's own first call of a trivial
    cached parallel kernel in a new process (importing numba and its CPU target), which any
    numba kernel pays."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "BATCHJAC_CACHE_DIR": folder}
        for label in ("empty cache", "disk cache"):
            runs.append({"cache": label, **_fresh_process(_COMPILE_SCRIPT, str(HERE), env)})
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "trivial_kernel.py").write_text(_TRIVIAL_KERNEL)
        _fresh_process(_NUMBA_BASELINE, folder, dict(os.environ))  # compiles and caches it
        baseline = _fresh_process(_NUMBA_BASELINE, folder, dict(os.environ))
        runs.append({"cache": "numba alone: a trivial parallel kernel from its cache", **baseline})
    return runs


def mlp_decision():
    """The planner's choice for the CPU MLP 64 -> 256^3 -> 10, B = 256, float32."""
    rng = np.random.default_rng(2)
    widths = (64, 256, 256, 256, 10)
    layers = [(rng.standard_normal((m, n)).astype(np.float32), rng.standard_normal(m).astype(np.float32))
              for n, m in zip(widths[:-1], widths[1:])]  # fmt: skip
    x = rng.standard_normal((256, 64)).astype(np.float32)
    program = bj.trace(lambda x: workloads.mlp(np, {"layers": layers}, x), x)
    decision = plan_fusion(program, program.inputs, 256, np.float32)
    return {"path": decision.path, "reason": decision.reason}


# --------------------------------------------------------------------------------------
# Targets and output
# --------------------------------------------------------------------------------------


def targets(rows, compile_runs, mlp):
    def time_of(key, batch, runner):
        found = [r for r in rows if r["workload"] == key and r["batch"] == batch and r["runner"] == runner]
        return found[0]["median_s"] if found and not found[0].get("skipped") else None

    checks = []

    def check(label, value, limit, unit="x"):
        met = None if value is None else value <= limit
        shown = "not measured" if value is None else f"{value:.2f}{unit}"
        checks.append({"target": label, "measured": shown, "limit": f"<= {limit}{unit}", "met": met})

    for batch in sorted({r["batch"] for r in rows if r["workload"] == "W4"}):
        fused, jax_time = time_of("W4", batch, "batchjac.fused"), time_of("W4", batch, "jax.jacfwd")
        check(
            f"W4 B={batch}: fused over jax.jit(vmap(jacfwd))",
            fused / jax_time if fused and jax_time else None,
            0.5,
        )
    for batch in sorted({r["batch"] for r in rows if r["workload"] == "W1"}):
        row = next(r for r in rows if r["workload"] == "W1" and r["runner"] == "batchjac.fused")
        check(f"W1 B={batch}: fused over the memory floor", row["ratio_to_floor"], 1.3)
        jax_time = time_of("W1", batch, "jax.vmap-grad")
        check(
            f"W1 B={batch}: fused over JAX's vmap-grad trick",
            row["median_s"] / jax_time if jax_time else None,
            1.0,
        )
    for r in rows:
        if r["workload"] == "W5" and r["runner"] == "batchjac.fused" and not r.get("skipped"):
            check(f"W5 B={r['batch']}: fused over the output-write floor", r["ratio_to_floor"], 1.5)
    check("W4 program: first call, empty kernel cache", compile_runs[0]["first_call_s"], 3.0, " s")
    check("W4 program: first call in a new process, disk cache", compile_runs[1]["first_call_s"], 0.5, " s")
    checks.append({"target": "CPU MLP 64->256^3->10 B=256 float32 stays on the chain", "measured": mlp["path"],
                   "limit": "chain", "met": mlp["path"] == "chain"})  # fmt: skip
    return checks


def blas_kernels():
    """The BLAS libraries in use and their kernels (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"openblas_core": harness.openblas_core(), "threadpoolctl": "not installed"}
    return [
        {k: info.get(k) for k in ("internal_api", "prefix", "version", "architecture", "num_threads")}
        for info in threadpool_info()
    ]


def markdown(report):
    lines = [
        "# Fused kernels against the structured chain, JAX and PyTorch (CPU)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores; "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        + ".",
        f"BLAS: {json.dumps(report['blas'])}. Environment: "
        + ", ".join(f"{k}={v}" for k, v in report["environment"].items())
        + " (unset for this benchmark: JAX and PyTorch bring their own BLAS).",
        f"Copy bandwidth {report['ceilings']['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + written). "
        f"Timing: {report['timing']}. Load average (1, 5, 15 min) before "
        f"{', '.join(f'{v:.2f}' for v in report['load_average']['before'])}, after "
        f"{', '.join(f'{v:.2f}' for v in report['load_average']['after'])} (other work shares this machine).",
        "",
        "| workload | batch | runner | median ms | x floor | max error |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if r.get("skipped"):
            lines.append(f"| {r['workload']} | {r['batch']} | {r['runner']} | skipped: {r['skipped']} | | |")
            continue
        error = "-" if r["max_error"] is None else f"{r['max_error']:.1e}"
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['runner']} | {1e3 * r['median_s']:.2f} | "
            f"{r['ratio_to_floor']:.2f} | {error} |"
        )
    lines += ["", "Floors: " + "; ".join(f"**{k}**: {v}" for k, v in report["floors"].items()) + ".", ""]
    lines += ["## Compile time (W4 program, new processes)", "", "| cache | import s | first call s | second call ms |",
              "|---|---|---|---|"]  # fmt: skip
    for c in report["compile"]:
        lines.append(
            f"| {c['cache']} | {c['import_s']:.2f} | {c['first_call_s']:.2f} | {1e3 * c['second_call_s']:.2f} |"
        )
    lines += [
        "",
        f"Planner, CPU MLP 64->256^3->10 B=256 float32: {report['mlp']['path']} ({report['mlp']['reason']}).",
        "",
    ]
    lines += ["## Targets (issue 16)", "", "| target | measured | limit | status |", "|---|---|---|---|"]
    for t in report["targets"]:
        status = "not measured" if t["met"] is None else "met" if t["met"] else "missed"
        lines.append(f"| {t['target']} | {t['measured']} | {t['limit']} | {status} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes (W1 1024 x 1024, W4 B = 10^4 and 10^5)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per runner and round (default 5)")
    parser.add_argument("--no-peers", action="store_true", help="leave JAX and PyTorch out")
    parser.add_argument(
        "--out", type=Path, default=harness.DEFAULT_OUT, help="output folder (default ./batchjac-bench/)"
    )
    args = parser.parse_args(argv)
    device = harness.CpuDevice()
    load_before = os.getloadavg()
    peers, skipped = harness.load_peers(device, enabled=not args.no_peers)
    ceilings = harness.measure_ceilings(device, 64 << 20, 1024)
    problems = [problem_w1(args.quick)]
    problems += [problem_w4(b) for b in ((10_000, 100_000) if args.quick else (100_000, 1_000_000))]
    problems.append(problem_w5(4096))
    rows = []
    for problem in problems:
        print(f"{problem['key']} batch {problem['batch']}", file=sys.stderr)
        rows += bench(problem, peers, args.repeats, ceilings)
    compile_runs = compile_times()
    mlp = mlp_decision()
    report = {
        "benchmark": "fused kernels (issue 16)",
        "command": " ".join(["python", "benchmarks/bench_fused.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": harness.machine(device), "versions": harness.versions(), "blas": blas_kernels(),
        "environment": {k: os.environ.get(k, "unset") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_NUM_THREADS")},
        "ceilings": ceilings, "timing": device.timing_method + " (2 warm-up calls, 2 rounds)",
        "floors": {p["key"] + f" ({p['floor_kind']})": p["floor_text"] for p in problems},
        "results": rows, "compile": compile_runs, "mlp": mlp, "skipped_peers": skipped,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }  # fmt: skip
    report["targets"] = targets(rows, compile_runs, mlp)
    args.out.mkdir(parents=True, exist_ok=True)
    harness.write_json(args.out / "fused_cpu.json", report)
    text = markdown(report)
    (args.out / "fused_cpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
