"""Traceable array functions: the matrix-calculus rules of math.md, one home each.

On plain arrays every function computes its value only, as NumPy would, with batchjac's
batch semantics: axis 0 is the batch axis, reductions default to all other axes, and an
operation that would mix samples raises. On :class:`~batchjac.exact.tracing.Traced` arrays
(inside ``bj.jacobian(f, x)``) each function also records its structured local Jacobian
with respect to each traced operand, flattened per sample: ``(B, out_size, in_size)``
in row-major order of the per-sample shapes.

Element-wise rules (values and derivatives) live in :mod:`batchjac.core.elementwise_rules`;
the structure of every other rule is stated in its docstring.
"""

from __future__ import annotations

import builtins
import numbers

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import as_float_array, common_device, device_of, flatten_samples, namespace
from batchjac.core.elementwise_rules import BINARY, UNARY
from batchjac.exact.tracing import Traced, record
from batchjac.structured.types import Dense, Diagonal, Gather, Identity, Shared


def _value(a):
    return a.value if isinstance(a, Traced) else a


def _is_traced(*operands):
    return any(isinstance(a, Traced) for a in operands)


def _per_sample_size(shape) -> int:
    return int(np.prod(shape[1:], dtype=np.int64))


def _array(a, name):
    """A plain operand as an array (Python numbers pass through, NumPy keeps them weak)."""
    if isinstance(a, Traced) or isinstance(a, numbers.Number):
        return a
    return as_float_array(a, name)


def _namespace_of(*operands):
    arrays = [_value(a) for a in operands if not isinstance(a, numbers.Number)]
    common_device(*arrays, names=[f"operand {i}" for i in range(len(arrays))])
    return namespace(*arrays)


def _batch(a) -> int:
    return a.shape[0]


def _check_batched(a, name):
    if _value(a).ndim < 1:
        raise ValueError(f"{name}: expected an array with a batch axis (B, ...), got a 0-d array")


# --------------------------------------------------------------------------------------
# Broadcasting and reductions share one matrix: the 0/1 map from a small shape to a big one.
# --------------------------------------------------------------------------------------


def _broadcast_matrix(xp, small_shape, big_shape, dtype):
    """``E`` of shape ``(prod(big), prod(small))`` with ``broadcast(v).ravel() == E @ v.ravel()``.

    Shapes are per sample; ``small_shape`` broadcasts to ``big_shape`` as in NumPy.
    Summing over axes is its transpose.
    """
    n_small = int(np.prod(small_shape, dtype=np.int64))
    n_big = int(np.prod(big_shape, dtype=np.int64))
    source = xp.broadcast_to(xp.arange(n_small).reshape(small_shape), big_shape).ravel()
    E = xp.zeros((n_big, n_small), dtype=dtype)
    E[xp.arange(n_big), source] = 1
    return E


def _broadcast_jacobian(xp, partial, operand, y):
    """Local Jacobian of ``y`` w.r.t. an element-wise operand with partials ``partial``.

    ``Diagonal`` when the operand has the shape of ``y``; otherwise the diagonal of
    partials times the broadcast map (a row scaling, ``Dense``).
    """
    partial = xp.broadcast_to(partial, y.shape)
    shape = _value(operand).shape
    if shape == y.shape:
        return Diagonal(flatten_samples(partial))
    _check_same_rank(shape, y.shape)
    return Diagonal(flatten_samples(partial)) @ _broadcast_gather(xp, shape, y, 1.0)


# --------------------------------------------------------------------------------------
# Element-wise functions
# --------------------------------------------------------------------------------------


def _elementwise(name, *operands, **params):
    rule = UNARY.get(name) or BINARY[name]
    xp = _namespace_of(*operands)
    values = [_value(a) for a in operands]
    if not _is_traced(*operands):
        return rule.value(xp, *values, **params)
    traced = [i for i, a in enumerate(operands) if isinstance(a, Traced)]
    scales = {i: _constant_partial(name, values, i) for i in traced}
    if all(scale is not None for scale in scales.values()):
        y, partials = rule.value(xp, *values, **params), None  # x + c, c * x: no derivative arrays
    else:
        arrays = [v for v in values if not isinstance(v, numbers.Number)]
        y, *partials = select_backend(*arrays).elementwise(name, *values, **params)

    def local_jacobian(i):
        if scales[i] is None:
            return _broadcast_jacobian(xp, partials[i], operands[i], y)
        return _scaled_broadcast(xp, scales[i], operands[i], y)

    return record(y, [(a, lambda i=i: local_jacobian(i)) for i, a in enumerate(operands)])


def _constant_partial(name, values, i):
    """The partial derivative w.r.t. operand ``i`` when it is one number, else None.

    ``x + c``, ``x - c``, ``c * x``, ``x / c`` and ``-x`` have scaled-identity Jacobians.
    """
    if name in ("add", "identity"):
        return 1.0
    if name == "sub":
        return 1.0 if i == 0 else -1.0
    if name == "negative":
        return -1.0
    other = values[1 - i] if len(values) == 2 else None
    if name == "mul" and isinstance(other, numbers.Number):
        return float(other)
    if name == "div" and i == 0 and isinstance(other, numbers.Number):
        with np.errstate(divide="ignore"):
            return float(np.divide(1.0, other))  # inf for 0, as the value is
    return None


def _scaled_broadcast(xp, scale, operand, y):
    """``scale * I`` for an operand of the result's shape, else ``scale * E`` (``Shared``)."""
    shape = _value(operand).shape
    if shape == y.shape:
        return Identity(_per_sample_size(shape), shape[0], scale, dtype=y.dtype, device=device_of(y))
    _check_same_rank(shape, y.shape)
    return _broadcast_gather(xp, shape, y, scale)


def _broadcast_gather(xp, shape, y, scale):
    """``scale`` times the map that broadcasts an operand of ``shape`` to ``y``: a ``Gather``
    whose row ``r`` picks the operand entry that lands on entry ``r`` of ``y``."""
    n_small = _per_sample_size(shape)
    source = xp.broadcast_to(xp.arange(n_small).reshape(shape[1:]), y.shape[1:]).ravel()
    return Gather(source, n_small, y.shape[0], scale, dtype=y.dtype)


def _check_same_rank(shape, y_shape):
    if len(shape) != len(y_shape):
        raise ValueError(
            f"a traced operand of shape {shape} broadcasts against {y_shape} along the batch "
            "axis, which would mix samples; give it the same number of axes (e.g. x[:, None])"
        )


def _unary_function(name):
    rule = UNARY[name]
    extra = "".join(f", {k}={v!r}" for k, v in rule.params.items())

    def function(x, **params):
        return _elementwise(name, _array(x, "x"), **params)

    function.__name__ = function.__qualname__ = name
    function.__doc__ = (
        f"Element-wise ``{name}(x{extra})``: {rule.doc}.\n\n"
        "Value and derivative follow :mod:`batchjac.core.elementwise_rules`; the Jacobian is\n"
        "``Diagonal`` ``(B, n)`` where ``n`` is the per-sample size of ``x``.\n\n"
        f">>> import numpy as np, batchjac as bj\n>>> bj.{name}(np.array([[0.5]])).shape\n(1, 1)\n"
    )
    return function


exp = _unary_function("exp")
log = _unary_function("log")
log1p = _unary_function("log1p")
expm1 = _unary_function("expm1")
sin = _unary_function("sin")
cos = _unary_function("cos")
tan = _unary_function("tan")
tanh = _unary_function("tanh")
sigmoid = _unary_function("sigmoid")
softplus = _unary_function("softplus")
relu = _unary_function("relu")
leaky_relu = _unary_function("leaky_relu")
elu = _unary_function("elu")
gelu = _unary_function("gelu")
sqrt = _unary_function("sqrt")
square = _unary_function("square")
reciprocal = _unary_function("reciprocal")
abs = _unary_function("abs")  # noqa: A001 - the mathematical name
negative = _unary_function("negative")


def _binary_function(name, rule_name):
    def function(u, v):
        return _elementwise(rule_name, _array(u, "u"), _array(v, "v"))

    function.__name__ = function.__qualname__ = name
    function.__doc__ = (
        f"Element-wise ``{BINARY[rule_name].doc.split(';')[0]}`` with NumPy broadcasting.\n\n"
        "Jacobians: ``Diagonal`` for an operand of the result's shape; a row-scaled\n"
        "broadcast map (``Dense``) for a broadcast operand, e.g. a per-sample scalar\n"
        "``(B, 1)`` against ``(B, n)`` gives a column ``(B, n, 1)``.\n\n"
        f">>> import numpy as np, batchjac as bj\n>>> bj.{name}(np.ones((2, 3)), np.ones((2, 1))).shape\n(2, 3)\n"
    )
    return function


add = _binary_function("add", "add")
subtract = _binary_function("subtract", "sub")
multiply = _binary_function("multiply", "mul")
divide = _binary_function("divide", "div")
maximum = _binary_function("maximum", "maximum")
minimum = _binary_function("minimum", "minimum")


def power(u, v):
    """``u ** v`` element-wise; a constant exponent uses the rule ``p u^(p-1)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.power(np.array([[2.0, 3.0]]), 2).tolist()
    [[4.0, 9.0]]
    """
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return _elementwise("power", _array(u, "u"), p=float(v))
    return _elementwise("pow", _array(u, "u"), _array(v, "v"))


def where(condition, a, b):
    """``a`` where ``condition`` holds, else ``b`` (element-wise, NumPy broadcasting).

    ``condition`` is not differentiated; the Jacobians w.r.t. ``a`` and ``b`` are the
    diagonals ``[condition]`` and ``[not condition]``.

    >>> import numpy as np, batchjac as bj
    >>> x = np.array([[-1.0, 2.0]])
    >>> bj.where(x > 0, x, 0.0).tolist()
    [[0.0, 2.0]]
    """
    condition = _value(condition)
    a, b = _array(a, "a"), _array(b, "b")
    xp = _namespace_of(a, b, condition)
    y = xp.where(condition, _value(a), _value(b))
    if not _is_traced(a, b):
        return y
    chosen = xp.broadcast_to(condition, y.shape)
    return record(
        y,
        [
            (a, lambda: _broadcast_jacobian(xp, chosen.astype(y.dtype), a, y)),
            (b, lambda: _broadcast_jacobian(xp, (~chosen).astype(y.dtype), b, y)),
        ],
    )


# --------------------------------------------------------------------------------------
# Reductions
# --------------------------------------------------------------------------------------


def _sample_axes(ndim, axis, what):
    """Non-negative non-batch axes; axis 0 (the batch) is refused."""
    if axis is None:
        return tuple(range(1, ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    normalized = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{what}: axis {a} is out of range for an array of {ndim} dimensions")
        a = a % ndim
        if a == 0:
            raise ValueError(f"{what}: axis 0 is the batch axis; reducing over it would mix samples")
        normalized.append(a)
    return tuple(sorted(set(normalized)))


def sum(x, axis=None, keepdims=False):  # noqa: A001 - the mathematical name
    """Sum over the non-batch axes (all of them by default): ``(B, ...) -> (B, ...)``.

    Jacobian: the ``Shared`` 0/1 matrix of the reduction; for a full sum, ``1^T``
    ``(1, n)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.sum(np.arange(6.0).reshape(2, 3)).tolist()
    [3.0, 12.0]
    """
    x = _array(x, "x")
    _check_batched(x, "sum: x")
    value = _value(x)
    xp = namespace(value)
    axes = _sample_axes(value.ndim, axis, "sum")
    y = xp.sum(value, axis=axes, keepdims=keepdims)
    if not isinstance(x, Traced):
        return y
    kept = tuple(1 if i in axes else s for i, s in enumerate(value.shape))[1:]
    return record(
        y, [(x, lambda: Shared(_broadcast_matrix(xp, kept, value.shape[1:], y.dtype).T, len(value)))]
    )


def mean(x, axis=None, keepdims=False):
    """Mean over the non-batch axes (all of them by default); Jacobian ``Shared``.

    >>> import numpy as np, batchjac as bj
    >>> bj.mean(np.arange(6.0).reshape(2, 3)).tolist()
    [1.0, 4.0]
    """
    x = _array(x, "x")
    _check_batched(x, "mean: x")
    shape = _value(x).shape
    count = int(np.prod([shape[a] for a in _sample_axes(len(shape), axis, "mean")], dtype=np.int64))
    return multiply(sum(x, axis, keepdims), 1.0 / count)


def dot(a, b):
    """Batched inner product over the last axis, other axes broadcast: ``sum(a * b, -1)``.

    ``dy/da = b^T`` and ``dy/db = a^T`` per sample (``(B, 1, n)`` for vectors, ``Shared``
    when the other operand is a constant vector).

    >>> import numpy as np, batchjac as bj
    >>> bj.dot(np.array([[5.0, 8.0, -1.0]]), np.array([1.0, 2.0, 3.0])).tolist()
    [18.0]
    """
    return sum(multiply(a, b), axis=-1)


# --------------------------------------------------------------------------------------
# Matrix products
# --------------------------------------------------------------------------------------


def _kron_left(xp, L, r):
    """``kron(L, I_r)`` for ``L`` of shape ``(..., p, q)``: ``(..., p*r, q*r)``."""
    p, q = L.shape[-2:]
    K = L[..., :, None, :, None] * xp.eye(r, dtype=L.dtype)[:, None, :]
    return K.reshape(*L.shape[:-2], p * r, q * r)


def _kron_right(xp, R, p):
    """``kron(I_p, R^T)`` for ``R`` of shape ``(..., q, r)``: ``(..., p*r, p*q)``."""
    q, r = R.shape[-2:]
    Rt = xp.swapaxes(R, -1, -2)
    K = xp.eye(p, dtype=R.dtype)[:, None, :, None] * Rt[..., None, :, None, :]
    return K.reshape(*R.shape[:-2], p * r, p * q)


def _stacked_matmul(xp, a, b):
    """NumPy's ``matmul``, with a stack ``(B, p, q)`` times one ``(q, r)`` done as ONE
    ``(B*p, q) @ (q, r)`` product: NumPy's stacked loop makes B small ones, several times
    slower."""
    if a.ndim == 3 and b.ndim == 2:
        batch, p, q = a.shape
        return (a.reshape(batch * p, q) @ b).reshape(batch, p, b.shape[1])
    return xp.matmul(a, b)


def _per_sample_matrix(matrix, batch):
    """``Shared`` for a constant ``(m, n)``, ``Dense`` for a per-sample ``(B, m, n)``."""
    return Dense(matrix) if matrix.ndim == 3 else Shared(matrix, batch)


def _matmul_operand(a, side, name):
    """``(matrix, batched)``: the per-sample matrix form of a ``matmul`` operand.

    Left: ``(B, p, q)``, a row vector per sample ``(B, q)`` (with a constant right),
    or a constant ``(p, q)`` / ``(q,)``. Right: ``(B, q, r)`` or a constant ``(q, r)`` / ``(q,)``.
    """
    value = _value(a)
    batched = isinstance(a, Traced) or value.ndim == 3
    if value.ndim == 1 and not batched:
        return (value[None, :] if side == "left" else value[:, None]), False
    if batched and value.ndim == 2 and side == "left":
        return value[:, None, :], True
    if value.ndim == (3 if batched else 2):
        return value, batched
    raise ValueError(
        f"matmul: {name} of shape {tuple(value.shape)} is not a per-sample matrix: expected "
        "(B, p, q) with the batch first, a constant (p, q) or (q,) shared by the batch, or a "
        "per-sample row vector (B, q) times a constant matrix"
    )


def matmul(a, b):
    """Per-sample matrix product ``a @ b`` (NumPy's batched ``matmul``).

    Under tracing, with ``Y = L R`` per sample (``L`` ``(p, q)``, ``R`` ``(q, r)``, all
    flattened row-major): ``dY/dR = kron(L, I_r)`` ``(p*r, q*r)`` and
    ``dY/dL = kron(I_p, R^T)`` ``(p*r, p*q)``; ``Shared`` when the other operand is a
    constant, ``Dense`` otherwise. ``x @ W.T`` for a row vector ``x`` ``(B, n)`` and a
    constant ``W`` ``(m, n)`` has the ``Shared`` Jacobian ``W``.

    >>> import numpy as np, batchjac as bj
    >>> bj.matmul(np.ones((4, 2, 3)), np.ones((3, 5))).shape
    (4, 2, 5)
    """
    a, b = _array(a, "a"), _array(b, "b")
    xp = _namespace_of(a, b)
    y = _stacked_matmul(xp, _value(a), _value(b))
    if not _is_traced(a, b):
        return y
    L, left_batched = _matmul_operand(a, "left", "a")
    R, right_batched = _matmul_operand(b, "right", "b")
    if isinstance(a, Traced) and _value(a).ndim == 2 and right_batched:
        raise ValueError(
            "matmul: a per-sample row vector (B, q) times a per-sample matrix mixes samples in NumPy; use (B, 1, q)"
        )
    batch = y.shape[0]
    p, r = L.shape[-2], R.shape[-1]
    return record(
        y,
        [
            (a, lambda: _per_sample_matrix(_kron_right(xp, R, p), batch)),
            (b, lambda: _per_sample_matrix(_kron_left(xp, L, r), batch)),
        ],
    )


def linear(x, W, b=None):
    """The affine map ``x W^T + b`` on the last axis: x ``(B, ..., n)``, W ``(m, n)`` or
    per sample ``(B, m, n)``, b ``(m,)`` or ``(B, m)``; result ``(B, ..., m)``.

    Jacobians: ``dy/dx = W`` (``Shared`` for a constant ``W``; ``kron(I_S, W)`` over ``S``
    leading positions), ``dy/dW[i, (i', j)] = delta_ii' x_j``, ``dy/db = I``.

    >>> import numpy as np, batchjac as bj
    >>> bj.linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    """
    x, W = _array(x, "x"), _array(W, "W")
    b = None if b is None else _array(b, "b")
    xp = _namespace_of(*(o for o in (x, W, b) if o is not None))
    xv, Wv = _value(x), _value(W)
    _check_batched(x, "linear: x")
    batch, n = xv.shape[0], xv.shape[-1]
    per_sample_W = isinstance(W, Traced) or Wv.ndim == 3
    if Wv.shape[-1] != n or Wv.ndim != (3 if per_sample_W else 2):
        raise ValueError(
            f"linear: W must be (m, {n}) or (B, m, {n}) for x of shape {tuple(xv.shape)}, got {tuple(Wv.shape)}"
        )
    m = Wv.shape[-2]
    S = int(np.prod(xv.shape[1:-1], dtype=np.int64))  # positions the map is applied at
    xs = xv.reshape(batch, S, n)
    Wt = xp.swapaxes(Wv, -1, -2)
    y = _stacked_matmul(xp, xs, Wt).reshape(*xv.shape[:-1], m)
    if not _is_traced(x, W):
        return y if b is None else add(y, _bias_for(b, xv.ndim))

    def d_x():
        # A copy of a per-sample W: the Jacobian must not share memory with the caller's W.
        return _per_sample_matrix(
            (Wv.copy() if Wv.ndim == 3 else Wv) if S == 1 else _kron_right(xp, Wt, S), batch
        )

    def d_W():
        K = xp.eye(m, dtype=xs.dtype)[None, None, :, :, None] * xs[:, :, None, None, :]
        return Dense(K.reshape(batch, S * m, m * n))

    out = record(y, [(x, d_x), (W, d_W)])
    return out if b is None else add(out, _bias_for(b, xv.ndim))


def _bias_for(b, x_ndim):
    """A per-sample bias ``(B, m)`` with axes added to meet ``(B, ..., m)``; ``(m,)`` as it is."""
    b_ndim = _value(b).ndim
    if b_ndim == 2 and x_ndim > 2:
        return reshape(b, (-1,) + (1,) * (x_ndim - 2) + (_value(b).shape[1],))
    if b_ndim not in (1, 2):
        raise ValueError(f"linear: b must be (m,) or (B, m), got shape {tuple(_value(b).shape)}")
    return b


def quadratic_form(x, A):
    """``x^T A x`` per sample: x ``(B, n)``, A ``(n, n)`` or ``(B, n, n)`` -> ``(B,)``.

    ``dy/dx = x^T (A + A^T)`` (``2 x^T A`` for symmetric ``A``), ``dy/dA = x x^T``.

    >>> import numpy as np, batchjac as bj
    >>> bj.quadratic_form(np.array([[1.0, 2.0]]), np.eye(2)).tolist()
    [5.0]
    """
    x, A = _array(x, "x"), _array(A, "A")
    xp = _namespace_of(x, A)
    xv, Av = _value(x), _value(A)
    if xv.ndim != 2 or Av.shape[-2:] != (xv.shape[1], xv.shape[1]):
        raise ValueError(
            f"quadratic_form: expected x (B, n) and A (n, n) or (B, n, n), got {tuple(xv.shape)} and {tuple(Av.shape)}"
        )
    Ax = xp.matmul(Av, xv[:, :, None])[:, :, 0] if Av.ndim == 3 else xv @ Av.T
    y = xp.sum(xv * Ax, axis=1)
    if not _is_traced(x, A):
        return y
    batch, n = xv.shape

    def d_x():
        xA = xp.matmul(xv[:, None, :], Av)[:, 0, :] if Av.ndim == 3 else xv @ Av
        return Dense((xA + Ax)[:, None, :])

    return record(
        y, [(x, d_x), (A, lambda: Dense((xv[:, :, None] * xv[:, None, :]).reshape(batch, 1, n * n)))]
    )


# --------------------------------------------------------------------------------------
# Softmax family (over the last axis)
# --------------------------------------------------------------------------------------


def _block_diagonal(xp, blocks):
    """``(B, S, n, n)`` blocks -> the block-diagonal ``(B, S*n, S*n)``."""
    batch, S, n, _ = blocks.shape
    K = xp.eye(S, dtype=blocks.dtype)[None, :, None, :, None] * blocks[:, :, :, None, :]
    return K.reshape(batch, S * n, S * n)


def _rows(a):
    """``(B, ..., n) -> (B, S, n)``: the softmax rows of each sample."""
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:-1], dtype=np.int64)), a.shape[-1])


def _softmax_parts(x, what):
    xv = _value(x)
    if xv.ndim < 2:
        raise ValueError(
            f"{what}: expected (B, ..., n) with the softmax over the last, non-batch axis; got shape {tuple(xv.shape)}"
        )
    xp = namespace(xv)
    shifted = xv - xp.max(xv, axis=-1, keepdims=True) if xv.shape[-1] else xv
    e = xp.exp(shifted)
    total = xp.sum(e, axis=-1, keepdims=True)
    return xp, xv, shifted, e / total, total


def softmax(x):
    """Softmax over the last axis: ``(B, ..., n) -> (B, ..., n)``.

    Jacobian ``diag(s) - s s^T`` per softmax (block-diagonal ``Dense`` over the leading
    positions).

    >>> import numpy as np, batchjac as bj
    >>> bj.softmax(np.zeros((1, 2))).tolist()
    [[0.5, 0.5]]
    """
    x = _array(x, "x")
    xp, xv, _, s, _ = _softmax_parts(x, "softmax")
    if not isinstance(x, Traced):
        return s

    def d_x():
        blocks = _rows(s)
        diag = blocks[..., :, None] * xp.eye(blocks.shape[-1], dtype=s.dtype)
        return Dense(_block_diagonal(xp, diag - blocks[..., :, None] * blocks[..., None, :]))

    return record(s, [(x, d_x)])


def log_softmax(x):
    """Log-softmax over the last axis: ``(B, ..., n) -> (B, ..., n)``.

    Jacobian ``I - 1 s^T`` per log-softmax (block-diagonal ``Dense``).

    >>> import numpy as np, batchjac as bj
    >>> np.round(np.exp(bj.log_softmax(np.zeros((1, 2)))), 6).tolist()
    [[0.5, 0.5]]
    """
    x = _array(x, "x")
    xp, xv, shifted, s, total = _softmax_parts(x, "log_softmax")
    y = shifted - xp.log(total)
    if not isinstance(x, Traced):
        return y

    def d_x():
        blocks = _rows(s)
        eye = xp.eye(blocks.shape[-1], dtype=s.dtype)
        return Dense(_block_diagonal(xp, eye - blocks[..., None, :]))

    return record(y, [(x, d_x)])


# --------------------------------------------------------------------------------------
# Determinants
# --------------------------------------------------------------------------------------


def _check_square(X, what):
    shape = _value(X).shape
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{what}: expected square matrices (B, n, n), got shape {tuple(shape)}")


def _inverse_transposeflatten_samples(xp, Xv):
    batch, n, _ = Xv.shape
    return xp.swapaxes(xp.linalg.inv(Xv), 1, 2).reshape(batch, 1, n * n)


def det(X):
    """Determinant of each square sample: ``(B, n, n) -> (B,)``.

    ``d det(X) / dX = det(X) X^(-T)`` (the cofactor matrix), as ``Dense`` ``(B, 1, n*n)``;
    under tracing ``X`` must be invertible.

    >>> import numpy as np, batchjac as bj
    >>> bj.det(np.array([[[3.0, 2.0], [6.0, -4.0]]])).round(6).tolist()
    [-24.0]
    """
    X = _array(X, "X")
    _check_square(X, "det")
    Xv = _value(X)
    xp = namespace(Xv)
    y = xp.linalg.det(Xv)
    if not isinstance(X, Traced):
        return y
    return record(y, [(X, lambda: Dense(y[:, None, None] * _inverse_transposeflatten_samples(xp, Xv)))])


def slogdet(X):
    """``(sign, log|det X|)`` of each square sample, each ``(B,)``.

    ``sign`` is a plain array (not differentiable); ``d log|det X| / dX = X^(-T)``.

    >>> import numpy as np, batchjac as bj
    >>> sign, logdet = bj.slogdet(np.array([[[2.0, 0.0], [0.0, -3.0]]]))
    >>> sign.tolist(), np.round(np.exp(logdet), 6).tolist()
    ([-1.0], [6.0])
    """
    X = _array(X, "X")
    _check_square(X, "slogdet")
    Xv = _value(X)
    xp = namespace(Xv)
    sign, logabsdet = xp.linalg.slogdet(Xv)
    if not isinstance(X, Traced):
        return sign, logabsdet
    return sign, record(logabsdet, [(X, lambda: Dense(_inverse_transposeflatten_samples(xp, Xv)))])


# --------------------------------------------------------------------------------------
# Shape: reshape, transpose, indexing (all of the non-batch axes)
# --------------------------------------------------------------------------------------


def _selection(index_map, n_in, batch, dtype, injective):
    """``Gather`` of the input positions ``index_map`` (flattened per sample)."""
    return Gather(index_map.ravel(), n_in, batch, injective=injective, dtype=dtype)


def reshape(x, shape):
    """Reshape keeping the batch axis: ``shape`` is the full new shape, whose first entry
    is ``B`` or ``-1`` (as in NumPy). Jacobian ``Identity``.

    >>> import numpy as np, batchjac as bj
    >>> bj.reshape(np.zeros((2, 6)), (-1, 2, 3)).shape
    (2, 2, 3)
    """
    x = _array(x, "x")
    xv = _value(x)
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    batch = xv.shape[0] if xv.ndim else None
    if not shape or shape[0] not in (batch, -1) or (shape[0] == -1 and -1 in shape[1:]):
        raise ValueError(f"reshape: the new shape must keep the batch axis first ({batch}, ...), got {shape}")
    y = xv.reshape((batch,) + shape[1:])
    if not isinstance(x, Traced):
        return y
    return record(
        y, [(x, lambda: Identity(_per_sample_size(y.shape), batch, dtype=y.dtype, device=device_of(y)))]
    )


def transpose(x, axes=None):
    """Permute the non-batch axes (reverse them by default); the batch axis stays first.

    ``axes`` is a full permutation as in NumPy and must start with 0. Jacobian: the
    ``Shared`` permutation matrix.

    >>> import numpy as np, batchjac as bj
    >>> bj.transpose(np.zeros((5, 2, 3))).shape
    (5, 3, 2)
    """
    x = _array(x, "x")
    xv = _value(x)
    ndim = xv.ndim
    axes = (0, *range(ndim - 1, 0, -1)) if axes is None else tuple(a % ndim for a in axes)
    if sorted(axes) != list(range(ndim)) or axes[0] != 0:
        raise ValueError(
            f"transpose: axes must be a permutation of range({ndim}) that keeps the batch axis 0 first, got {axes}"
        )
    xp = namespace(xv)
    y = xp.transpose(xv, axes)
    if not isinstance(x, Traced):
        return y
    n = _per_sample_size(xv.shape)
    index_map = xp.transpose(xp.arange(n).reshape(xv.shape[1:]), [a - 1 for a in axes[1:]])
    return record(y, [(x, lambda: _selection(index_map, n, len(xv), y.dtype, injective=True))])


def _sample_key(key, ndim):
    """The part of an index that acts on one sample; the batch axis must be kept whole."""
    key = key if isinstance(key, tuple) else (key,)
    if key and key[0] is Ellipsis:
        if builtins.sum(k is not None for k in key[1:]) >= ndim:
            raise IndexError("index: the batch axis cannot be indexed; keep it with x[:, ...]")
        return key
    if key and isinstance(key[0], slice) and key[0] == slice(None):
        return key[1:]
    raise IndexError(f"index: the batch axis (axis 0) must be kept whole, e.g. x[:, ...]; got {key!r}")


def take(x, key):
    """``x[key]`` where ``key`` keeps the batch axis whole (``x[:, 1:3]``, ``x[..., 0]``).

    Jacobian: the ``Shared`` 0/1 selection matrix (per sample).

    >>> import numpy as np, batchjac as bj
    >>> bj.take(np.arange(6.0).reshape(2, 3), (slice(None), 0)).tolist()
    [0.0, 3.0]
    """
    x = _array(x, "x")
    xv = _value(x)
    xp = namespace(xv)
    n = _per_sample_size(xv.shape)
    index_map = xp.arange(n).reshape(xv.shape[1:])[_sample_key(key, xv.ndim)]
    # Gathered through the per-sample map, the batch axis always stays first (NumPy would move
    # advanced indices separated by a slice in front of it).
    y = flatten_samples(xv)[:, index_map]
    if not isinstance(x, Traced):
        return y
    basic = all(
        k is None or k is Ellipsis or isinstance(k, (slice, numbers.Integral)) for k in _as_tuple(key)
    )
    return record(y, [(x, lambda: _selection(index_map, n, len(xv), y.dtype, injective=basic))])


def _as_tuple(key):
    return key if isinstance(key, tuple) else (key,)
