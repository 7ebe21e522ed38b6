"""The kinematics of the issue "write f as you would in NumPy", verbatim NumPy: traced exactly
(fused kernel and structured chain), against the complex-step fallback it used to get and
``jax.jit(jax.vmap(jax.jacfwd))``, B = 10^5, float64, CPU.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_kinematics.py [--out DIR]

Median of repeats after warm-up (the first call compiles the fused kernel; its time is
reported apart). The error is against the complex step, in float64.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_OUT, median_ms, save_result  # noqa: E402

import batchjac as bj  # noqa: E402

L = np.array([0.4, 0.35, 0.3, 0.2, 0.1, 0.05])
H = np.array([0.3, 0.2, 0.1, 0.05, 0.05, 0.02])


def kinematics(q):  # q: (B, 6), verbatim from the issue
    phi = np.cumsum(q, axis=-1)
    x = np.sum(L * np.cos(phi), axis=-1)
    y = np.sum(L * np.sin(phi), axis=-1)
    z = np.sum(H * np.sin(q) * np.cos(np.roll(q, -1, axis=-1)), axis=-1)
    a, b = phi[:, 5] / 2, (q[:, 1] + q[:, 3]) / 2
    return np.stack([x, y, z, np.cos(a) * np.cos(b), np.sin(a) * np.cos(b), np.cos(a) * np.sin(b), np.sin(a) * np.sin(b)], axis=-1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="verbatim NumPy kinematics: exact vs complex-step vs JAX")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    options = parser.parse_args(argv)
    q = np.random.default_rng(0).uniform(-np.pi, np.pi, (options.batch, 6))
    start = time.perf_counter()
    J = bj.jacobian(kinematics, q, method="exact")
    first = time.perf_counter() - start
    reference = bj.jacobian(kinematics, q, method="complex-step")
    result = {
        "batch": options.batch, "dtype": "float64", "machine": platform.platform(),
        "command": "python benchmarks/bench_kinematics.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "exact_first_call_s": first,
        "exact_auto_ms": median_ms(lambda: bj.jacobian(kinematics, q, method="exact"), options.repeats),
        "exact_chain_ms": median_ms(lambda: bj.jacobian(kinematics, q, method="exact", fuse=False), options.repeats),
        "complex_step_ms": median_ms(lambda: bj.jacobian(kinematics, q, method="complex-step"), options.repeats),
        "max_error_vs_complex_step": float(np.abs(J - reference).max()),
    }  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exact path traces: no fallback warning
        bj.jacobian(kinematics, q[:10])
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        Lj, Hj = jnp.asarray(L), jnp.asarray(H)

        def one(q):
            phi = jnp.cumsum(q)
            a, b = phi[5] / 2, (q[1] + q[3]) / 2
            return jnp.stack([jnp.sum(Lj * jnp.cos(phi)), jnp.sum(Lj * jnp.sin(phi)),
                              jnp.sum(Hj * jnp.sin(q) * jnp.cos(jnp.roll(q, -1))), jnp.cos(a) * jnp.cos(b),
                              jnp.sin(a) * jnp.cos(b), jnp.cos(a) * jnp.sin(b), jnp.sin(a) * jnp.sin(b)])  # fmt: skip

        jac = jax.jit(jax.vmap(jax.jacfwd(one)))
        result["jax"] = jax.__version__
        result["jax_ms"] = median_ms(lambda: jac(q).block_until_ready(), options.repeats)
        result["max_difference_jax"] = float(np.abs(np.asarray(jac(q)) - J).max())
    except ImportError:
        result["jax"] = "not installed"
    save_result(options.out, "kinematics_cpu.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
