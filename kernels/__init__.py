"""GPU kernels of batchjac, shipped as ``batchjac.kernels``.

GPU code only, no API logic: CUDA C sources (``*.cu``) that the CuPy backend loads, and
``@cuda.jit`` modules for the numba-CUDA backend. :func:`source` reads a CUDA C file.
"""

from __future__ import annotations

from importlib import resources


def source(name: str) -> str:
    """The text of the CUDA C source ``name`` (e.g. ``"elementwise.cu"``) in this package."""
    return resources.files(__name__).joinpath(name).read_text()
