"""batchjac: batched Jacobians on the GPU and the CPU.

``bj.jacobian(f, x)`` gives the Jacobians of ``f`` at every sample of a batch ``x`` as one
``(B, *out_shape, *in_shape)`` array (numerator layout, batch axis first); structured
Jacobians (``Dense``, ``Diagonal``, ``Shared``, ``Identity``) keep them compact, and a
dispatch layer runs the work on NumPy (CPU), CuPy or numba-CUDA (NVIDIA GPUs).
"""

from ._arrays import DeviceMismatchError, to_device
from .backends.dispatch import BackendUnavailableError, available_backends, use_backend
from .chain import chain, chain_jvp, chain_plan, chain_vjp
from .checking import check_jacobian
from .api import NumericalFallbackWarning, elementwise, jacobian, register_elementwise, value_and_jacobian
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
from .jacobians import Dense, Diagonal, Identity, Jacobian, Shared
from .tracing import TraceError

__version__ = "0.1.0"

_ARRAY_FUNCTIONS = [
    "abs", "add", "cos", "det", "divide", "dot", "elu", "exp", "expm1", "gelu", "leaky_relu",
    "linear", "log", "log1p", "log_softmax", "matmul", "maximum", "mean", "minimum", "multiply",
    "negative", "power", "quadratic_form", "reciprocal", "relu", "reshape", "sigmoid", "sin",
    "slogdet", "softmax", "softplus", "sqrt", "square", "subtract", "sum", "take", "tan", "tanh",
    "transpose", "where",
]  # fmt: skip

__all__ = _ARRAY_FUNCTIONS + [
    "BackendUnavailableError",
    "NumericalFallbackWarning",
    "TraceError",
    "elementwise",
    "jacobian",
    "register_elementwise",
    "value_and_jacobian",
    "Dense",
    "DeviceMismatchError",
    "Diagonal",
    "Identity",
    "Jacobian",
    "Shared",
    "available_backends",
    "chain",
    "chain_jvp",
    "chain_plan",
    "chain_vjp",
    "check_jacobian",
    "to_device",
    "use_backend",
]
