"""Batched Hessians (issue "second derivatives"): the Hessian of a log-likelihood w.r.t. the
input, against ``jax.vmap(jax.hessian)`` and ``torch.func`` on the same CPU.

The softmax cross-entropy of an MLP 64 -> 128 -> 10 (tanh) for a fixed label per sample,
B = 4096, float64: ``bj.hessian`` (the structured Jacobian of the gradient program),
``jax.jit(jax.vmap(jax.hessian(f)))`` and ``torch.func.vmap(torch.func.hessian(f))``.
Median of repeats after warm-up; the largest difference between the three is reported.

    python benchmarks/bench_hessian.py [--batch 4096] [--repeats 5] [--out DIR]

For a fair comparison with JAX and PyTorch unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE in
this command only (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...``); the results
record which OpenBLAS kernel was loaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_OUT, median_ms, save_result  # noqa: E402

import batchjac as bj  # noqa: E402

WIDTHS = (64, 128, 10)


def _openblas():
    try:
        from threadpoolctl import threadpool_info

        return [(i.get("internal_api"), i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"]
    except ImportError:
        return "threadpoolctl not installed"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Hessians of an MLP log-likelihood: batchjac vs JAX vs PyTorch")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    options = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    B = options.batch
    W1 = rng.standard_normal((WIDTHS[1], WIDTHS[0])) / 8
    b1 = 0.1 * rng.standard_normal(WIDTHS[1])
    W2 = rng.standard_normal((WIDTHS[2], WIDTHS[1])) / 11
    x = rng.standard_normal((B, WIDTHS[0]))
    labels = rng.integers(0, WIDTHS[2], B)
    onehot = np.eye(WIDTHS[2])[labels]

    def nll(x, onehot):  # NumPy, batched: -log softmax(z)[label]
        z = np.tanh(x @ W1.T + b1) @ W2.T
        return -np.sum(onehot * (z - bj.logsumexp(z, axis=-1, keepdims=True)), axis=-1)

    H = bj.hessian(nll, x, onehot)
    result = {
        "workload": f"Hessian of softmax cross-entropy of an MLP {'-'.join(map(str, WIDTHS))} (tanh) w.r.t. x",
        "batch": B, "dtype": "float64", "machine": platform.platform(), "processor": platform.processor(),
        "openblas": _openblas(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "command": "python benchmarks/bench_hessian.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "batchjac_ms": median_ms(lambda: bj.hessian(nll, x, onehot), options.repeats),
        "numpy": np.__version__,
    }  # fmt: skip
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)

        def one(xs, oh):
            z = jnp.tanh(W1 @ xs + b1) @ W2.T
            return -jnp.sum(oh * jax.nn.log_softmax(z))

        hess = jax.jit(jax.vmap(jax.hessian(one)))
        Hj = np.asarray(hess(x, onehot))
        result["jax"] = jax.__version__
        result["jax_ms"] = median_ms(lambda: hess(x, onehot).block_until_ready(), options.repeats)
        result["max_difference_jax"] = float(np.abs(Hj - H).max())
    except ImportError:
        result["jax"] = "not installed"
    try:
        import torch
        from torch.func import hessian, vmap

        tW1, tb1, tW2 = (torch.tensor(a) for a in (W1, b1, W2))

        def tone(xs, oh):
            z = tW2 @ torch.tanh(tW1 @ xs + tb1)
            return -(oh * torch.log_softmax(z, -1)).sum()

        th = vmap(hessian(tone))
        tx, toh = torch.tensor(x), torch.tensor(onehot)
        Ht = th(tx, toh).numpy()
        result["torch"] = torch.__version__
        result["torch_ms"] = median_ms(lambda: th(tx, toh), options.repeats)
        result["max_difference_torch"] = float(np.abs(Ht - H).max())
    except ImportError:
        result["torch"] = "not installed"
    peers = {k: result[k] for k in ("jax_ms", "torch_ms") if k in result}
    if peers:
        best = min(peers, key=peers.get)
        result["ratio_to_best_peer"] = result["batchjac_ms"] / peers[best]
        result["best_peer"] = best.removesuffix("_ms")
    save_result(options.out, "hessian_cpu.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
