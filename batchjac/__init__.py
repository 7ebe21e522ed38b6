"""batchjac: batched Jacobians on the GPU and the CPU.

``bj.jacobian(f, x)`` gives the Jacobians of ``f`` at every sample of a batch ``x`` as one
``(B, *out_shape, *in_shape)`` array (numerator layout, batch axis first); structured
Jacobians (``Dense``, ``Diagonal``, ``Shared``, ``Identity``) keep them compact, and a
dispatch layer runs the work on NumPy (CPU), CuPy or numba-CUDA (NVIDIA GPUs).
"""

from . import interop
from ._arrays import DeviceMismatchError, to_device
from .api import NumericalFallbackWarning, elementwise, jacobian, register_elementwise, value_and_jacobian
from .backends.dispatch import BackendUnavailableError, available_backends, use_backend
from .chain import chain, chain_jvp, chain_plan, chain_vjp
from .checking import check_jacobian
from .dask_support import RechunkWarning
from .device_jacobian import device_jacobian
from .functions import (
    abs,
    add,
    cos,
    det,
    divide,
    dot,
    elu,
    exp,
    expm1,
    gelu,
    leaky_relu,
    linear,
    log,
    log1p,
    log_softmax,
    matmul,
    maximum,
    mean,
    minimum,
    multiply,
    negative,
    power,
    quadratic_form,
    reciprocal,
    relu,
    reshape,
    sigmoid,
    sin,
    slogdet,
    softmax,
    softplus,
    sqrt,
    square,
    subtract,
    sum,
    take,
    tan,
    tanh,
    transpose,
    where,
)
from .interop import like, to_framework
from .jacobians import Dense, Diagonal, Gather, Identity, Jacobian, Shared
from .tracing import TraceError

__version__ = "0.1.0"

__all__ = [
    "Gather",
    "RechunkWarning",
    "to_framework",
    "like",
    "interop",
    "device_jacobian",
    "BackendUnavailableError",
    "Dense",
    "DeviceMismatchError",
    "Diagonal",
    "Identity",
    "Jacobian",
    "NumericalFallbackWarning",
    "Shared",
    "TraceError",
    "abs",
    "add",
    "available_backends",
    "chain",
    "chain_jvp",
    "chain_plan",
    "chain_vjp",
    "check_jacobian",
    "cos",
    "det",
    "divide",
    "dot",
    "elementwise",
    "elu",
    "exp",
    "expm1",
    "gelu",
    "jacobian",
    "leaky_relu",
    "linear",
    "log",
    "log1p",
    "log_softmax",
    "matmul",
    "maximum",
    "mean",
    "minimum",
    "multiply",
    "negative",
    "power",
    "quadratic_form",
    "reciprocal",
    "register_elementwise",
    "relu",
    "reshape",
    "sigmoid",
    "sin",
    "slogdet",
    "softmax",
    "softplus",
    "sqrt",
    "square",
    "subtract",
    "sum",
    "take",
    "tan",
    "tanh",
    "to_device",
    "transpose",
    "use_backend",
    "value_and_jacobian",
    "where",
]
