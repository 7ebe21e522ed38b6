"""The base of the structured batched Jacobians: what every type provides, and the operators.

A type stores only what its structure needs and implements, for a batch of ``B``
Jacobians each ``(m, n)`` (numerator layout: row ``i`` is the gradient of output ``i``):

- ``to_dense()`` ``(B, m, n)``, ``T``, ``_jvp(v, ops)`` ``(B, n) -> (B, m)``,
  ``_vjp(u, ops)`` ``(B, m) -> (B, n)``, ``diagonal()``, ``_slogdet()`` (square),
  ``_scaled(number, per_sample)``, ``astype(dtype)``, ``_batch_slice(s)``;
- for the generic product and sum (:mod:`batchjac.structured.algebra`):
  ``_apply_left(M, ops)`` (``J @ M`` for M ``(B, n, k)``, or ``(n, k)`` shared),
  ``_apply_right(M, ops)`` (``M @ J`` for M ``(B, k, m)`` or ``(k, m)``), ``_matrix()``
  (its dense form, ``(m, n)`` when it does not vary along the batch) and ``_add_into(out)``
  (adds itself into a dense ``(B, m, n)`` array, or ``(m, n)`` when it does not vary);
- for the planner: ``structure()`` and the class method ``profile(kind)``
  (:class:`~batchjac.structured.algebra.Profile`), and ``structure_problem(structure)``.

The operators (``@``, ``+``, ``-``, unary ``-``, ``*`` by a number or a ``(B,)`` array)
dispatch through :mod:`batchjac.structured.algebra`; ``np.asarray(J)`` densifies and
``J[b]`` is sample ``b``'s ``(m, n)`` Jacobian, as arrays behave.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import CPU, GPU, as_float_array, cupy_module, device_of, namespace, to_device
from batchjac.structured import algebra
from batchjac.structured.algebra import Kind, Profile, Structure


def batch_size(batch: Any, name: str = "batch") -> int:
    """``batch`` as a non-negative int; a ValueError naming ``name`` otherwise."""
    if type(batch) is int and batch >= 0:
        return batch  # the common case
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {batch!r}")
    return int(batch)


def require_ndim(a: Any, ndim: int, shape_text: str, where: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{where}: expected an array of shape {shape_text}, got shape {tuple(a.shape)}")


def diagonal_view(out: Any) -> Any:
    """A writeable view of the main diagonal of a C-contiguous ``(..., n, n)`` array: ``(..., n)``."""
    n = out.shape[-1]
    return out.reshape(*out.shape[:-2], n * n)[..., :: n + 1]


def block_diagonal_view(out: Any, blocks: int) -> Any:
    """A writeable view of the ``blocks`` diagonal blocks of a C-contiguous ``(..., S p, S q)``
    array: ``(..., S, p, q)`` (the blocks of a block-diagonal matrix)."""
    xp = namespace(out)
    *lead, m, n = out.shape
    p, q = m // blocks, n // blocks
    strides = out.strides
    s_row, s_col = strides[-2], strides[-1]
    return xp.lib.stride_tricks.as_strided(
        out,
        shape=(*lead, blocks, p, q),
        strides=(*strides[:-2], p * s_row + q * s_col, s_row, s_col),
    )


def array_namespace(*Js: Any) -> Any:
    """The array namespace of Jacobians' stored arrays, or of their device when they store none
    (an ``Identity`` scaled by a number)."""
    arrays = [a for J in Js for a in J._arrays()]
    if arrays:
        return namespace(*arrays)
    return cupy_module() if any(J.device == GPU for J in Js) else np


def _operand_error(op: str, other: Any, side: str) -> TypeError:
    return TypeError(
        f"J {op} K takes two bj.Jacobian objects, got {type(other).__name__} on the {side}; "
        "wrap an array in bj.Dense(a) (a: (B, m, n)) or bj.Diagonal(d) (d: (B, n)) first"
        + ("; apply a Jacobian to a batch of vectors with J.jvp(v) or J.vjp(u)" if op == "@" else "")
    )


class Jacobian:
    """A batch of ``B`` Jacobians, each ``(m, n)``; the base of the structured types.

    Attributes: ``shape == (B, m, n)``, ``batch``, ``out_size`` (m), ``in_size`` (n),
    ``dtype``, ``device`` (``"cpu"`` or ``"gpu"``). ``J @ K`` and ``J + K`` keep structure
    where the result has it; ``J.T`` transposes each sample; ``J.jvp(v)`` and ``J.vjp(u)``
    apply it without densifying; ``np.asarray(J)`` is its dense form and ``J[b]`` the
    ``(m, n)`` Jacobian of sample ``b``.
    """

    __array_ufunc__ = None  # ndarray (op) Jacobian defers to the Jacobian's reflected methods

    batch: int
    out_size: int
    in_size: int
    always_square = False
    stored_dense = False  # stored as full matrices: densifying it costs nothing
    batched_kinds = "either"  # its values vary along the batch: "always", "never" or "either"
    table_order = 99  # the row of the type in algebra's tables

    # How a result of bj.jacobian was assembled, set there (absent on a Jacobian built by
    # hand): an AssemblyPlan of batchjac.exact, a floor above this one (hence Any).
    plan: Any

    if TYPE_CHECKING:  # for the type checker only: each concrete type defines these class
        # methods, and algebra's tables tell a concrete type from this base by `profile`

        @classmethod
        def profile(cls, kind: Kind) -> Profile: ...

        @classmethod
        def scaled_kind(cls, kind: Kind, per_sample: bool) -> Kind: ...

    def _not_concrete(self) -> TypeError:
        return TypeError(f"{type(self).__name__} is not a concrete Jacobian type")

    # Arrays this Jacobian stores, for device checks and backend selection.
    def _arrays(self) -> tuple[Any, ...]:
        raise self._not_concrete()

    # -- what every concrete type implements (see the module docstring) ----------------

    def to_dense(self) -> Any:
        """The dense form ``(B, m, n)``."""
        raise self._not_concrete()

    @property
    def T(self) -> "Jacobian":
        """The transpose of each sample, ``(B, n, m)``."""
        raise self._not_concrete()

    def astype(self, dtype: Any) -> "Jacobian":
        """The same Jacobian with its values in ``dtype``."""
        raise self._not_concrete()

    def diagonal(self) -> Any:
        """The main diagonal of each sample, ``(B, min(m, n))``."""
        raise self._not_concrete()

    def _slogdet(self) -> tuple[Any, Any]:
        raise self._not_concrete()

    def _apply_left(self, M: Any, ops: Any) -> Any:
        raise self._not_concrete()

    def _apply_right(self, M: Any, ops: Any) -> Any:
        raise self._not_concrete()

    def _matrix(self) -> Any:
        raise self._not_concrete()

    def _add_into(self, out: Any) -> None:
        raise self._not_concrete()

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_size, self.in_size)

    @property
    def dtype(self) -> Any:
        raise self._not_concrete()

    @property
    def device(self) -> str:
        arrays = self._arrays()
        return device_of(arrays[0]) if arrays else CPU

    def _ops(self, *others: Any, names: Any = None) -> Any:
        return select_backend(*self._arrays(), *others, names=names)

    def _xp(self) -> Any:
        return namespace(*self._arrays())

    # -- structure -----------------------------------------------------------------------

    def structure(self) -> Structure:
        """What the chain planner knows of this Jacobian: kind, batch, sizes (no arrays)."""
        return Structure(type(self), self.batch, self.out_size, self.in_size)

    @classmethod
    def structure_problem(cls, structure: Structure) -> str | None:
        """Why ``structure`` cannot describe a Jacobian of this type, or None."""
        if structure.scale != "one" or structure.detail != ():
            return (
                f"expected kind Dense, Diagonal, Shared or Identity (scale one of "
                f"{', '.join(algebra.IDENTITY_SCALES)}; 'one' for the other kinds), got kind "
                f"{cls.__name__!r} with scale {structure.scale!r}"
            )
        return None

    @property
    def batched(self) -> bool:
        """True when the stored values vary along the batch."""
        if self.batched_kinds != "either":  # the same for every Jacobian of the type
            return self.batched_kinds == "always"
        return algebra.profile_of(self.structure().key).batched

    # -- algebra -------------------------------------------------------------------------

    def __matmul__(self, other: Any) -> "Jacobian":
        if not isinstance(other, Jacobian):
            raise _operand_error("@", other, "right")
        return algebra.matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Jacobian":
        raise _operand_error("@", other, "left")

    def __add__(self, other: Any) -> "Jacobian":
        if not isinstance(other, Jacobian):
            raise _operand_error("+", other, "right")
        return algebra.add(self, other)

    def __radd__(self, other: Any) -> "Jacobian":
        raise _operand_error("+", other, "left")

    def __sub__(self, other: Any) -> "Jacobian":
        if not isinstance(other, Jacobian):
            raise _operand_error("-", other, "right")
        return self + (-other)

    def __rsub__(self, other: Any) -> "Jacobian":
        raise _operand_error("-", other, "left")

    def __neg__(self) -> "Jacobian":
        return self.scaled(-1.0)

    def __mul__(self, c: Any) -> "Jacobian":
        if isinstance(c, Jacobian):
            raise TypeError("J * K of two Jacobians is not defined: use J @ K for the product of the maps")
        return self.scaled(c)

    __rmul__ = __mul__

    def scaled(self, c: Any) -> "Jacobian":
        """``c J``: ``c`` a Python number or a per-sample array of shape ``(B,)``."""
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            return self._scaled(float(c), None)
        c = as_float_array(c, "c")
        if c.shape == ():
            c = namespace(c).broadcast_to(c, (self.batch,))
        if c.shape != (self.batch,):
            raise ValueError(
                f"scaled: c must be a number or of shape ({self.batch},), got shape {tuple(c.shape)}"
            )
        self._ops(c, names=("the Jacobian",) * len(self._arrays()) + ("c",))
        return self._scaled(None, c)

    def _scaled(self, number: Any, per_sample: Any) -> "Jacobian":
        raise self._not_concrete()

    # -- views and products with vectors -------------------------------------------------

    def _check_vector(self, v: Any, size: int, name: str) -> tuple[Any, Any]:
        v = as_float_array(v, name)
        if v.shape != (self.batch, size):
            raise ValueError(f"{name}: expected shape ({self.batch}, {size}), got {tuple(v.shape)}")
        return v, self._ops(v, names=("the Jacobian",) * len(self._arrays()) + (name,))

    def jvp(self, v: Any) -> Any:
        """``J v`` per sample: v ``(B, n)`` -> ``(B, m)``, without densifying ``J``."""
        v, ops = self._check_vector(v, self.in_size, "v")
        return self._jvp(v, ops)

    def vjp(self, u: Any) -> Any:
        """``u^T J`` per sample: u ``(B, m)`` -> ``(B, n)``, without densifying ``J``."""
        u, ops = self._check_vector(u, self.out_size, "u")
        return self._vjp(u, ops)

    def _jvp(self, v: Any, ops: Any) -> Any:
        return self._apply_left(v[:, :, None], ops)[:, :, 0]

    def _vjp(self, u: Any, ops: Any) -> Any:
        return self._apply_right(u[:, None, :], ops)[:, 0, :]

    def _require_square(self, what: str) -> None:
        if self.out_size != self.in_size:
            raise ValueError(f"{what}: the Jacobian must be square, got shape {self.shape}")

    def slogdet(self) -> tuple[Any, Any]:
        """Sign and ``log|det J|`` of each square sample: ``(sign, logabsdet)``, each ``(B,)``.

        Matches ``numpy.linalg.slogdet`` of :meth:`to_dense` (a singular sample gives sign
        0 and ``-inf``).
        """
        self._require_square("slogdet")
        return self._slogdet()

    # -- behaving like an array where it is safe -----------------------------------------

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        """``np.asarray(J)``: the dense ``(B, m, n)`` form, on the CPU only (a GPU Jacobian
        is not copied to the host behind the caller's back)."""
        if self.device != CPU:
            raise TypeError(
                "np.asarray(J): J lives on the GPU and batchjac never copies between devices "
                "silently; use bj.to_device(J.to_dense(), 'cpu')"
            )
        dense = np.asarray(to_device(self.to_dense(), CPU))
        return dense if dtype is None else dense.astype(dtype, copy=False)

    def __getitem__(self, index: Any) -> Any:
        """``J[b]``: the ``(m, n)`` Jacobian of sample ``b`` as an array (a new one, or a view
        of what ``J`` stores); ``J[i:j]``: the Jacobian of samples ``i`` to ``j``, structure kept."""
        if isinstance(index, slice):
            return self._batch_slice(slice(*index.indices(self.batch)))
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(
                f"J[index]: expected a sample number (int) or a slice of samples, got {type(index).__name__}"
            )
        b = int(index)
        if not -self.batch <= b < self.batch:
            raise IndexError(f"J[{b}]: sample {b} is out of range for a batch of {self.batch}")
        b %= self.batch
        return self._batch_slice(slice(b, b + 1)).to_dense()[0]

    def _batch_slice(self, s: slice) -> "Jacobian":
        raise self._not_concrete()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"
