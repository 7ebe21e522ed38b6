"""Random Jacobians of every structured type, each with a float64 dense reference built here.

The references are independent of batchjac: ``numpy.kron``, explicit block placement, a
loop adding each CSR entry (repeated positions summed), ``np.eye`` times the diagonal.
Every kind is square ``(B, 6, 6)`` so that any two can be multiplied and added; the
Kronecker factors (2 x 2 and 3 x 3) and the blocks (two 3 x 3, three 2 x 2) are chosen so
that some pairs keep their structure and others do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import batchjac as bj

N = 6
# A 6 x 6 CSR pattern: row 1 is empty, row 2 repeats column 0 (its entries are summed).
INDPTR = np.array([0, 2, 2, 5, 6, 9, 10])
INDICES = np.array([1, 4, 0, 3, 0, 5, 2, 2, 1, 3])

KINDS = (
    "dense", "diagonal", "shared", "identity", "identity_per_sample", "gather", "gather_injective",
    "sparse", "sparse_shared", "kronecker_identity_left", "kronecker_identity_right",
    "kronecker_matrices", "blocks", "blocks_shared",
)  # fmt: skip


@dataclass
class Operand:
    J: bj.Jacobian
    dense: np.ndarray  # float64 reference, (B, m, n)
    inputs: tuple  # the NumPy arrays handed to the constructor


def csr_dense(indptr, indices, values, batch, n_cols):
    """The dense ``(B, m, n)`` of a CSR pattern, each entry added (repeats summed)."""
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), (batch, len(indices)))
    dense = np.zeros((batch, len(indptr) - 1, n_cols))
    for row in range(len(indptr) - 1):
        for p in range(indptr[row], indptr[row + 1]):
            dense[:, row, indices[p]] += values[:, p]
    return dense


def block_dense(blocks, batch):
    """The dense block-diagonal of blocks ``(B, S, p, q)`` or shared ``(S, p, q)``."""
    blocks = np.broadcast_to(np.asarray(blocks, dtype=np.float64), (batch, *np.shape(blocks)[-3:]))
    S, p, q = blocks.shape[1:]
    dense = np.zeros((batch, S * p, S * q))
    for s in range(S):
        dense[:, s * p : (s + 1) * p, s * q : (s + 1) * q] = blocks[:, s]
    return dense


def kron_dense(left, right, batch):
    """``L (x) R`` per sample by ``numpy.kron``; an int factor is an identity."""

    def per_sample(F):
        F = np.eye(F) if isinstance(F, int) else np.asarray(F, dtype=np.float64)
        return np.broadcast_to(F, (batch, *F.shape[-2:]))

    L, R = per_sample(left), per_sample(right)
    out = np.zeros((batch, L.shape[1] * R.shape[1], L.shape[2] * R.shape[2]))
    for b in range(batch):
        out[b] = np.kron(L[b], R[b])
    return out


def make(kind, batch, rng, dtype=np.float64, put=np.asarray):
    """A random ``(batch, 6, 6)`` Jacobian of ``kind`` and its float64 dense reference;
    ``put`` moves the arrays to the device under test."""

    def data(*shape):
        return rng.standard_normal(shape).astype(dtype)

    eye = np.eye(N)
    if kind == "dense":
        a = data(batch, N, N)
        return Operand(bj.Dense(put(a)), a.astype(np.float64), (a,))
    if kind == "diagonal":
        d = data(batch, N)
        return Operand(bj.Diagonal(put(d)), d.astype(np.float64)[:, :, None] * eye, (d,))
    if kind == "shared":
        A = data(N, N)
        return Operand(bj.Shared(put(A), batch), np.broadcast_to(A.astype(np.float64), (batch, N, N)), (A,))
    if kind == "identity":
        return Operand(bj.Identity(N, batch, 1.5, dtype=dtype), np.broadcast_to(1.5 * eye, (batch, N, N)), ())
    if kind == "identity_per_sample":
        s = data(batch)
        return Operand(bj.Identity(N, batch, put(s)), s.astype(np.float64)[:, None, None] * eye, (s,))
    if kind in ("gather", "gather_injective"):
        injective = kind == "gather_injective"
        index = rng.permutation(N) if injective else rng.integers(0, N, N)
        scale = -1.0 if injective else 2.0
        J = bj.Gather(put(index), N, batch, scale, injective=injective, dtype=dtype)
        return Operand(J, csr_dense(np.arange(N + 1), index, np.full(N, scale), batch, N), (index,))
    if kind in ("sparse", "sparse_shared"):
        values = data(batch, len(INDICES)) if kind == "sparse" else data(len(INDICES))
        J = bj.Sparse(put(INDPTR), put(INDICES), put(values), in_size=N, batch=batch)
        return Operand(J, csr_dense(INDPTR, INDICES, values, batch, N), (values,))
    if kind == "kronecker_identity_left":
        W = data(3, 3)
        return Operand(bj.Kronecker(2, put(W), batch=batch), kron_dense(2, W, batch), (W,))
    if kind == "kronecker_identity_right":
        L = data(batch, 2, 2)
        return Operand(bj.Kronecker(put(L), 3, batch=batch), kron_dense(L, 3, batch), (L,))
    if kind == "kronecker_matrices":
        L, R = data(batch, 2, 2), data(3, 3)
        return Operand(bj.Kronecker(put(L), put(R), batch=batch), kron_dense(L, R, batch), (L, R))
    if kind == "blocks":
        blocks = data(batch, 2, 3, 3)
        return Operand(bj.BlockDiagonal(put(blocks)), block_dense(blocks, batch), (blocks,))
    if kind == "blocks_shared":
        blocks = data(3, 2, 2)
        return Operand(bj.BlockDiagonal(put(blocks), batch=batch), block_dense(blocks, batch), (blocks,))
    raise AssertionError(kind)
