"""The benchmark scripts of batchjac, shipped in the package as ``batchjac.benchmarks``.

They are scripts, not modules to import: ``python -m batchjac bench`` runs them (each
finds ``harness.py`` and ``workloads.py`` beside it), and so does ``python
benchmarks/run.py`` in a source checkout. ``README.md`` here explains every figure.
"""
