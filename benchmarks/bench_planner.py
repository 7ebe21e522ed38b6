"""Benchmark of the chain planner: how long a plan takes, first and repeated.

Chains of MLP input Jacobians (``Shared`` 10x256, then ``depth`` pairs of ``Diagonal`` 256 and
``Shared`` 256x256, the last 256x784), planned with ``batchjac.structured.chain``. Each
figure is measured in a fresh Python process (``import batchjac`` done before the clock):

- ``first``: the first plan of the process; a chain of more than 24 factors loads numba and
  the compiled programme from numba's on-disk cache (the very first run on a machine
  compiles it; ``--cold`` empties that cache first to show it);
- ``next``: a second, new chain of the same length in the same process;
- ``repeat``: the same chain at another batch size (the plan is kept by structure);
- ``random``: a 500-factor chain of ``Dense`` factors of random sizes, without repetition
  (the plain ``O(n^3)`` programme).

    python benchmarks/bench_planner.py [--depths 4,75,250] [--cold] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
import batchjac as bj
from batchjac.structured.chain import Structure, plan_chain_descriptors

def mlp(depth, batch, end=784):
    factors = [Structure(bj.Shared, batch, 10, 256)]
    for _ in range(depth):
        factors += [Structure(bj.Diagonal, batch, 256, 256), Structure(bj.Shared, batch, 256, 256)]
    factors[-1] = Structure(bj.Shared, batch, 256, end)
    return factors

def timed(fn):
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)

depth = int(sys.argv[1])
first = timed(lambda: plan_chain_descriptors(mlp(depth, 32), itemsize=4))
following = timed(lambda: plan_chain_descriptors(mlp(depth, 32, end=512), itemsize=4))
repeat = timed(lambda: plan_chain_descriptors(mlp(depth, 1000), itemsize=4))
rng = np.random.default_rng(0)
dims = rng.integers(1, 300, 501)
random_chain = [Structure(bj.Dense, 8, int(dims[i]), int(dims[i + 1])) for i in range(500)]
random = timed(lambda: plan_chain_descriptors(random_chain)) if depth == 250 else None
print(json.dumps({"factors": 2 * depth + 1, "first_ms": first, "next_ms": following,
                  "repeat_ms": repeat, "random_500_ms": random}))
"""


def run(depth: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(depth)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def empty_numba_cache() -> None:
    """Remove the compiled planner from numba's cache next to its source."""
    import batchjac.structured.bracketing as module

    folder = Path(module.__file__).parent / "__pycache__"
    for path in folder.glob("bracketing.*.nb[ic]"):
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="4,10,75,250", help="MLP depths (factors: 2 depth + 1)")
    parser.add_argument("--cold", action="store_true", help="empty numba's cache of the planner first")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.cold:
        empty_numba_cache()
    rows = [run(int(d)) for d in args.depths.split(",")]
    print(f"{'factors':>8} {'first ms':>10} {'next ms':>9} {'repeat ms':>10} {'random-500 ms':>14}")
    for r in rows:
        random = f"{r['random_500_ms']:.1f}" if r["random_500_ms"] is not None else "-"
        print(
            f"{r['factors']:>8} {r['first_ms']:>10.1f} {r['next_ms']:>9.1f} {r['repeat_ms']:>10.2f} {random:>14}"
        )
    if args.out:
        args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
