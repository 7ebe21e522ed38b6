"""Independent references for the tests of traced NumPy code and of second derivatives.

- :func:`jax_jacobian`, :func:`jax_hessian`: ``jax.vmap(jax.jacfwd / jax.hessian)`` in float64
  (inside ``jax.enable_x64``, so that other tests keep JAX's float32 default); a test that
  needs JAX skips cleanly without it (:func:`need_jax`).
- :func:`complex_step_jacobian` (from ``helpers``): the complex step of the NumPy function.
- :func:`complex_step_gradient_jacobian`: the complex step of an exact gradient (the
  Hessian reference of the property tests).

Functions under test are written once against an array namespace ``xp`` (``numpy`` for
batchjac, ``jax.numpy`` for the reference) and for a whole batch, with axes counted from
the end, so that the same text is valid for one sample too (``per_sample=True``).
"""

from __future__ import annotations

import numpy as np
import pytest

try:  # JAX is an optional reference
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - exercised where JAX is absent
    jax = jnp = None


def need_jax():
    """Skip the calling test when JAX is not installed."""
    if jax is None:
        pytest.skip("JAX is not installed (it is the float64 reference of this test)")


def _on_one_sample(f_xp, per_sample: bool):
    """``f`` as a function of one sample in JAX: a per-sample ``f`` as it is, a batched one on
    a batch of one."""
    if per_sample:
        return lambda s: f_xp(jnp, s)
    return lambda s: f_xp(jnp, s[None])[0]


def jax_jacobian(f_xp, x, *, per_sample: bool = False) -> np.ndarray:
    """``(B, *out, *in)``: ``jax.vmap(jax.jacfwd(f))`` of ``f_xp(jnp, .)`` at ``x``, in float64."""
    need_jax()
    with jax.enable_x64(True):
        g = _on_one_sample(f_xp, per_sample)
        return np.asarray(jax.vmap(jax.jacfwd(g))(jnp.asarray(np.asarray(x, dtype=np.float64))))


def jax_hessian(f_xp, x, *, per_sample: bool = False) -> np.ndarray:
    """``(B, *out, *in, *in)``: ``jax.vmap(jax.hessian(f))`` in float64."""
    need_jax()
    with jax.enable_x64(True):
        g = _on_one_sample(f_xp, per_sample)
        return np.asarray(jax.vmap(jax.hessian(g))(jnp.asarray(np.asarray(x, dtype=np.float64))))


def jax_gradient(f_xp, x, *, per_sample: bool = False) -> np.ndarray:
    """``(B, *in)``: ``jax.vmap(jax.grad(f))`` in float64 (scalar ``f``)."""
    need_jax()
    with jax.enable_x64(True):
        g = _on_one_sample(f_xp, per_sample)
        return np.asarray(jax.vmap(jax.grad(g))(jnp.asarray(np.asarray(x, dtype=np.float64))))


def complex_step_gradient_jacobian(gradient, x, h=1e-30) -> np.ndarray:
    """The Jacobian of ``gradient`` (a function of a complex batch ``(B, n)`` giving ``(B, n)``,
    complex-safe) by the complex step, one column per input entry: a Hessian reference with
    no subtractive cancellation."""
    x = np.asarray(x, dtype=np.float64)
    batch, n = x.shape
    columns = []
    for j in range(n):
        xc = x.astype(np.complex128)
        xc[:, j] += 1j * h
        columns.append(np.imag(gradient(xc)) / h)
    return np.stack(columns, axis=-1) if columns else np.zeros((batch, n, 0))


def relative_error(actual, expected) -> float:
    """``max |a - e| / max(1, max |e|)``."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(actual - expected)) / max(1.0, float(np.max(np.abs(expected)))))
