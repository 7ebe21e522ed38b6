"""Checking a batched Jacobian against a numerical one: ``bj.check_jacobian``.

An entry passes when ``|J - N| <= atol + rtol |N|``, ``N`` the numerical Jacobian. The
default ``rtol`` is set well above the error each method shows on smooth functions (see
:mod:`batchjac.numerical.differences`), and the default ``atol`` is ``rtol * max(1, max |N|)``, so that
entries that cancel to nearly zero are judged on the scale of the whole Jacobian (other
dtypes use the float32 column):

==============  =======  =======
method          float64  float32
==============  =======  =======
complex-step    1e-10    1e-4
central         1e-6     1e-2
forward         1e-4     5e-2
==============  =======  =======
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from batchjac.core.arrays import as_array, as_float_array, namespace
from batchjac.integrations import dask as dask_support
from batchjac.numerical.differences import METHODS, NotComplexSafeError, numerical_value_and_jacobian
from batchjac.structured.types import Jacobian

DEFAULT_RTOL = {
    ("complex-step", np.dtype(np.float64)): 1e-10,
    ("complex-step", np.dtype(np.float32)): 1e-4,
    ("central", np.dtype(np.float64)): 1e-6,
    ("central", np.dtype(np.float32)): 1e-2,
    ("forward", np.dtype(np.float64)): 1e-4,
    ("forward", np.dtype(np.float32)): 5e-2,
}


@dataclass(frozen=True)
class Entry:
    """One entry ``J[sample, *output_index, *input_index]`` and its numerical value."""

    sample: int
    output_index: tuple
    input_index: tuple
    given: float
    numerical: float

    @property
    def error(self) -> float:
        return abs(self.given - self.numerical)

    def __str__(self):
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

    def __str__(self):
        worst = f"; closest to tolerance at {self.worst}" if self.worst is not None else ""
        return (
            f"Jacobian matches {self.method} differences: max abs error {self.max_abs_error:.3g}, "
            f"max rel error {self.max_rel_error:.3g} (rtol {self.rtol:.3g}, atol {self.atol:.3g}){worst}"
        )


def check_jacobian(f, x, J=None, method="complex-step", rtol=None, atol=None) -> JacobianCheck:
    """Compare a batched Jacobian of ``f`` at ``x`` with a numerical one.

    ``f`` maps ``x`` ``(B, *in_shape)`` to ``(B, *out_shape)``. ``J`` is an array in
    numerator layout ``(B, *out_shape, *in_shape)``, a :class:`bj.Jacobian` ``(B, m, n)``
    over the flattened shapes, or None for ``bj.jacobian(f, x, method="exact")``. The
    reference uses ``method`` (``"complex-step"``, ``"central"``, ``"forward"``); an ``f``
    that is not complex-safe (batchjac's own array functions take no complex input) is
    compared with central differences instead, with a ``NumericalFallbackWarning``. Default
    tolerances are in the module docstring. Returns a :class:`JacobianCheck`; raises
    ``AssertionError`` naming the worst entry (sample, output index, input index, both
    values, the error) if any entry is out of tolerance, and ``ValueError`` if ``J``'s shape
    is not the numerical Jacobian's.

    >>> import numpy as np, batchjac as bj
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> report = bj.check_jacobian(lambda x: x**2, x, J=2 * x[:, :, None] * np.eye(2))
    >>> report.max_abs_error
    0.0
    """
    if dask_support.has_dask_array(x, J):  # computed block by block over the batch
        return dask_support.check_jacobian(f, x, J, method, rtol, atol)
    x = as_float_array(x, "x")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    try:
        _, (numerical,) = numerical_value_and_jacobian(f, (x,), (0,), method)
    except NotComplexSafeError as err:
        from batchjac.core.errors import NumericalFallbackWarning

        warnings.warn(
            f"check_jacobian: {err}; comparing with central differences instead",
            NumericalFallbackWarning,
            stacklevel=2,
        )
        method = "central"
        _, (numerical,) = numerical_value_and_jacobian(f, (x,), (0,), method)
    given = _given(f, x, J, numerical.shape)
    rtol, atol = _tolerances(method, numerical, rtol, atol)
    xp = namespace(given, numerical)
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


def _given(f, x, J, shape):
    """``J`` as an array of the numerical Jacobian's shape ``(B, *out_shape, *in_shape)``."""
    if J is None:
        from batchjac.api import jacobian

        J = jacobian(f, x, method="exact")
    if isinstance(J, Jacobian):
        out_shape, in_shape = shape[1 : len(shape) - x.ndim + 1], x.shape[1:]
        flat = (shape[0], int(np.prod(out_shape, dtype=np.int64)), int(np.prod(in_shape, dtype=np.int64)))
        if J.shape != flat:
            raise ValueError(f"J: expected a Jacobian of shape {flat} (B, m, n) for f at x, got {J.shape}")
        return J.to_dense().reshape(shape)
    J = as_array(J, "J")
    if tuple(J.shape) != tuple(shape):
        raise ValueError(
            f"J: expected shape {tuple(shape)} (B, *out_shape, *in_shape, numerator layout), got {tuple(J.shape)}"
        )
    return J


def _tolerances(method, numerical, rtol, atol):
    if rtol is None:
        rtol = DEFAULT_RTOL.get(
            (method, np.dtype(numerical.dtype)), DEFAULT_RTOL[method, np.dtype(np.float32)]
        )
    if atol is None:
        scale = float(namespace(numerical).abs(numerical).max()) if numerical.size else 0.0
        atol = rtol * max(1.0, scale)
    return float(rtol), float(atol)


def _entry(given, numerical, flat_index, in_ndim) -> Entry:
    index = tuple(int(i) for i in np.unravel_index(flat_index, given.shape))
    split = len(index) - in_ndim
    return Entry(
        sample=index[0],
        output_index=index[1:split],
        input_index=index[split:],
        given=float(given[index]),
        numerical=float(numerical[index]),
    )


def _max_relative(xp, error, numerical) -> float:
    nonzero = numerical != 0
    if not bool(nonzero.any()):
        return 0.0
    return float((error[nonzero] / xp.abs(numerical[nonzero])).max())
