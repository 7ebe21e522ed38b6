"""batchjac: batched Jacobians on the GPU and the CPU.

``bj.jacobian(f, x)`` gives the Jacobians of ``f`` at every sample of a batch ``x`` as one
``(B, *out_shape, *in_shape)`` array (numerator layout, batch axis first). ``f`` may be
written with NumPy or with batchjac's array functions: it is traced into a program whose
structured local Jacobians (``Dense``, ``Diagonal``, ``Shared``, ``Identity``, ...) are
assembled in the cheapest order; black boxes get numerical Jacobians. A dispatch layer runs
the work on NumPy (CPU), CuPy or numba-CUDA (NVIDIA GPUs).
"""

from batchjac.api import (
    check_hessian,
    check_jacobian,
    color_columns,
    elementwise,
    grad,
    hessian,
    hvp,
    jacobian,
    jvp,
    register_elementwise,
    sparsity,
    trace,
    value_and_jacobian,
    vhp,
    vjp,
)
from batchjac.backends.dispatch import available_backends, use_backend
from batchjac.core.arrays import to_device
from batchjac.core.errors import (
    BackendUnavailableError,
    DeviceMismatchError,
    NotComplexSafeError,
    NotFusableError,
    NumericalFallbackWarning,
    TraceError,
)
from batchjac.exact.ir import Program
from batchjac.exact.ops import *  # noqa: F403 - the array functions (bj.exp, bj.sum, bj.stack, ...)
from batchjac.exact.ops import PUBLIC as _ARRAY_FUNCTIONS
from batchjac.integrations import interop
from batchjac.integrations.dask import RechunkWarning
from batchjac.integrations.interop import like, to_framework
from batchjac.numerical.device_jacobian import device_jacobian
from batchjac.structured.chain import chain, chain_jvp, chain_plan, chain_vjp
from batchjac.structured.types import (
    BlockDiagonal,
    Dense,
    Diagonal,
    Gather,
    Identity,
    Jacobian,
    Kronecker,
    Shared,
    Sparse,
)

__version__ = "0.2.0.dev0"

__all__ = [
    "BackendUnavailableError", "BlockDiagonal", "Kronecker", "Sparse", "Dense", "DeviceMismatchError", "Diagonal", "Gather", "Identity", "Jacobian",
    "NotComplexSafeError", "NotFusableError", "NumericalFallbackWarning", "Program", "RechunkWarning", "Shared", "TraceError",
    "available_backends", "chain", "chain_jvp", "chain_plan", "chain_vjp", "check_jacobian", "device_jacobian",
    "elementwise", "interop", "jacobian", "like", "register_elementwise", "to_device", "to_framework", "trace",
    "use_backend", "value_and_jacobian", "grad", "hessian", "hvp", "jvp", "vhp", "vjp", "sparsity", "check_hessian", "color_columns", *_ARRAY_FUNCTIONS,
]  # fmt: skip
