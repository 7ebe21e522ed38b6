"""Package discovery, the one part of the build that pyproject.toml cannot express.

Every package under ``batchjac/`` is found as it is added (``batchjac.core``,
``batchjac.exact.primitives``, ...), and two top-level folders are shipped inside the
package, with any packages below them: ``kernels/`` (GPU code) as ``batchjac.kernels`` and
``benchmarks/`` (the benchmark scripts, run by ``python -m batchjac bench``) as
``batchjac.benchmarks``. Everything else about the build is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

MAPPED_FOLDERS = {"batchjac.kernels": "kernels", "batchjac.benchmarks": "benchmarks"}


def packages() -> list[str]:
    found = find_packages(include=["batchjac", "batchjac.*"])
    for name, folder in MAPPED_FOLDERS.items():
        found += [name, *(f"{name}.{sub}" for sub in find_packages(where=folder))]
    return found


setup(packages=packages(), package_dir={"batchjac": "batchjac", **MAPPED_FOLDERS})
