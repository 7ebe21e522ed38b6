"""Helpers shared by the tests (references and comparisons); fixtures are in conftest.py.

Imported as ``from helpers import assert_close`` (a module of its own, so that the
conftest.py files of test folders never shadow it).
"""

from __future__ import annotations

import numpy as np


def to_numpy(a):
    """Any array (NumPy, CuPy) as a NumPy array, for comparison with references."""
    if hasattr(a, "get"):
        return a.get()
    return np.asarray(a)


TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, rtol=None, atol=None):
    """Compare with a float64 reference, relative to the reference's scale."""
    actual = to_numpy(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    rtol = TOL.get(actual.dtype, 1e-12) if rtol is None else rtol
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    atol = rtol * scale if atol is None else atol
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def complex_step_jacobian(f, *args, argnum=0, h=1e-30):
    """Independent float64 reference: the batched Jacobian of a complex-safe NumPy ``f``.

    Perturbs one flattened input entry at a time (a plain loop, no library code):
    returns ``(B, *out_shape, *in_shape)`` in numerator layout.
    """
    args = [np.asarray(a, dtype=np.float64) if i == argnum else a for i, a in enumerate(args)]
    x = args[argnum]
    batch, in_shape = x.shape[0], x.shape[1:]
    out = np.asarray(f(*args))
    columns = []
    for j in range(int(np.prod(in_shape, dtype=int))):
        xc = x.astype(np.complex128).reshape(batch, int(np.prod(in_shape, dtype=int)))
        xc[:, j] += 1j * h
        perturbed = list(args)
        perturbed[argnum] = xc.reshape(x.shape)
        columns.append(np.imag(f(*perturbed)).reshape(batch, int(np.prod(out.shape[1:], dtype=int))) / h)
    J = (
        np.stack(columns, axis=-1)
        if columns
        else np.zeros((batch, int(np.prod(out.shape[1:], dtype=int)), 0))
    )
    return J.reshape(batch, *out.shape[1:], *in_shape)


def black_box_jacobian(x):
    """Closed-form Jacobian ``(B, 2, 3)`` of ``[sin(x0) x1, exp(x1) + x0 x2^2]``, the black
    box the numerical-column tests differentiate."""
    x0, x1, x2 = x[:, 0], x[:, 1], x[:, 2]
    zero = np.zeros_like(x0)
    return np.stack([
        np.stack([np.cos(x0) * x1, np.sin(x0), zero], axis=1),
        np.stack([x2**2, np.exp(x1), 2 * x0 * x2], axis=1),
    ], axis=1)  # fmt: skip


# method -> (relative step for float32, for float64; tolerance for float32, for float64)
DIFFERENCES = {
    "complex-step": ((1e-20, 1e-20), (2e-5, 1e-12)),
    "central": ((5e-3, 6e-6), (1e-3, 1e-8)),
    "forward": ((4e-4, 1.5e-8), (1e-2, 1e-6)),
}


def mlp_layers(rng, widths, dtype=np.float64):
    """Random ``[(W, b), ...]`` for an MLP of ``widths`` (W scaled by 1/sqrt(fan-in))."""
    return [
        ((rng.standard_normal((m, n)) / np.sqrt(n)).astype(dtype), rng.standard_normal(m).astype(dtype))
        for n, m in zip(widths[:-1], widths[1:])
    ]


def numpy_mlp(layers):
    """``f(x)``: the tanh MLP of ``layers`` written in plain NumPy (traced by batchjac,
    complex-safe for the complex-step reference)."""

    def f(x):
        for i, (W, b) in enumerate(layers):
            x = x @ W.T + b
            if i < len(layers) - 1:
                x = np.tanh(x)
        return x

    return f
