"""batchjac: batched Jacobians on the GPU and the CPU.

``bj.jacobian(f, x)`` gives the Jacobians of ``f`` at every sample of a batch ``x`` as one
``(B, *out_shape, *in_shape)`` array (numerator layout, batch axis first); structured
Jacobians (``Dense``, ``Diagonal``, ``Shared``, ``Identity``) keep them compact, and a
dispatch layer runs the work on NumPy (CPU), CuPy or numba-CUDA (NVIDIA GPUs).
"""

from ._arrays import DeviceMismatchError, to_device
from .backends.dispatch import BackendUnavailableError, available_backends, use_backend
from .jacobians import Dense, Diagonal, Identity, Jacobian, Shared

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Dense",
    "DeviceMismatchError",
    "Diagonal",
    "Identity",
    "Jacobian",
    "Shared",
    "available_backends",
    "to_device",
    "use_backend",
]
