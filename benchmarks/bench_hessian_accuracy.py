"""Accuracy of bj.hessian's methods against a float64 reference with no cancellation.

f: the softmax cross-entropy of a 16 -> 32 -> 10 tanh MLP w.r.t. its input (B = 256), and
sum(sin(x) x^2) element-wise. Reference: the complex step of a hand-written gradient (float64).
Error: max |H - H_ref| / max(1, max |H_ref|). Run: python benchmarks/bench_hessian_accuracy.py
"""

import warnings

import numpy as np

import batchjac as bj

rng = np.random.default_rng(0)
B, n, h, k = 256, 16, 32, 10
W1, W2 = rng.standard_normal((h, n)) / np.sqrt(n), rng.standard_normal((k, h)) / np.sqrt(h)
labels = np.eye(k)[rng.integers(0, k, B)]


def loss(x, labels):  # traceable NumPy; labels per sample (an argument: numerical methods re-batch)
    logits = np.tanh(x @ W1.T.astype(x.dtype)) @ W2.T.astype(x.dtype)  # float32 stays float32
    return -np.sum(labels * (logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))), axis=-1)


def loss_black_box(x, labels):  # the same, untraceable
    return loss(np.asarray(x), labels)


def loss_gradient(z):  # by hand, complex-safe
    hidden = np.tanh(z @ W1.T)
    logits = hidden @ W2.T
    e = np.exp(logits)
    s = e / np.sum(e, axis=-1, keepdims=True)
    return (((s - labels) @ W2) * (1 - hidden**2)) @ W1


def elementwise(x, labels):
    return np.sum(np.sin(x) * x**2, axis=-1)


def elementwise_black_box(x, labels):
    return elementwise(np.asarray(x), labels)


def elementwise_gradient(z):
    return np.cos(z) * z**2 + 2 * z * np.sin(z)


def reference(gradient, x, step=1e-30):
    columns = []
    for j in range(x.shape[1]):
        xc = x.astype(np.complex128)
        xc[:, j] += 1j * step
        columns.append(np.imag(gradient(xc)) / step)
    return np.stack(columns, axis=-1)


def error(H, R):
    return float(np.max(np.abs(np.asarray(H, dtype=np.float64) - R)) / max(1.0, np.max(np.abs(R))))


x = rng.standard_normal((B, n))
rows = []
for name, f, black_box, gradient in [
    ("MLP cross-entropy", loss, loss_black_box, loss_gradient),
    ("sum sin(x) x^2", elementwise, elementwise_black_box, elementwise_gradient),
]:
    R = reference(gradient, x)
    for dtype in (np.float64, np.float32):
        xd, labels_d = x.astype(dtype), labels.astype(dtype)
        H = bj.hessian(f, xd, labels_d, method="exact")
        assert H.dtype == dtype
        rows.append((name, "exact", dtype.__name__, error(bj.hessian(f, xd, labels_d, method="exact"), R)))
        rows.append((name, "central (of the exact gradient)", dtype.__name__, error(bj.hessian(f, xd, labels_d, method="central"), R)))
        if dtype is np.float64:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", bj.NumericalFallbackWarning)
                rows.append((name, "second differences (f does not trace)", "float64", error(bj.hessian(black_box, xd, labels), R)))
    try:
        import jax
        import jax.numpy as jnp

        with jax.enable_x64(True):
            if name.startswith("MLP"):
                def g(s, y):
                    logits = W2 @ jnp.tanh(W1 @ s)
                    return -jnp.sum(y * jax.nn.log_softmax(logits))
                HJ = np.asarray(jax.vmap(jax.hessian(g))(x, labels))
            else:
                HJ = np.asarray(jax.vmap(jax.hessian(lambda s: jnp.sum(jnp.sin(s) * s**2)))(x))
        rows.append((name, "jax.vmap(jax.hessian) (for comparison)", "float64", error(HJ, R)))
    except ImportError:
        pass

print("| f | method | dtype | max error / max(1, max abs H) |")
print("|---|---|---|---|")
for name, method, dtype, err in rows:
    print(f"| {name} | {method} | {dtype} | {err:.1e} |")
