"""The exception and warning classes of batchjac, in one place.

Every floor raises these; none of them depends on anything else in the package.
"""

from __future__ import annotations


class TraceError(TypeError):
    """``f`` could not be traced: it left batchjac's array functions, or used an operation
    that has no derivative rule. ``method="auto"`` falls back to a numerical method."""


class DeviceMismatchError(ValueError):
    """Inputs of one call live on different devices (batchjac never copies them silently)."""


class BackendUnavailableError(RuntimeError):
    """The backend asked for cannot run here; the message says what is missing."""


class NotComplexSafeError(ValueError):
    """``f`` does not carry imaginary parts through, so complex-step cannot be used on it."""


class NumericalFallbackWarning(UserWarning):
    """``method="auto"`` could not trace ``f`` (or ``f`` is not complex-safe) and used a
    numerical method instead; the message says why."""


class NotFusableError(ValueError):
    """``fuse=True`` was asked for a program the fused-kernel compiler cannot compile; the
    message says which primitive or size limit stops it (``fuse="auto"`` uses the chain)."""
