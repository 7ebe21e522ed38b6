"""Kernel factories of the CuPy backend: CUDA C sources and the CuPy kernels built from them.

GPU code only, no API logic (that is :mod:`batchjac.backends.cupy_ops`):

- the fused value-and-derivative kernels of the element-wise rules are *generated* from
  each rule's scalar form (``rule.scalar`` in :mod:`batchjac.core.elementwise_rules`, the one
  home of every derivative rule): :func:`elementwise_function` writes a templated CUDA C++
  device function, and :func:`elementwise_kernel` wraps it in a ``cupy.ElementwiseKernel``
  (CuPy compiles it on first use for each device and dtype, and caches it);
- the structured kernels (row and column scaling, diagonal-to-dense, ``add_diagonal``,
  batched JVP and VJP) are templates in ``kernels/structured.cu``, compiled once per
  device as one ``cupy.RawModule`` (:func:`structured_kernel`).

Nothing here imports CuPy until a kernel is asked for, so source generation runs (and is
tested) without a GPU.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from batchjac import kernels
from batchjac.core.elementwise_rules import SCALAR_FUNCTIONS, ElementwiseRule, rule

# dtype -> the C++ type the kernels are instantiated for. Other floating dtypes (float16)
# take the namespace reference of batchjac.backends.xp_ops.
CTYPES: dict[np.dtype, str] = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

STRUCTURED_SOURCE = "structured.cu"
MATH_HEADER = "batchjac_math.cuh"
STRUCTURED_KERNELS = (
    "scale_rows",
    "scale_cols",
    "diag_to_dense",
    "add_diagonal",
    "batched_matvec",
    "batched_vecmat",
)

# The scalar type of the generated device functions; every number of a rule's expression
# is written ``Real(...)`` so that a float kernel computes in float throughout.
REAL = "Real"

_TOKEN = re.compile(
    r"(?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<other>\s+|\S)"
)


# --------------------------------------------------------------------------------------
# Element-wise rules: CUDA C generated from rule.scalar
# --------------------------------------------------------------------------------------


def argument_names(found: ElementwiseRule) -> tuple[str, ...]:
    """The scalar form's argument names: ``("x",)`` (unary) or ``("u", "v")`` (binary)."""
    return ("x",) if found.arity == 1 else ("u", "v")


def output_names(found: ElementwiseRule) -> tuple[str, ...]:
    """``("y", "d_x")`` or ``("y", "d_u", "d_v")``: the value, then each derivative."""
    return ("y", *(f"d_{a}" for a in argument_names(found)))


def function_name(name: str) -> str:
    """The C name of the device function of rule ``name``: ``bj_<name>``."""
    return f"bj_{name}"


def translate(expression: str, known: tuple[str, ...], where: str) -> str:
    """A scalar-form expression as CUDA C++: numbers become ``Real(...)`` literals.

    ``known`` are the names it may use besides :data:`SCALAR_FUNCTIONS` (arguments,
    parameters, ``y``); any other name is a ``ValueError`` that names ``where``.
    """
    allowed = set(known) | set(SCALAR_FUNCTIONS)
    out = []
    for token in _TOKEN.finditer(expression):
        if token["number"]:
            out.append(f"{REAL}({token['number']})")
        elif token["name"]:
            if token["name"] not in allowed:
                raise ValueError(
                    f"{where}: the scalar form uses {token['name']!r}, which is neither an argument, "
                    f"a parameter, y, nor one of {', '.join(SCALAR_FUNCTIONS)}"
                )
            out.append(token["name"])
        else:
            out.append(token["other"])
    return "".join(out)


def elementwise_function(name: str) -> str:
    """The CUDA C++ device function computing rule ``name``'s value and derivatives.

    ``template <typename Real> void bj_<name>(Real x[, Real <param>...], Real& y, Real& d_x)``
    (binary: ``u, v`` and ``y, d_u, d_v``), one statement per expression of ``rule.scalar``,
    value first (the derivatives may read ``y``).

    >>> print(elementwise_function("tanh"))  # doctest: +NORMALIZE_WHITESPACE
    template <typename Real>
    __device__ __forceinline__ void bj_tanh(const Real x, Real& y, Real& d_x)
    {
        y = tanh(x);
        d_x = Real(1.0) - y * y;
    }
    """
    found = rule(name)
    if found.scalar is None:
        raise ValueError(f"elementwise {name!r}: the rule has no scalar form to generate a kernel from")
    args, params, outputs = argument_names(found), tuple(found.params), output_names(found)
    if len(found.scalar) != len(outputs):
        raise ValueError(
            f"elementwise {name!r}: the scalar form has {len(found.scalar)} expressions, expected "
            f"{len(outputs)} (the value, then one derivative per argument)"
        )
    signature = ", ".join([f"const {REAL} {a}" for a in (*args, *params)] + [f"{REAL}& {o}" for o in outputs])
    body = [
        f"    {out} = {translate(expr, args + params + (('y',) if i else ()), f'elementwise {name!r}')};"
        for i, (out, expr) in enumerate(zip(outputs, found.scalar))
    ]
    return "\n".join(
        [
            f"template <typename {REAL}>",
            f"__device__ __forceinline__ void {function_name(name)}({signature})",
            "{",
            *body,
            "}",
        ]
    )


def elementwise_source(name: str) -> str:
    """The preamble of rule ``name``'s kernel: the math header, then its device function."""
    return kernels.source(MATH_HEADER) + "\n" + elementwise_function(name) + "\n"


@functools.cache
def elementwise_kernel(name: str) -> Any:
    """The ``cupy.ElementwiseKernel`` of rule ``name``.

    Inputs: the arguments, then the parameters, all of one dtype ``T``; outputs
    ``(y, d_x)`` or ``(y, d_u, d_v)``, of the broadcast shape of the inputs. CuPy compiles
    it for each device and dtype on first use and keeps it.
    """
    import cupy

    found = rule(name)
    inputs = (*argument_names(found), *found.params)
    outputs = output_names(found)
    return cupy.ElementwiseKernel(
        ", ".join(f"T {a}" for a in inputs),
        ", ".join(f"T {o}" for o in outputs),
        f"{function_name(name)}<T>({', '.join((*inputs, *outputs))})",
        name=f"batchjac_{name}",
        preamble=elementwise_source(name),
    )


# --------------------------------------------------------------------------------------
# Structured kernels: templates in kernels/structured.cu
# --------------------------------------------------------------------------------------


def name_expression(kernel: str, dtype: Any) -> str:
    """The instantiation of a structured kernel for ``dtype``, e.g. ``"scale_rows<float>"``."""
    return f"{kernel}<{CTYPES[np.dtype(dtype)]}>"


def name_expressions() -> list[str]:
    """Every instantiation :data:`STRUCTURED_KERNELS` x :data:`CTYPES` compiled into the module."""
    return [name_expression(k, dtype) for k in STRUCTURED_KERNELS for dtype in CTYPES]


@functools.cache
def _structured_module(device_id: int) -> Any:
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=kernels.source(STRUCTURED_SOURCE), name_expressions=name_expressions())


@functools.cache
def _structured_function(device_id: int, kernel: str, dtype: np.dtype[Any]) -> Any:
    import cupy

    with cupy.cuda.Device(device_id):
        return _structured_module(device_id).get_function(name_expression(kernel, dtype))


def structured_kernel(kernel: str, dtype: Any) -> Any:
    """The ``cupy.RawKernel`` ``kernel<float|double>`` of ``structured.cu`` on the current
    device (module compiled once per device, functions cached per device and dtype)."""
    import cupy

    return _structured_function(cupy.cuda.runtime.getDevice(), kernel, np.dtype(dtype))


@functools.cache
def multiprocessors(device_id: int) -> int:
    """The number of streaming multiprocessors of device ``device_id`` (sizes the grids)."""
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])
