"""Scalar expressions of generated code: dtypes, casts, and the rules' scalar forms as Python.

An element-wise rule's maths has one home, its scalar form in
:mod:`batchjac.core.elementwise_rules` (C-compatible expressions: the value, then the
derivative with respect to each argument). :func:`rule_code` turns it into Python source
that numba compiles on the CPU and the GPU alike:

- ``where(c, a, b)`` becomes ``(a if c else b)`` (numba has no ``where`` on scalars; the
  conditional also skips the branch not taken);
- every float literal is cast to the dtype of the operation (``f32(1.0)``), so that float32
  code stays in float32 (a bare ``1.0`` promotes to float64);
- the rule's parameters (``alpha`` of ``elu``, ``p`` of ``power``) are static parameters of
  the program, written in as literals;
- in float32, ``exp`` and ``tanh`` are ``exp_f32`` and ``tanh_f32`` (vectorisable on the
  CPU, see :mod:`batchjac.exact.fuse.cpu_math`; plain ``exp``/``tanh`` on the GPU).

The names a rule uses (``exp``, ``fmax``, ``rint``, ...) are bound per target by the module
header: :mod:`batchjac.exact.fuse.cpu_math` on the CPU, ``batchjac.kernels.numba_fused`` on
the GPU.
"""

from __future__ import annotations

import ast
import functools
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from batchjac.core.elementwise_rules import rule

# dtype -> the cast's name in generated code (bound to numba's or NumPy's type per target)
CASTS = {
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
    np.dtype(np.int32): "i32",
    np.dtype(np.int64): "i64",
    np.dtype(np.bool_): "b1",
}

_FLOAT32_FUNCTIONS = {"exp": "exp_f32", "tanh": "tanh_f32"}


class Unsupported(Exception):
    """A program, or a part of it, the fused compiler does not compile; the message says why."""


def cast(dtype: DTypeLike) -> str:
    """The name of the cast to ``dtype`` in generated code."""
    found = CASTS.get(np.dtype(dtype))
    if found is None:
        raise Unsupported(
            f"dtype {np.dtype(dtype)} (fused kernels handle float32, float64, int32, int64, bool)"
        )
    return found


def constant(value: float, dtype: DTypeLike) -> str:
    """A typed constant: ``f32(0.5)``; float64 and int64 constants need no cast (numba types
    a literal ``0.5`` as float64 and ``3`` as int64), and each cast is a call numba must type.

    >>> constant(0.5, np.float32), constant(0.5, np.float64), constant(True, np.bool_)
    ('f32(0.5)', '0.5', 'True')
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return "True" if value else "False"
    if dtype.kind in "iu":
        return str(int(value)) if dtype == np.int64 else f"{cast(dtype)}({int(value)})"
    text = repr(float(value))
    if dtype == np.float64:
        return text if float(value) >= 0 else f"({text})"
    return f"{cast(dtype)}({text})"


def function_name(name: str, dtype: DTypeLike) -> str:
    """The name of scalar function ``name`` in generated code of ``dtype`` (``exp_f32`` for
    ``exp`` in float32)."""
    return _FLOAT32_FUNCTIONS.get(name, name) if np.dtype(dtype) == np.float32 else name


def placeholder(name: str) -> str:
    """The token standing for argument ``name`` in a template (a valid identifier)."""
    return f"__{name}__"


class _Render(ast.NodeTransformer):
    def __init__(self, dtype: DTypeLike, params: dict[str, Any]) -> None:
        self.cast = None if np.dtype(dtype) == np.float64 else cast(dtype)
        self.dtype = np.dtype(dtype)
        self.params = params

    def visit_Call(self, node: Any) -> Any:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "where":
            condition, yes, no = node.args
            return ast.IfExp(test=condition, body=yes, orelse=no)
        if isinstance(node.func, ast.Name):
            node.func = ast.Name(id=function_name(node.func.id, self.dtype), ctx=ast.Load())
        return node

    def visit_Constant(self, node: Any) -> Any:
        if isinstance(node.value, float) and self.cast is not None:
            return ast.Call(func=ast.Name(id=self.cast, ctx=ast.Load()), args=[node], keywords=[])
        return node

    def visit_Name(self, node: Any) -> Any:
        if node.id in self.params:
            return self.visit_Constant(ast.Constant(value=float(self.params[node.id])))
        if node.id in ("x", "u", "v", "y"):
            return ast.Name(id=placeholder(node.id), ctx=ast.Load())
        return node


def render(expression: str, dtype: DTypeLike, params: dict[str, Any] | None = None) -> str:
    """A scalar-form expression as a Python template for ``dtype`` (arguments as
    :func:`placeholder` tokens).

    >>> render("where(x > 0.0, 1.0, alpha)", np.float32, {"alpha": 0.5})
    '(f32(1.0) if __x__ > f32(0.0) else f32(0.5))'
    >>> render("1.0 - y * y", np.float64)
    '(1.0 - __y__ * __y__)'
    """
    tree = _Render(dtype, params or {}).visit(ast.parse(expression, mode="eval"))
    text = ast.unparse(ast.fix_missing_locations(tree))
    return text if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]) else f"({text})"


def _balanced(text: str) -> bool:
    depth = 0
    for c in text:
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            return False
    return depth == 0


ONE = "1"  # a partial derivative known to be 1 (or a tangent seed): no multiplication
MINUS_ONE = "-1"


@functools.lru_cache(maxsize=1024)
def rule_code(name: str, dtype_str: str, params: tuple) -> tuple:
    """``(value template, (partial template per argument, ...))`` of rule ``name`` in
    ``dtype``; a partial that is the constant 1 or -1 is :data:`ONE` / :data:`MINUS_ONE`."""
    found = rule(name)
    if found.scalar is None or found.functions is not None:
        raise Unsupported(
            f"{name}: a rule registered with bj.register_elementwise (a Python function, not a scalar form)"
        )
    values = {**found.params, **dict(params)}
    value, *derivatives = found.scalar
    partials = []
    for expression in derivatives:
        stripped = expression.strip()
        if stripped == "1.0":
            partials.append(ONE)
        elif stripped == "-1.0":
            partials.append(MINUS_ONE)
        else:
            partials.append(render(expression, dtype_str, values))
    return render(value, dtype_str, values), tuple(partials)


def fill(template: str, arguments: dict) -> str:
    """``template`` with each placeholder replaced by its argument's text."""
    for name, text in arguments.items():
        template = template.replace(placeholder(name), text)
    return template
