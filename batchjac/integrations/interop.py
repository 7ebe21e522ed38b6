"""Results in the caller's framework: NumPy, CuPy, PyTorch or JAX, zero-copy through DLPack.

batchjac computes on NumPy (CPU) and CuPy (GPU) arrays and takes PyTorch and JAX tensors
in without a copy (:func:`batchjac.core.arrays.as_array`). These helpers hand results back
the same way: the returned tensor shares memory with batchjac's array and stays on its
device. Nothing is ever moved between devices here; a request that would need that is an
error naming :func:`batchjac.to_device`.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from batchjac.core import arrays
from batchjac.core.arrays import CPU, GPU, device_of

FRAMEWORKS = ("numpy", "cupy", "torch", "jax")


def framework_of(a: Any) -> str:
    """``"numpy"``, ``"cupy"``, ``"torch"`` or ``"jax"``: the framework of array ``a`` (as
    :func:`batchjac.core.arrays.framework_of`, which this refines with an error for anything
    else).

    >>> import numpy as np
    >>> framework_of(np.zeros(2))
    'numpy'
    """
    found = arrays.framework_of(a)
    if found is None:
        raise TypeError(
            f"reference: expected a NumPy, CuPy, PyTorch or JAX array, got {type(a).__module__}.{type(a).__name__}"
        )
    return found


def _convert(a: Any, framework: str) -> Any:
    if framework == "numpy":
        if device_of(a) != CPU:
            raise ValueError(
                "to_framework: a GPU array cannot become a NumPy array without a copy to the host; "
                "use bj.to_device(result, 'cpu')"
            )
        return np.from_dlpack(a)
    if framework == "cupy":
        if device_of(a) != GPU:
            raise ValueError(
                "to_framework: a CPU array cannot become a CuPy array without a copy to the GPU; "
                "use bj.to_device(result, 'gpu')"
            )
        return importlib.import_module("cupy").from_dlpack(a)
    if framework == "torch":
        return importlib.import_module("torch").from_dlpack(a)
    # JAX takes a CPU buffer in place only when it is 64-byte aligned and copies it (on the
    # CPU) otherwise; CuPy's pool aligns every GPU allocation, so GPU results are shared.
    out = importlib.import_module("jax.numpy").from_dlpack(a, copy=None)
    if out.dtype != a.dtype:
        raise ValueError(
            f"to_framework: JAX turned {a.dtype} into {out.dtype}; enable 64-bit types "
            "(jax.config.update('jax_enable_x64', True)) to receive float64 results"
        )
    return out


def to_framework(result: Any, framework: str) -> Any:
    """``result`` as arrays of ``framework`` (one of :data:`FRAMEWORKS`), sharing memory.

    ``result`` is an array or a tuple / list of them (``bj.value_and_jacobian`` returns
    ``(y, J)``; ``argnums`` tuples give tuples), converted element by element; the
    shape, dtype and device stay (JAX may copy an unaligned CPU buffer, on the CPU; it
    needs ``jax_enable_x64`` for float64). A structured ``bj.Jacobian`` is batchjac's own object:
    convert ``J.to_dense()`` or its stored arrays. Arrays that DLPack cannot describe
    (read-only or negatively strided NumPy arrays for PyTorch, for instance) raise the
    framework's own error rather than being copied.

    >>> import numpy as np
    >>> x = np.arange(3.0)
    >>> np.shares_memory(to_framework(x, "numpy"), x)  # to_framework(x, "torch") likewise
    True
    """
    from batchjac.structured.types import Jacobian

    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(map(repr, FRAMEWORKS))}, got {framework!r}")
    if isinstance(result, (tuple, list)):
        return type(result)(to_framework(r, framework) for r in result)
    if isinstance(result, Jacobian):
        raise TypeError(
            f"to_framework: {type(result).__name__} is a structured batchjac Jacobian; convert "
            "J.to_dense() (or its stored array) instead"
        )
    if not hasattr(result, "__dlpack__"):
        raise TypeError(f"to_framework: expected an array, got {type(result).__name__}")
    return _convert(result, framework)


def like(result: Any, reference: Any) -> Any:
    """``result`` in the framework of ``reference`` (an array or tensor the caller passed
    in), sharing memory: :func:`to_framework` with ``framework_of(reference)``.

    >>> import numpy as np, batchjac as bj
    >>> x = np.ones((2, 3))  # a torch.Tensor or a jax.Array gives one of theirs
    >>> J = bj.jacobian(bj.tanh, x)
    >>> type(like(J, x)).__name__, like(J, x).shape
    ('ndarray', (2, 3, 3))
    """
    return to_framework(result, framework_of(reference))
