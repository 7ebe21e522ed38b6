"""Benchmark: sparse numerical Jacobians of a black box by column colouring (issue 19).

The banded residual ``r_i = 2 x_i - x_(i-1) - x_(i+1) + 0.1 x_i^3 + 0.5 sin(x_(i+7))``
(tridiagonal plus a coupling band 7 columns away), ``n = 4096`` per sample, ``B = 256``,
float64 (``--quick``: ``n = 1024``, ``B = 64``), on the CPU with NumPy. Timed, each the
median of the repeats after one warm-up call (``time.perf_counter``):

- **coloured central differences**: ``sparse_value_and_jacobian(f, (x,), 0, "central",
  pattern=P)`` (what ``bj.jacobian(f, x, method="central", sparsity=P, structured=True)``
  is to run) with ``P = bj.sparsity(f, x)`` and the colouring inside the call; the colours
  and the evaluations of ``f`` (the result's count, and the samples ``f`` saw counted by a
  wrapper) are reported; once with ``chunk_size=None`` (as many colours a pass as fit in
  memory) and once with ``chunk_size=1``;
- **dense central differences** without ``sparsity`` (``bj.jacobian(f, x,
  method="central", chunk_size=256)``: one column at a time, 256 columns a pass) on the
  first ``B_dense = 4`` samples, where the dense ``(B, n, n)`` result fits in memory (``B =
  256`` would need 32 GiB): the ratio is per sample;
- **exact**: ``bj.jacobian(f, x, method="exact", structured=True)``, a ``bj.Sparse`` whose
  pattern is compared with ``P``; the coloured values are compared with it, entry by entry
  over the whole batch;
- **SciPy**: ``scipy.optimize._numdiff.approx_derivative(fun, x[b], method="3-point",
  sparsity=(P, groups))`` in a Python loop over the samples (``groups`` from SciPy's own
  ``group_columns``, computed once outside the timing), the per-sample peer;
- the colouring alone (``color_columns``) on banded and random patterns of ``n = 10^4`` and
  ``10^5`` columns, with the colour counts of SciPy's ``group_columns`` beside.

    python benchmarks/bench_sparse.py [--quick] [--repeats N] [--out DIR]

Writes ``sparse_cpu.json`` and ``sparse_cpu.md`` under ``--out`` (default
``./batchjac-bench/``; the reference results are in ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse
from harness import DEFAULT_OUT, CpuDevice, machine, median_seconds, versions

import batchjac as bj
from batchjac.numerical.coloring import color_columns, sparse_value_and_jacobian

COUPLING = 7
DENSE_BATCH = 4
DENSE_CHUNK = 256


def residual(x):
    """The black box: ``(B, n) -> (B, n)``, sample by sample, banded."""
    zero = np.zeros_like(x[:, :1])
    left = np.concatenate([zero, x[:, :-1]], axis=1)
    right = np.concatenate([x[:, 1:], zero], axis=1)
    far = np.concatenate([x[:, COUPLING:], np.zeros_like(x[:, :COUPLING])], axis=1)
    return 2 * x - left - right + 0.1 * x**3 + 0.5 * np.sin(far)


class Counted:
    """``f`` that counts the samples it is evaluated on."""

    def __init__(self, f):
        self.f, self.samples = f, 0

    def __call__(self, x):
        self.samples += x.shape[0]
        return self.f(x)


def per_sample_matrices(S):
    """The ``(m, n)`` SciPy CSR matrix of each sample of a ``bj.Sparse`` (repeats summed)."""
    shape = S.shape[1:]
    out = []
    for b in range(S.shape[0]):
        A = scipy.sparse.csr_array((S.values[b], S.indices, S.indptr), shape=shape)
        A.sum_duplicates()
        out.append(A)
    return out


def positions(S_or_P):
    """The set of positions of a pattern, as a canonical boolean CSR array."""
    if isinstance(S_or_P, bj.Sparse):
        ones = np.ones(S_or_P.nnz, dtype=bool)
        A = scipy.sparse.csr_array((ones, S_or_P.indices, S_or_P.indptr), shape=S_or_P.shape[1:])
    else:
        A = scipy.sparse.csr_array(S_or_P).astype(bool)
    A.sum_duplicates()
    A.eliminate_zeros()
    return A


def max_difference(S, references):
    """``max |S - reference|`` over every sample and entry."""
    return max(float(abs(A - R).max()) if (A - R).nnz else 0.0
               for A, R in zip(per_sample_matrices(S), references))  # fmt: skip


def bench_coloring(repeats):
    """The colouring alone, banded and random patterns of 10^4 and 10^5 columns."""
    from scipy.optimize._numdiff import group_columns

    rng = np.random.default_rng(20261126)
    cases = {}
    for n in (10_000, 100_000):
        offsets = (-1, 0, 1, COUPLING)
        band = scipy.sparse.diags([np.ones(n - abs(k)) for k in offsets], offsets, shape=(n, n), format="csr")
        cases[f"band n={n}"] = band
        cases[f"random n={n}, 10 per row"] = scipy.sparse.random(
            n, n, density=10 / n, random_state=rng, format="csr"
        )
    color_columns(np.eye(3, dtype=bool))  # numba: compiled or loaded from its cache once
    results = {}
    for name, P in cases.items():
        seconds = median_seconds({"batchjac": lambda P=P: color_columns(P),
                                  "scipy": lambda P=P: group_columns(P)}, repeats)  # fmt: skip
        results[name] = {
            "nnz": int(P.nnz),
            "colors": color_columns(P).count,
            "seconds": seconds["batchjac"],
            "scipy_group_columns_groups": int(group_columns(P).max()) + 1,
            "scipy_group_columns_seconds": seconds["scipy"],
        }
        print(f"colouring {name:28s} {results[name]['colors']:4d} colours {seconds['batchjac'] * 1e3:8.1f} ms   "
              f"SciPy {results[name]['scipy_group_columns_groups']:4d} groups {seconds['scipy'] * 1e3:8.1f} ms")  # fmt: skip
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 1024, B = 64")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up (default 5)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    from scipy.optimize._numdiff import approx_derivative, group_columns

    n, batch = (1024, 64) if args.quick else (4096, 256)
    repeats = args.repeats
    x = np.random.default_rng(20261126).standard_normal((batch, n))
    report = {
        "benchmark": "sparse numerical Jacobians by column colouring: banded residual, tridiagonal plus a "
        "coupling band 7 columns away",
        "command": " ".join(["python", "benchmarks/bench_sparse.py", *(argv if argv is not None else sys.argv[1:])]),
        "n": n, "batch": batch, "dense_batch": DENSE_BATCH, "dtype": "float64", "repeats": repeats,
        "timing": "time.perf_counter per call; median of the repeats after one warm-up call",
        "machine": machine(CpuDevice()), "versions": versions() | {"scipy": scipy.__version__},
    }  # fmt: skip

    start = time.perf_counter()
    P = bj.sparsity(residual, x[:2], format="csr")
    report["pattern"] = {"nnz": int(P.nnz), "seconds_bj_sparsity": time.perf_counter() - start}

    # coloured central differences, evaluations counted
    counted = Counted(residual)
    _, (S,) = sparse_value_and_jacobian(counted, (x,), 0, "central", pattern=P)
    runs = {
        "coloured": lambda: sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=P),
        "coloured_chunk1": lambda: sparse_value_and_jacobian(
            residual, (x,), 0, "central", pattern=P, chunk_size=1
        ),
    }
    seconds = median_seconds(runs, repeats)
    report["coloured_central"] = {
        "seconds": seconds["coloured"], "seconds_chunk_size_1": seconds["coloured_chunk1"],
        "colors": S.colors, "evaluations": S.evaluations,
        "evaluations_of_the_batch_counted": counted.samples / batch,
        "counted_note": "every call of f, in whole-batch units: the differences (2 per colour), the value (1), "
        "the sample-mixing check (2) and the head (8 samples)",
    }  # fmt: skip
    print(f"coloured central  {seconds['coloured']:8.3f} s  ({seconds['coloured_chunk1']:.3f} s with chunk_size=1)  "
          f"{S.colors} colours, {S.evaluations} evaluations ({counted.samples / batch:.2f} counted)")  # fmt: skip

    # exact path: a Sparse with the exact pattern
    E = bj.jacobian(residual, x, method="exact", structured=True)
    exact_seconds = median_seconds({"exact": lambda: bj.jacobian(residual, x, method="exact", structured=True)},
                                   repeats)["exact"]  # fmt: skip
    references = per_sample_matrices(E)
    exact_pattern = positions(E)
    report["exact"] = {
        "seconds": exact_seconds, "type": type(E).__name__, "nnz": E.nnz,
        "pattern_equals_bj_sparsity": bool((exact_pattern != positions(P)).nnz == 0),
        "pattern_equals_coloured_result": bool((exact_pattern != positions(S)).nnz == 0),
        "coloured_central_max_abs_difference": max_difference(S, references),
    }  # fmt: skip
    print(f"exact (Sparse)    {exact_seconds:8.3f} s  pattern equal: {report['exact']['pattern_equals_bj_sparsity']}, "
          f"coloured central within {report['exact']['coloured_central_max_abs_difference']:.2e} of it")  # fmt: skip

    # dense central differences on the first DENSE_BATCH samples
    small = x[:DENSE_BATCH]
    dense = bj.jacobian(residual, small, method="central", chunk_size=DENSE_CHUNK)
    dense_seconds = median_seconds(
        {"dense": lambda: bj.jacobian(residual, small, method="central", chunk_size=DENSE_CHUNK)},
        max(1, repeats // 2),
    )["dense"]
    _, (S_small,) = sparse_value_and_jacobian(residual, (small,), 0, "central", pattern=P)
    dense_per_sample, coloured_per_sample = dense_seconds / DENSE_BATCH, seconds["coloured"] / batch
    report["dense_central"] = {
        "batch": DENSE_BATCH, "chunk_size": DENSE_CHUNK, "seconds": dense_seconds,
        "seconds_per_sample": dense_per_sample, "evaluations": 2 * n,
        "coloured_seconds_per_sample": coloured_per_sample,
        "per_sample_ratio_dense_over_coloured": dense_per_sample / coloured_per_sample,
        "coloured_equals_dense_bitwise": bool(np.array_equal(S_small.to_dense(), dense)),
        "max_abs_difference_to_exact": float(np.abs(dense - E._batch_slice(slice(0, DENSE_BATCH)).to_dense()).max()),
    }  # fmt: skip
    print(f"dense central     {dense_seconds:8.3f} s  for {DENSE_BATCH} samples: per sample "
          f"{dense_per_sample * 1e3:.1f} ms vs {coloured_per_sample * 1e3:.2f} ms coloured "
          f"(x{dense_per_sample / coloured_per_sample:.0f})")  # fmt: skip

    # SciPy, per sample in a loop
    groups = group_columns(P)

    def scipy_loop():
        return [approx_derivative(lambda v: residual(v[None])[0], x[b], method="3-point", sparsity=(P, groups))
                for b in range(batch)]  # fmt: skip

    scipy_results = scipy_loop()
    scipy_seconds = median_seconds({"scipy": scipy_loop}, max(1, repeats // 2))["scipy"]
    scipy_error = max(
        float(abs(scipy.sparse.csr_array(A) - R).max()) for A, R in zip(scipy_results, references)
    )
    report["scipy_approx_derivative_loop"] = {
        "seconds": scipy_seconds, "groups": int(groups.max()) + 1,
        "evaluations_per_sample": 2 * (int(groups.max()) + 1),
        "ratio_scipy_over_coloured": scipy_seconds / seconds["coloured"],
        "max_abs_difference_to_exact": scipy_error,
        "note": "groups from scipy.optimize._numdiff.group_columns, computed once outside the timing",
    }  # fmt: skip
    print(f"SciPy loop        {scipy_seconds:8.3f} s  {int(groups.max()) + 1} groups, "
          f"x{scipy_seconds / seconds['coloured']:.2f} the coloured time, within {scipy_error:.2e} of exact")  # fmt: skip

    report["coloring"] = bench_coloring(repeats)
    report["targets"] = {
        "at_most_12_evaluations": S.evaluations <= 12,
        "at_least_100x_faster_per_sample_than_dense": dense_per_sample / coloured_per_sample >= 100,
        "within_1e-8_of_exact": report["exact"]["coloured_central_max_abs_difference"] <= 1e-8,
        "exact_path_returns_sparse_with_exact_pattern": report["exact"]["type"] == "Sparse"
        and report["exact"]["pattern_equals_bj_sparsity"],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparse_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "sparse_cpu.md").write_text(markdown(report))
    print(f"wrote {args.out / 'sparse_cpu.json'} and {args.out / 'sparse_cpu.md'}")


def markdown(r):
    c, d, e, s = r["coloured_central"], r["dense_central"], r["exact"], r["scipy_approx_derivative_loop"]
    m = r["machine"]
    lines = [
        "# Sparse numerical Jacobians by column colouring (issue 19)",
        "",
        f"Banded residual (tridiagonal plus a coupling band 7 columns away), n = {r['n']} per sample, "
        f"B = {r['batch']}, float64, NumPy on the CPU ({m['cpu_model']}, {m['cpu_count']} cores). "
        f"{r['timing']}, {r['repeats']} repeats (dense and SciPy: {max(1, r['repeats'] // 2)}).",
        "",
        f"Command: `{r['command']}`. Versions: batchjac {r['versions']['batchjac']}, NumPy "
        f"{r['versions']['numpy']}, SciPy {r['versions']['scipy']}, numba {r['versions']['numba']}, "
        f"Python {r['versions']['python']}.",
        "",
        "| runner | time | per sample | evaluations of f | vs coloured | max abs diff to exact |",
        "|---|---|---|---|---|---|",
        f"| coloured central, `sparsity=P` ({c['colors']} colours) | {c['seconds']:.3f} s | "
        f"{c['seconds'] / r['batch'] * 1e3:.2f} ms | {c['evaluations']} (+3 checks/value: "
        f"{c['evaluations_of_the_batch_counted']:.2f} counted) | 1 | "
        f"{e['coloured_central_max_abs_difference']:.1e} |",
        f"| same, `chunk_size=1` | {c['seconds_chunk_size_1']:.3f} s | "
        f"{c['seconds_chunk_size_1'] / r['batch'] * 1e3:.2f} ms | same | "
        f"{c['seconds_chunk_size_1'] / c['seconds']:.2f} | same |",
        f"| dense central, no sparsity (B = {d['batch']}) | {d['seconds']:.3f} s | "
        f"{d['seconds_per_sample'] * 1e3:.1f} ms | {d['evaluations']} | "
        f"**{d['per_sample_ratio_dense_over_coloured']:.0f}x slower per sample** | "
        f"{d['max_abs_difference_to_exact']:.1e} |",
        f"| SciPy `approx_derivative(sparsity=)` loop ({s['groups']} groups) | {s['seconds']:.3f} s | "
        f"{s['seconds'] / r['batch'] * 1e3:.2f} ms | {s['evaluations_per_sample']} per sample | "
        f"{s['ratio_scipy_over_coloured']:.2f} | {s['max_abs_difference_to_exact']:.1e} |",
        f"| exact, `structured=True` ({e['type']}, nnz {e['nnz']}) | {e['seconds']:.3f} s | "
        f"{e['seconds'] / r['batch'] * 1e3:.2f} ms | - | {e['seconds'] / c['seconds']:.2f} | 0 |",
        "",
        f"The coloured entries equal the dense path's bit for bit: {d['coloured_equals_dense_bitwise']}. "
        f"The exact path's pattern equals `bj.sparsity`'s: {e['pattern_equals_bj_sparsity']}.",
        "",
        "Targets: "
        + ", ".join(f"{k.replace('_', ' ')}: {'met' if v else 'NOT met'}" for k, v in r["targets"].items()),
        "",
        "## Colouring alone",
        "",
        "| pattern | nnz | colours | time | SciPy group_columns groups | SciPy time |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {v['nnz']} | {v['colors']} | {v['seconds'] * 1e3:.1f} ms | "
            f"{v['scipy_group_columns_groups']} | {v['scipy_group_columns_seconds'] * 1e3:.1f} ms |"
            for name, v in r["coloring"].items()
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
