"""Structured batched Jacobians: ``Dense``, ``Diagonal``, ``Shared`` and ``Identity``.

Every type describes ``B`` Jacobians of the same shape ``(m, n)`` (numerator layout: row
``i`` is the gradient of output ``i``), stores only what it needs, and exposes
``shape == (B, m, n)``. Products and sums between types are in
:mod:`batchjac.structured.algebra`, whose table says which structure each pair gives.
"""

from __future__ import annotations

import numbers

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import CPU, as_array, as_float_array, device_of, float_dtype, namespace


def _batch_size(batch, name="batch") -> int:
    if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {batch!r}")
    return int(batch)


def _require_ndim(a, ndim, shape_text, where):
    if a.ndim != ndim:
        raise ValueError(f"{where}: expected an array of shape {shape_text}, got shape {tuple(a.shape)}")


class Jacobian:
    """A batch of ``B`` Jacobians, each ``(m, n)``; the base of the structured types.

    Attributes: ``shape == (B, m, n)``, ``batch``, ``out_size`` (m), ``in_size`` (n),
    ``dtype``, ``device`` (``"cpu"`` or ``"gpu"``). ``J @ K`` and ``J + K`` keep structure
    where the result has it; ``J.T`` transposes each sample; ``J.jvp(v)`` and ``J.vjp(u)``
    apply it without densifying.
    """

    __array_ufunc__ = None  # ndarray (op) Jacobian defers to the Jacobian's reflected methods

    batch: int
    out_size: int
    in_size: int

    # Arrays this Jacobian stores, for device checks and backend selection.
    def _arrays(self) -> tuple:
        raise TypeError(f"{type(self).__name__} is not a concrete Jacobian type")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_size, self.in_size)

    @property
    def device(self) -> str:
        arrays = self._arrays()
        return device_of(arrays[0]) if arrays else CPU

    def _ops(self, *others, names=None):
        return select_backend(*self._arrays(), *others, names=names)

    def _xp(self):
        return namespace(*self._arrays())

    # -- algebra -------------------------------------------------------------------------

    def __matmul__(self, other):
        if not isinstance(other, Jacobian):
            raise TypeError(
                f"J @ K takes two bj.Jacobian objects, got {type(other).__name__} on the right; "
                "apply a Jacobian to a batch of vectors with J.jvp(v) or J.vjp(u)"
            )
        from batchjac.structured.algebra import matmul

        return matmul(self, other)

    def __add__(self, other):
        if not isinstance(other, Jacobian):
            return NotImplemented
        from batchjac.structured.algebra import add

        return add(self, other)

    def __sub__(self, other):
        if not isinstance(other, Jacobian):
            return NotImplemented
        return self + (-other)

    def __neg__(self):
        return self.scaled(-1.0)

    def __mul__(self, c):
        if isinstance(c, Jacobian):
            return NotImplemented
        return self.scaled(c)

    __rmul__ = __mul__

    def scaled(self, c) -> "Jacobian":
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
        self._ops(c, names=("the Jacobian", "c"))
        return self._scaled(None, c)

    def _scaled(self, number, per_sample):
        raise TypeError(f"{type(self).__name__} is not a concrete Jacobian type")

    # -- views and products with vectors -------------------------------------------------

    def _check_vector(self, v, size, name):
        v = as_float_array(v, name)
        if v.shape != (self.batch, size):
            raise ValueError(f"{name}: expected shape ({self.batch}, {size}), got {tuple(v.shape)}")
        return v, self._ops(v, names=("the Jacobian", name))

    def jvp(self, v):
        """``J v`` per sample: v ``(B, n)`` -> ``(B, m)``, without densifying ``J``."""
        v, ops = self._check_vector(v, self.in_size, "v")
        return self._jvp(v, ops)

    def vjp(self, u):
        """``u^T J`` per sample: u ``(B, m)`` -> ``(B, n)``, without densifying ``J``."""
        u, ops = self._check_vector(u, self.out_size, "u")
        return self._vjp(u, ops)

    def _require_square(self, what):
        if self.out_size != self.in_size:
            raise ValueError(f"{what}: the Jacobian must be square, got shape {self.shape}")

    def slogdet(self):
        """Sign and ``log|det J|`` of each square sample: ``(sign, logabsdet)``, each ``(B,)``.

        Matches ``numpy.linalg.slogdet`` of :meth:`to_dense` (a singular sample gives sign
        0 and ``-inf``).
        """
        self._require_square("slogdet")
        return self._slogdet()

    def __repr__(self):
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"


class Dense(Jacobian):
    """A general batched Jacobian, stored as ``a`` of shape ``(B, m, n)``.

    >>> import numpy as np, batchjac as bj
    >>> J = bj.Dense(np.arange(12.0).reshape(2, 2, 3))
    >>> J.shape, J.jvp(np.ones((2, 3))).tolist()
    ((2, 2, 3), [[3.0, 12.0], [21.0, 30.0]])
    """

    def __init__(self, a):
        a = as_float_array(a, "a")
        _require_ndim(a, 3, "(B, m, n)", "Dense: a")
        self.a = a
        self.batch, self.out_size, self.in_size = (int(s) for s in a.shape)

    def _arrays(self):
        return (self.a,)

    @property
    def dtype(self):
        return self.a.dtype

    def to_dense(self):
        """The stored ``(B, m, n)`` array itself."""
        return self.a

    @property
    def T(self):
        return Dense(self.a.transpose(0, 2, 1))

    def _scaled(self, number, per_sample):
        return Dense(self.a * (number if per_sample is None else per_sample[:, None, None]))

    def _jvp(self, v, ops):
        return ops.matvec(self.a, v)

    def _vjp(self, u, ops):
        return ops.vecmat(u, self.a)

    def diagonal(self):
        """The main diagonal of each sample, ``(B, min(m, n))``, as a new array."""
        return self.a.diagonal(axis1=1, axis2=2).copy()

    def _slogdet(self):
        return self._ops().slogdet(self.a)


class Diagonal(Jacobian):
    """A batch of diagonal Jacobians ``diag(d_b)``, stored as ``d`` of shape ``(B, n)``.

    The Jacobian of any element-wise operation. ``shape == (B, n, n)``.

    >>> import numpy as np, batchjac as bj
    >>> D = bj.Diagonal(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> (D @ D).diagonal().tolist()
    [[1.0, 4.0], [9.0, 16.0]]
    """

    def __init__(self, d):
        d = as_float_array(d, "d")
        _require_ndim(d, 2, "(B, n)", "Diagonal: d")
        self.d = d
        self.batch, self.out_size = (int(s) for s in d.shape)
        self.in_size = self.out_size

    def _arrays(self):
        return (self.d,)

    @property
    def dtype(self):
        return self.d.dtype

    def to_dense(self):
        """``(B, n, n)`` with ``d`` on the diagonal."""
        return self._ops().diag_to_dense(self.d)

    @property
    def T(self):
        return self

    def _scaled(self, number, per_sample):
        return Diagonal(self.d * (number if per_sample is None else per_sample[:, None]))

    def _jvp(self, v, ops):
        return self.d * v

    _vjp = _jvp

    def diagonal(self):
        """The stored diagonal ``d`` itself (not a copy), ``(B, n)``."""
        return self.d

    def _slogdet(self):
        xp = self._xp()
        sign = xp.prod(xp.sign(self.d), axis=1) + 0.0  # + 0.0: a singular sample's -0.0 becomes 0.0
        with np.errstate(divide="ignore"):
            logabsdet = xp.sum(xp.log(xp.abs(self.d)), axis=1)
        return sign, logabsdet


class Shared(Jacobian):
    """One Jacobian ``A`` of shape ``(m, n)`` shared by all ``batch`` samples.

    The Jacobian of a linear map ``W x`` with a constant ``W``. ``shape == (B, m, n)``;
    nothing of size ``B`` is stored.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.array([[1.0, 2.0]]), batch=3)
    >>> W.shape, W.vjp(np.ones((3, 1))).tolist()
    ((3, 1, 2), [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    """

    def __init__(self, A, batch):
        A = as_float_array(A, "A")
        _require_ndim(A, 2, "(m, n)", "Shared: A")
        self.A = A
        self.batch = _batch_size(batch)
        self.out_size, self.in_size = (int(s) for s in A.shape)

    def _arrays(self):
        return (self.A,)

    @property
    def dtype(self):
        return self.A.dtype

    def to_dense(self):
        """``(B, m, n)``: ``A`` repeated for every sample (a new array)."""
        xp = self._xp()
        out = xp.empty(self.shape, dtype=self.A.dtype)
        out[...] = self.A
        return out

    @property
    def T(self):
        return Shared(self.A.T, self.batch)

    def _scaled(self, number, per_sample):
        if per_sample is None:
            return Shared(self.A * number, self.batch)
        return Dense(per_sample[:, None, None] * self.A)

    def _jvp(self, v, ops):
        return ops.matvec(self.A, v)

    def _vjp(self, u, ops):
        return ops.vecmat(u, self.A)

    def diagonal(self):
        """The diagonal of ``A`` for every sample, ``(B, min(m, n))``."""
        xp = self._xp()
        out = xp.empty((self.batch, min(self.out_size, self.in_size)), dtype=self.A.dtype)
        out[...] = xp.diagonal(self.A)
        return out

    def _slogdet(self):
        sign, logabsdet = self._ops().slogdet(self.A[None])
        xp = self._xp()
        return xp.broadcast_to(sign, (self.batch,)).copy(), xp.broadcast_to(logabsdet, (self.batch,)).copy()


class Identity(Diagonal):
    """``scale * I_n`` for each of ``batch`` samples; ``scale`` a number or a ``(B,)`` array.

    A diagonal Jacobian (``isinstance(I, bj.Diagonal)`` holds, and ``I.d`` is a read-only
    ``(B, n)`` view) that stores nothing of size ``n``: a product with an ``Identity`` is a
    scaling, or nothing at all when ``scale == 1``. With a numeric ``scale`` and no
    ``dtype``, the identity takes the dtype of whatever it meets; ``device`` picks where
    :meth:`to_dense` builds.

    >>> import numpy as np, batchjac as bj
    >>> I = bj.Identity(2, batch=1, scale=3.0)
    >>> I.to_dense().tolist()
    [[[3.0, 0.0], [0.0, 3.0]]]
    """

    def __init__(self, n, batch, scale=1, *, dtype=None, device=CPU):
        self.out_size = self.in_size = _batch_size(n, "n")
        self.batch = _batch_size(batch)
        self._device = device
        if isinstance(scale, numbers.Real) and not isinstance(scale, bool):
            self.scale = float(scale)
            self._dtype = None if dtype is None else float_dtype(dtype, "dtype")
        else:
            s = as_float_array(scale, "scale")
            if s.shape not in ((), (self.batch,)):
                raise ValueError(
                    f"Identity: scale must be a number or of shape ({self.batch},), got shape {tuple(s.shape)}"
                )
            self.scale = namespace(s).broadcast_to(s, (self.batch,))
            self._dtype = s.dtype if dtype is None else float_dtype(dtype, "dtype")
            self._device = device_of(s)

    @property
    def d(self):
        """The diagonal, ``(B, n)``: a read-only broadcast of the scale."""
        return self.scale_vector()

    @property
    def per_sample(self) -> bool:
        """True when ``scale`` is a ``(B,)`` array rather than one number."""
        return not isinstance(self.scale, float)

    @property
    def is_weak(self) -> bool:
        """True when the identity has no dtype of its own and takes that of its partner."""
        return self._dtype is None

    def _arrays(self):
        return (self.scale,) if self.per_sample else ()

    @property
    def device(self):
        return self._device

    @property
    def dtype(self):
        return np.dtype(np.float64) if self._dtype is None else self._dtype

    def scale_column(self):
        """The scale, broadcastable against ``(B, n)``: a number or ``(B, 1)``."""
        return self.scale[:, None] if self.per_sample else self.scale

    def scale_vector(self, xp=None, dtype=None):
        """The scale as an array of shape ``(B, n)`` (a read-only broadcast view)."""
        xp = xp or self._xp_for_device()
        # xp.full: a number becomes a GPU array by a fill kernel, not by a copy from the host
        full = self.scale if self.per_sample else xp.full((), self.scale, dtype=dtype or self.dtype)
        col = full[:, None] if self.per_sample else full
        return xp.broadcast_to(col, (self.batch, self.in_size))

    def _xp_for_device(self):
        from batchjac.core.arrays import GPU, _cupy

        return _cupy() if self._device == GPU else np

    def to_dense(self):
        """``(B, n, n)`` with ``scale`` on the diagonal."""
        return Diagonal(self.diagonal()).to_dense()

    @property
    def T(self):
        return self

    def _scaled(self, number, per_sample):
        scale = self.scale * number if per_sample is None else per_sample * self.scale
        return Identity(self.in_size, self.batch, scale, dtype=self._dtype, device=self._device)

    def _jvp(self, v, ops):
        return v * self.scale_column()

    _vjp = _jvp

    def diagonal(self):
        """``(B, n)`` filled with the scale."""
        return self.scale_vector().astype(self.dtype)

    def _slogdet(self):
        xp = self._xp_for_device()
        scale = (
            self.scale.astype(self.dtype, copy=False)
            if self.per_sample
            else xp.full((), self.scale, self.dtype)
        )
        s = xp.broadcast_to(scale, (self.batch,))
        if self.in_size == 0:  # the empty determinant is 1
            return xp.ones_like(s), xp.zeros_like(s)
        with np.errstate(divide="ignore"):
            return xp.sign(s) ** self.in_size, self.in_size * xp.log(xp.abs(s))


class Gather(Jacobian):
    """Rows that pick input entries, the same for every sample: ``(J v)[r] = scale v[index[r]]``.

    The Jacobian of moving entries around (transpose, indexing, broadcasting). Stores the
    ``(m,)`` integer ``index`` into ``n`` inputs, never the ``(m, n)`` 0/1 matrix;
    ``shape == (B, m, n)``. ``injective`` (no input picked twice) lets products on the right
    and VJPs scatter instead of building that matrix.

    >>> import numpy as np, batchjac as bj
    >>> G = bj.Gather(np.array([2, 0]), in_size=3, batch=1)
    >>> G.jvp(np.array([[10.0, 20.0, 30.0]])).tolist(), G.to_dense().tolist()
    ([[30.0, 10.0]], [[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    """

    def __init__(self, index, in_size, batch, scale=1.0, *, injective=False, dtype=np.float64):
        index = as_array(index, "index")
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise ValueError(
                f"Gather: index must be a 1-D integer array, got shape {tuple(index.shape)} of {index.dtype}"
            )
        self.index = index
        self.out_size = int(index.shape[0])
        self.in_size = _batch_size(in_size, "in_size")
        self.batch = _batch_size(batch)
        self.scale = float(scale)
        self.injective = bool(injective)
        self._dtype = float_dtype(dtype, "dtype")

    def _arrays(self):
        return (self.index,)

    @property
    def dtype(self):
        return self._dtype

    def matrix(self):
        """The shared ``(m, n)`` matrix, built on demand."""
        xp = self._xp()
        M = xp.zeros((self.out_size, self.in_size), dtype=self._dtype)
        M[xp.arange(self.out_size), self.index] = self.scale
        return M

    def to_dense(self):
        return Shared(self.matrix(), self.batch).to_dense()

    @property
    def T(self):
        return Shared(self.matrix().T, self.batch)

    def _scaled(self, number, per_sample):
        if per_sample is None:
            return Gather(self.index, self.in_size, self.batch, self.scale * number,
                          injective=self.injective, dtype=self._dtype)  # fmt: skip
        return Dense(per_sample[:, None, None] * self.matrix())

    def _jvp(self, v, ops):
        return v[:, self.index] * self.scale

    def _vjp(self, u, ops):
        if not self.injective:
            return ops.vecmat(u, self.matrix())
        out = self._xp().zeros((self.batch, self.in_size), dtype=np.result_type(u.dtype, self._dtype))
        out[:, self.index] = u * self.scale
        return out

    def diagonal(self):
        return Shared(self.matrix(), self.batch).diagonal()

    def _slogdet(self):
        return Shared(self.matrix(), self.batch)._slogdet()
