"""The backend interface: the kernel-level primitives every backend provides.

Everything above this line (Jacobian types, rules, tracing, chains, numerical assembly) is
written once against these primitives and the array namespace of its inputs. A backend is
NumPy on the CPU, or CuPy / numba-CUDA on an NVIDIA GPU; which implementation serves each
primitive on each backend is the table in :mod:`batchjac.backends.dispatch`.

Shapes: ``B`` is the batch, a *batched* matrix is ``(B, m, n)``, a *shared* matrix is
``(m, n)`` (the same for every sample), a diagonal is ``(B, n)``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

Array = Any  # numpy.ndarray or cupy.ndarray


class BackendPrimitives(Protocol):
    name: str  # "numpy" | "cupy" | "numba"
    device: str  # "cpu" | "gpu"

    def elementwise(self, name: str, *args: Array, **params: Any) -> tuple[Array, ...]:
        """Value and derivative(s) of the element-wise rule ``name`` in one pass.

        Unary: ``x -> (y, dy/dx)``; binary: ``(u, v) -> (y, dy/du, dy/dv)``; all of the
        broadcast shape of the arguments.
        """

    def scale_rows(self, d: Array, a: Array) -> Array:
        """``diag(d) @ a``: d ``(B, m)``; a ``(B, m, n)`` or shared ``(m, n)`` -> ``(B, m, n)``."""

    def scale_cols(self, a: Array, d: Array) -> Array:
        """``a @ diag(d)``: a ``(B, m, n)`` or shared ``(m, n)``; d ``(B, n)`` -> ``(B, m, n)``."""

    def batched_matmul(self, a: Array, b: Array) -> Array:
        """``(B, m, k) @ (B, k, n) -> (B, m, n)``."""

    def shared_matmul(self, A: Array, b: Array) -> Array:
        """``(m, k) @ (B, k, n) -> (B, m, n)`` as one flattened ``(m, k) @ (k, B*n)`` product."""

    def matmul_shared(self, a: Array, A: Array) -> Array:
        """``(B, m, k) @ (k, n) -> (B, m, n)`` as one flattened ``(B*m, k) @ (k, n)`` product."""

    def diag_to_dense(self, d: Array) -> Array:
        """``(B, n) -> (B, n, n)`` with ``d`` on the diagonal."""

    def add_diagonal(self, a: Array, d: Array) -> Array:
        """``a + diag(d)`` as a new array: a ``(B, n, n)`` or shared ``(n, n)``; d ``(B, n)``."""

    def matvec(self, a: Array, v: Array) -> Array:
        """JVP of a matrix: a ``(B, m, n)`` or shared ``(m, n)``; v ``(B, n)`` -> ``(B, m)``."""

    def vecmat(self, u: Array, a: Array) -> Array:
        """VJP of a matrix: u ``(B, m)``; a ``(B, m, n)`` or shared ``(m, n)`` -> ``(B, n)``."""

    def csr_matvec(self, indptr: Array, indices: Array, values: Array, x: Array) -> Array:
        """A sparse matrix with a CSR pattern shared by the batch, applied along the last axis:
        ``y[b, ..., i] = sum(values[(b,) p] * x[b, ..., indices[p]] for p in row i)``.

        ``indptr`` ``(m + 1,)`` and ``indices`` ``(nnz,)`` (int64) are the pattern; ``values``
        is ``(B, nnz)`` or shared ``(nnz,)``; ``x`` is ``(B, n)`` or ``(B, k, n)`` -> ``y``
        ``(B, m)`` or ``(B, k, m)``. Repeated positions are summed. The JVP of a ``Sparse``
        (and, with the pattern transposed once, its VJP and its products with dense matrices).
        """

    def slogdet(self, a: Array) -> tuple[Array, Array]:
        """Batched ``(sign, log|det|)`` of ``(B, n, n)``, each ``(B,)``."""

    def difference_columns(
        self,
        f: Callable[[Array], Array],
        x: Array,
        columns: Sequence[int],
        steps: Array,
        method: str,
    ) -> Array:
        """Numerical Jacobian columns of a batched black box ``f``.

        ``x`` is ``(B, n)`` (flattened samples), ``columns`` the input indices to
        differentiate, ``steps`` their steps ``(B, len(columns))``, ``method`` one of
        ``"complex-step"``, ``"central"``, ``"forward"``. Every column is perturbed for all
        samples at once and ``f`` is evaluated once on the stacked perturbations.
        Returns ``(B, m, len(columns))`` with ``m`` the flattened output size.
        """


PRIMITIVES: tuple[str, ...] = tuple(
    name
    for name in BackendPrimitives.__dict__
    if not name.startswith("_") and callable(BackendPrimitives.__dict__[name])
)
