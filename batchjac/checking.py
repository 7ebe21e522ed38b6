"""Checking a batched Jacobian against a numerical one: ``bj.check_jacobian``.

An entry passes when ``|J - N| <= atol + rtol |N|``, ``N`` the numerical Jacobian. The
default ``rtol`` is set well above the error each method shows on smooth functions (see
:mod:`batchjac.numerical.differences`; other dtypes use the float32 column):

==============  =======  =======
method          float64  float32
==============  =======  =======
complex-step    1e-10    1e-4
central         1e-6     1e-2
forward         1e-4     5e-2
==============  =======  =======

The default ``atol`` judges entries that cancel to nearly zero on the scale of the
Jacobian itself and of the method's rounding error, never on a fixed scale of 1 (which
would let any Jacobian of a function whose derivatives are all below ``rtol`` pass, a
zero one included):

    ``atol = rtol * max |N| + ROUNDING_FACTOR * eps^(1 - p) * max |f(x)| / max(1, max |x|)``

with ``eps`` the machine epsilon of ``N``'s dtype and ``eps^p`` the method's relative step:
the second term is the rounding error of a difference quotient of ``f``'s values (``p =
1/3`` central, ``1/2`` forward; complex step subtracts nothing and has no such term). For
``f = 1e-7 tanh(x)`` in float64 and complex step, ``atol`` is about ``1e-17``: a ``J`` of
zeros fails.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import DTypeLike

from batchjac import engine
from batchjac.backends.dispatch import use_backend
from batchjac.core.arrays import as_array, as_float_array, float_dtype, framework_of, namespace
from batchjac.core.errors import NotComplexSafeError, NumericalFallbackWarning
from batchjac.core.validation import NUMERICAL_METHODS, check_callable, check_method, check_tolerance
from batchjac.numerical.differences import numerical_value_and_jacobian
from batchjac.structured.types import Jacobian

DEFAULT_RTOL = {
    ("complex-step", np.dtype(np.float64)): 1e-10,
    ("complex-step", np.dtype(np.float32)): 1e-4,
    ("central", np.dtype(np.float64)): 1e-6,
    ("central", np.dtype(np.float32)): 1e-2,
    ("forward", np.dtype(np.float64)): 1e-4,
    ("forward", np.dtype(np.float32)): 5e-2,
}

# Relative step of each method as a power of eps; None: no difference of f's values.
ROUNDING_POWER = {"complex-step": None, "central": 1 / 3, "forward": 1 / 2}
ROUNDING_FACTOR = 100.0  # the default atol allows this many rounding errors of a quotient


@dataclass(frozen=True)
class Entry:
    """One entry ``J[sample, *output_index, *input_index]`` and its numerical value."""

    sample: int
    output_index: tuple[int, ...]
    input_index: tuple[int, ...]
    given: float
    numerical: float

    @property
    def error(self) -> float:
        return abs(self.given - self.numerical)

    def __str__(self) -> str:
        return (
            f"sample {self.sample}, output index {self.output_index}, input index {self.input_index}: "
            f"J = {self.given!r}, numerical = {self.numerical!r}, |error| = {self.error:.3g}"
        )


@dataclass(frozen=True)
class JacobianCheck:
    """What :func:`check_jacobian` found: the largest errors and the worst entry.

    ``worst`` is the entry with the least room under its tolerance ``atol + rtol |N|``
    (None for an empty Jacobian); ``max_rel_error`` is taken over the entries whose
    numerical value is not zero.
    """

    method: str
    rtol: float
    atol: float
    max_abs_error: float
    max_rel_error: float
    worst: Entry | None

    def __str__(self) -> str:
        worst = f"; closest to tolerance at {self.worst}" if self.worst is not None else ""
        return (
            f"Jacobian matches {self.method} differences: max abs error {self.max_abs_error:.3g}, "
            f"max rel error {self.max_rel_error:.3g} (rtol {self.rtol:.3g}, atol {self.atol:.3g}){worst}"
        )


def check_jacobian(
    f: Callable[..., Any],
    x: Any,
    J: Any = None,
    method: str = "complex-step",
    rtol: float | None = None,
    atol: float | None = None,
    backend: str | None = None,
) -> JacobianCheck:
    """Compare a batched Jacobian of ``f`` at ``x`` with a numerical one.

    ``f`` maps ``x`` ``(B, *in_shape)`` to ``(B, *out_shape)``. ``J`` is an array in
    numerator layout ``(B, *out_shape, *in_shape)`` of real numbers, a :class:`bj.Jacobian`
    ``(B, m, n)`` over the flattened shapes, or None for ``bj.jacobian(f, x,
    method="exact")``. The reference uses ``method`` (``"complex-step"``, ``"central"``,
    ``"forward"``); an ``f`` that is not complex-safe (batchjac's own array functions take
    no complex input) is compared with central differences instead, with a
    ``NumericalFallbackWarning``. ``rtol`` and ``atol`` are non-negative numbers or None for
    the defaults of the module docstring. ``backend`` runs the whole check (reference,
    exact Jacobian, densifying a structured ``J``) on that backend, whatever
    ``bj.use_backend`` or ``BATCHJAC_BACKEND`` say. ``f`` receives arrays of ``x``'s
    framework (a PyTorch ``f`` of a tensor works; see
    :mod:`batchjac.numerical.differences`).

    Returns a :class:`JacobianCheck`; raises ``AssertionError`` naming the worst entry
    (sample, output index, input index, both values, the error) if any entry is out of
    tolerance, ``ValueError`` if ``J``'s shape is not the numerical Jacobian's, and
    ``TypeError`` for a ``J`` that holds no real numbers or a tolerance that is not a number.
    Batches held in Dask arrays are checked block by block by
    :func:`batchjac.integrations.dask.check_jacobian`, where ``bj.check_jacobian`` routes them.

    >>> import numpy as np, batchjac as bj
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> report = bj.check_jacobian(lambda x: x**2, x, J=2 * x[:, :, None] * np.eye(2))
    >>> report.max_abs_error
    0.0
    """
    check_callable(f, "f")
    method = check_method(method, NUMERICAL_METHODS)
    rtol, atol = check_tolerance(rtol, "rtol"), check_tolerance(atol, "atol")
    framework = framework_of(x)
    x = as_float_array(x, "x")
    context = use_backend(backend) if backend is not None else contextlib.nullcontext()
    with context:
        return _check(
            f, x, J, method, rtol, atol, backend, framework if framework in ("torch", "jax") else None
        )


def _check(
    f: Callable[..., Any],
    x: Any,
    J: Any,
    method: str,
    rtol: float | None,
    atol: float | None,
    backend: str | None,
    f_framework: str | None,
) -> JacobianCheck:
    def reference(method: str) -> tuple[Any, tuple[Any, ...]]:
        return numerical_value_and_jacobian(f, (x,), 0, method, backend=backend, f_framework=f_framework)

    try:
        value, (numerical,) = reference(method)
    except NotComplexSafeError as err:
        warnings.warn(
            f"check_jacobian: {err}; comparing with central differences instead",
            NumericalFallbackWarning,
            stacklevel=3,
        )
        method = "central"
        value, (numerical,) = reference(method)
    given = _given(f, x, J, numerical.shape, backend)
    xp = namespace(given, numerical)
    if rtol is None:
        rtol = default_rtol(method, numerical.dtype)
    if atol is None:
        atol = default_atol(method, rtol, numerical, value, x)
    error = xp.abs(given - numerical)
    allowed = atol + rtol * xp.abs(numerical)
    worst = _entry(given, numerical, int(xp.argmax(error - allowed)), x.ndim - 1) if error.size else None
    report = JacobianCheck(
        method=method,
        rtol=rtol,
        atol=atol,
        max_abs_error=float(error.max()) if error.size else 0.0,
        max_rel_error=_max_relative(xp, error, numerical),
        worst=worst,
    )
    failed = int(xp.count_nonzero(~(error <= allowed)))  # NaN entries fail
    if failed:
        raise AssertionError(
            f"check_jacobian: J differs from the {method} Jacobian in {failed} of {error.size} entries; "
            f"worst at {worst} > allowed {atol:.3g} + {rtol:.3g} |numerical| "
            f"(max abs error {report.max_abs_error:.3g}, max rel error {report.max_rel_error:.3g})"
        )
    return report


def default_rtol(method: str, dtype: DTypeLike) -> float:
    """The documented default ``rtol`` of ``method`` for a Jacobian of ``dtype``."""
    return DEFAULT_RTOL.get((method, np.dtype(dtype)), DEFAULT_RTOL[method, np.dtype(np.float32)])


def default_atol(method: str, rtol: float, numerical: Any, value: Any, x: Any) -> float:
    """The default ``atol`` (module docstring) for the numerical Jacobian ``numerical`` of
    ``f`` at ``x`` with values ``value = f(x)``."""
    return atol_from_scales(method, rtol, numerical.dtype, _max_abs(numerical), _max_abs(value), _max_abs(x))


def atol_from_scales(
    method: str, rtol: float, dtype: DTypeLike, jacobian: float, value: float, x: float
) -> float:
    """The default ``atol`` from the largest ``|N|``, ``|f(x)|`` and ``|x|`` (a blockwise
    check merges these maxima first).

    >>> float(f"{atol_from_scales('complex-step', 1e-10, 'float64', 1e-7, 1e-7, 2.0):.3g}")
    1e-17
    """
    power = ROUNDING_POWER[method]
    rounding = 0.0
    if power is not None:
        eps = float(np.finfo(np.dtype(dtype)).eps)
        rounding = ROUNDING_FACTOR * eps ** (1 - power) * value / max(1.0, x)
    return float(rtol * jacobian + rounding)


def _max_abs(a: Any) -> float:
    return float(namespace(a).abs(a).max()) if a.size else 0.0


def _given(f: Callable[..., Any], x: Any, J: Any, shape: tuple[int, ...], backend: str | None = None) -> Any:
    """``J`` as an array of the numerical Jacobian's shape ``(B, *out_shape, *in_shape)``."""
    if J is None:
        _, J, _ = engine.value_and_jacobian(f, x, method="exact", backend=backend)
    if isinstance(J, Jacobian):
        out_shape, in_shape = shape[1 : len(shape) - x.ndim + 1], x.shape[1:]
        flat = (shape[0], int(np.prod(out_shape, dtype=np.int64)), int(np.prod(in_shape, dtype=np.int64)))
        if J.shape != flat:
            raise ValueError(f"J: expected a Jacobian of shape {flat} (B, m, n) for f at x, got {J.shape}")
        return J.to_dense().reshape(shape)
    J = as_array(J, "J")
    float_dtype(J.dtype, "J")  # real numbers only: strings, booleans, complex are refused here
    if tuple(J.shape) != tuple(shape):
        raise ValueError(
            f"J: expected shape {tuple(shape)} (B, *out_shape, *in_shape, numerator layout), got {tuple(J.shape)}"
        )
    return J


def _entry(given: Any, numerical: Any, flat_index: int, in_ndim: int) -> Entry:
    index = tuple(int(i) for i in np.unravel_index(flat_index, given.shape))
    split = len(index) - in_ndim
    return Entry(
        sample=index[0],
        output_index=index[1:split],
        input_index=index[split:],
        given=float(given[index]),
        numerical=float(numerical[index]),
    )


def _max_relative(xp: Any, error: Any, numerical: Any) -> float:
    nonzero = numerical != 0
    if not bool(nonzero.any()):
        return 0.0
    return float((error[nonzero] / xp.abs(numerical[nonzero])).max())
