"""Benchmark of chained Jacobian products: optimal against forward and reverse order.

Part 1 multiplies chains of mixed structure (MLP-like chains of ``Shared`` and ``Diagonal``
factors, per-sample dense chains, a chain with a narrow middle) in each order and reports
the planner's flops (multiply-adds) and bytes, the median wall time, and the ratio of that
time to a floor: the larger of ``bytes / copy bandwidth`` and ``flops / matmul rate``, both
ceilings measured once at start on this machine (a large NumPy copy; a large NumPy matmul
in the chain's dtype).

Part 2 times the input Jacobian of an MLP (64 -> 256 -> 256 -> 256 -> 10, tanh, batch 256,
float32) on the CPU, forward pass included: batchjac builds it as a chain of ``Shared``
weights and ``Diagonal`` tanh' factors and multiplies it with ``bj.chain``; the peers are
``jax.jit(jax.vmap(jax.jacrev(f)))`` and ``torch.func.vmap(torch.func.jacrev(f))`` where
they import, with the same weights, and every result is checked against the others.

    python benchmarks/bench_chain.py [--quick] [--out PATH]

NumPy's matrix products are OpenBLAS's, which picks its kernels from the CPU at load time
and falls back to its AVX2 ("Haswell") kernels on CPUs it does not know, AVX-512 ones
included; the report records the kernels in use, and ``OPENBLAS_CORETYPE=SkylakeX`` in the
environment selects the AVX-512 kernels on such a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import harness
import numpy as np
from harness import CpuDevice, median_seconds, openblas_core
from harness import measure_ceilings as measure_device_ceilings

import batchjac as bj

ORDERS = ("optimal", "forward", "reverse")
DEFAULT_OUT = harness.DEFAULT_OUT / "chain_cpu.json"


def measure_ceilings(quick):
    """Copy bandwidth (bytes read + written per second) and matmul rates (multiply-adds
    per second) for float32 and float64, each the median of a few runs."""
    return measure_device_ceilings(CpuDevice(), (64 if quick else 256) << 20, 512 if quick else 1536)


def floor_seconds(flops, nbytes, dtype, ceilings):
    return max(
        nbytes / ceilings["copy_bytes_per_s"], flops / ceilings["matmul_madds_per_s"][np.dtype(dtype).name]
    )


# --------------------------------------------------------------------------------------
# Part 1: chains of mixed structure in each order
# --------------------------------------------------------------------------------------


def mlp_chain(rng, batch, widths, dtype):
    """``W_L D_{L-1} W_{L-1} ... D_1 W_1`` for layer widths ``[n_out, ..., n_in]``."""
    factors = []
    for i, (m, n) in enumerate(zip(widths[:-1], widths[1:])):
        factors.append(bj.Shared((rng.standard_normal((m, n)) / np.sqrt(n)).astype(dtype), batch))
        if i < len(widths) - 2:
            factors.append(bj.Diagonal(rng.uniform(0.0, 1.0, (batch, n)).astype(dtype)))
    return factors


def dense_chain(rng, batch, sizes, dtype):
    return [bj.Dense(rng.standard_normal((batch, m, n)).astype(dtype)) for m, n in zip(sizes[:-1], sizes[1:])]


def chain_cases(rng, quick):
    """(name, factors) pairs; ``--quick`` shrinks the batch so the slow orders stay short."""
    b = 8 if quick else 32
    f32, f64 = np.float32, np.float64
    narrow = [*mlp_chain(rng, b, [256, 512], f64), bj.Diagonal(rng.uniform(size=(b, 512))),
              *dense_chain(rng, b, [512, 4, 512], f64), bj.Diagonal(rng.uniform(size=(b, 512))),
              *mlp_chain(rng, b, [512, 256], f64)]  # fmt: skip
    return [
        ("classifier 784-512-512-10 f32", mlp_chain(rng, b, [10, 512, 512, 784], f32)),
        ("decoder 10-512-784 f32", mlp_chain(rng, b, [784, 512, 10], f32)),
        ("deep mlp 32-256x4-32 f32", mlp_chain(rng, b, [32, 256, 256, 256, 256, 32], f32)),
        ("per-sample dense 8..64 f64", dense_chain(rng, b, [8, 64, 16, 64, 8, 64], f64)),
        ("narrow middle (4) f64", narrow),
    ]


def bench_chains(rng, ceilings, quick):
    rows = []
    for name, factors in chain_cases(rng, quick):
        plan = bj.chain_plan(*factors)
        costs = {
            "optimal": (plan.flops, plan.bytes),
            "forward": (plan.forward_flops, plan.forward_bytes),
            "reverse": (plan.reverse_flops, plan.reverse_bytes),
        }
        runs = {order: (lambda order=order: bj.chain(*factors, order=order)) for order in ORDERS}
        seconds = median_seconds(runs, repeats=3 if quick else 7)
        dtype = np.result_type(*(J.dtype for J in factors))
        for order in ORDERS:
            flops, nbytes = costs[order]
            floor = floor_seconds(flops, nbytes, dtype, ceilings)
            rows.append({
                "chain": name, "order": order, "bracketing": plan.order if order == "optimal" else None,
                "flops": flops, "bytes": nbytes, "median_s": seconds[order], "floor_s": floor,
                "ratio_to_floor": seconds[order] / floor if floor else None,
            })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------
# Part 2: the MLP input Jacobian against JAX and PyTorch
# --------------------------------------------------------------------------------------

MLP_WIDTHS = (64, 256, 256, 256, 10)
MLP_BATCH = 256


def mlp_parameters(rng):
    Ws = [
        (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
        for n, m in zip(MLP_WIDTHS[:-1], MLP_WIDTHS[1:])
    ]
    bs = [(0.1 * rng.standard_normal(m)).astype(np.float32) for m in MLP_WIDTHS[1:]]
    return Ws, bs


def mlp_factors(x, Ws, bs):
    """The chain ``[W_4, D_3, W_3, D_2, W_2, D_1, W_1]`` of the MLP at ``x``: the forward
    pass in NumPy gives the tanh' diagonals ``D_i = diag(1 - tanh(h_i)^2)``."""
    batch = x.shape[0]
    factors = []
    h = x
    for W, b in zip(Ws[:-1], bs[:-1]):
        h = np.tanh(h @ W.T + b)
        factors += [bj.Shared(W, batch), bj.Diagonal(1.0 - h * h)]
    factors.append(bj.Shared(Ws[-1], batch))
    return factors[::-1]


def batchjac_mlp_jacobian(x, Ws, bs):
    """``d f / d x`` as a ``(B, 10, 64)`` array, the chain multiplied in the planned order."""
    return bj.chain(*mlp_factors(x, Ws, bs), order="optimal").to_dense()


def traced_mlp(Ws, bs):
    """The same MLP written with batchjac's array functions, for ``bj.jacobian`` to trace."""

    def f(x):
        for W, b in zip(Ws[:-1], bs[:-1]):
            x = bj.tanh(bj.linear(x, W, b))
        return bj.linear(x, Ws[-1], bs[-1])

    return f


def jax_peer(Ws, bs):
    import jax
    import jax.numpy as jnp

    weights, biases = [jnp.asarray(W) for W in Ws], [jnp.asarray(b) for b in bs]

    def f(x):  # one sample
        for W, b in zip(weights[:-1], biases[:-1]):
            x = jnp.tanh(W @ x + b)
        return weights[-1] @ x + biases[-1]

    jacobian = jax.jit(jax.vmap(jax.jacrev(f)))
    return "jax", jax.__version__, jnp.asarray, lambda x: jacobian(x).block_until_ready(), np.asarray


def torch_peer(Ws, bs):
    import torch

    weights, biases = [torch.from_numpy(W) for W in Ws], [torch.from_numpy(b) for b in bs]

    def f(x):  # one sample
        for W, b in zip(weights[:-1], biases[:-1]):
            x = torch.tanh(W @ x + b)
        return weights[-1] @ x + biases[-1]

    jacobian = torch.func.vmap(torch.func.jacrev(f))
    return "torch", torch.__version__, torch.from_numpy, jacobian, lambda J: J.detach().numpy()


def bench_mlp(rng, quick):
    Ws, bs = mlp_parameters(rng)
    x = rng.standard_normal((MLP_BATCH, MLP_WIDTHS[0])).astype(np.float32)
    reference = batchjac_mlp_jacobian(x, Ws, bs)
    traced = traced_mlp(Ws, bs)
    runs = {
        "batchjac": lambda: batchjac_mlp_jacobian(x, Ws, bs),
        "batchjac_traced": lambda: bj.jacobian(traced, x, method="exact"),
    }
    results = {
        "batchjac": {"version": bj.__version__, "what": "bj.chain of the factors, forward pass in NumPy"},
        "batchjac_traced": {
            "version": bj.__version__,
            "what": "bj.jacobian(f, x) of f written with bj.linear / bj.tanh",
            "max_abs_diff_to_batchjac": float(np.max(np.abs(bj.jacobian(traced, x) - reference))),
        },
    }
    skipped = {}
    for make_peer in (jax_peer, torch_peer):
        try:
            name, version, to_peer, jacobian, to_numpy = make_peer(Ws, bs)
        except ImportError as err:
            skipped[make_peer.__name__.removesuffix("_peer")] = str(err)
            continue
        xp = to_peer(x)
        runs[name] = lambda jacobian=jacobian, xp=xp: jacobian(xp)
        results[name] = {
            "version": version,
            "max_abs_diff_to_batchjac": float(np.max(np.abs(to_numpy(jacobian(xp)) - reference))),
        }
    # Many warm-up calls: the first ones pay for the allocator growing its heap (arrays of a
    # few MB) and for JAX's compilation.
    seconds = median_seconds(
        runs, repeats=5 if quick else 10, warmup=5 if quick else 10, rounds=2 if quick else 5
    )
    for name in runs:
        results[name]["median_s"] = seconds[name]
    peers = [seconds[name] for name in runs if not name.startswith("batchjac")]
    best = min(peers) if peers else None
    return {
        "widths": MLP_WIDTHS, "batch": MLP_BATCH, "dtype": "float32",
        "plan": str(bj.chain_plan(*mlp_factors(x, Ws, bs))),
        "results": results, "skipped": skipped,
        "batchjac_over_best_peer": results["batchjac"]["median_s"] / best if best else None,
        "batchjac_traced_over_best_peer": results["batchjac_traced"]["median_s"] / best if best else None,
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def machine():
    from numpy._core._multiarray_umath import __cpu_features__ as cpu

    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "cpu_avx512f": bool(cpu.get("AVX512F")), "openblas_core": openblas_core(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "batchjac": bj.__version__,
    }  # fmt: skip
    for peer in ("jax", "torch"):
        try:
            info[peer] = __import__(peer).__version__
        except ImportError:
            info[peer] = None
    return info


def print_report(info, ceilings, rows, mlp):
    print(
        f"{info['platform']}, {info['cpu_count']} CPUs, OpenBLAS kernels {info['openblas_core']}"
        f" (AVX-512 CPU: {info['cpu_avx512f']}), numpy {info['numpy']}, python {info['python']}"
    )
    print(f"ceilings: copy {ceilings['copy_bytes_per_s'] / 1e9:.1f} GB/s, matmul "
          + ", ".join(f"{k} {v / 1e9:.1f} G madd/s" for k, v in ceilings["matmul_madds_per_s"].items()))  # fmt: skip
    print(f"\n{'chain':<30} {'order':<8} {'flops (madd)':>15} {'bytes':>14} {'median ms':>10} {'x floor':>8}")
    for r in rows:
        ratio = f"{r['ratio_to_floor']:.1f}" if r["ratio_to_floor"] else "-"
        print(
            f"{r['chain']:<30} {r['order']:<8} {r['flops']:>15,} {r['bytes']:>14,} {1e3 * r['median_s']:>10.3f} {ratio:>8}"
        )
        if r["bracketing"]:
            print(f"{'':<30} optimal = {r['bracketing']}")
    print(
        f"\nMLP input Jacobian {'-'.join(map(str, mlp['widths']))}, tanh, batch {mlp['batch']}, float32 (forward pass included)"
    )
    print(mlp["plan"])
    for name, r in mlp["results"].items():
        diff = r.get("max_abs_diff_to_batchjac")
        print(
            f"  {name:<9} {r['version']:<14} {1e3 * r['median_s']:>9.3f} ms"
            + (f"   max |diff| {diff:.2e}" if diff is not None else "")
        )
    for name, why in mlp["skipped"].items():
        print(f"  {name:<9} skipped: {why}")
    if mlp["batchjac_over_best_peer"] is not None:
        print(f"  batchjac / best peer: {mlp['batchjac_over_best_peer']:.2f} (chain), "
              f"{mlp['batchjac_traced_over_best_peer']:.2f} (bj.jacobian)")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    ceilings = measure_ceilings(args.quick)
    rows = bench_chains(rng, ceilings, args.quick)
    mlp = bench_mlp(rng, args.quick)
    info = machine()
    print_report(info, ceilings, rows, mlp)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": info,
        "quick": args.quick,
        "ceilings": ceilings,
        "chains": rows,
        "mlp_input_jacobian": mlp,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
