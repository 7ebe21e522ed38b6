"""Products and linear algebra: ``matmul`` (``@``), ``linear``, ``quadratic_form``,
``outer``, ``cross``, ``einsum``, ``softmax``, ``log_softmax``, ``det``, ``slogdet``,
``inv``, ``solve``, ``cholesky``, ``matrix_power``.

Batched mode follows NumPy's rules on the arrays ``f`` sees, with the batch axis as the
first stack axis: ``x @ W.T`` (``x`` ``(B, n)``, ``W`` ``(m, n)``) is a product per sample;
a product that NumPy would contract over the batch axis (``W @ x`` for ``x`` ``(B, n)``)
raises, saying how to write it. Stacks of matrices per sample ``(B, S, p, q)`` work
throughout. The rules (Kronecker-structured Jacobians, cofactors, ...) are in
:mod:`batchjac.exact.primitives.linalg`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from batchjac.exact import lax
from batchjac.exact.ops.elementwise import FUNCTIONS
from batchjac.exact.ops.operands import Call, as_operand_array, full_ndim, main, unwrap
from batchjac.exact.ops.shapes import _PER_SAMPLE_HINT
from batchjac.exact.primitives.base import Primitive
from batchjac.exact.primitives.linalg import (
    CHOLESKY,
    DET,
    EINSUM,
    INV,
    LOG_SOFTMAX,
    LOGABSDET,
    MATMUL,
    SIGN_DET,
    SOFTMAX,
    SOLVE,
)
from batchjac.exact.tracer import Batched, Tracer, bind
from batchjac.structured.base import Jacobian
from batchjac.structured.solve import solve as structured_solve


def _batched_operand(
    a: Any,
    call: Call,
    name: str,
    *,
    stack_rank_of_partner: int | None = None,
    core: int = 2,
    what: str = "matmul",
) -> Any:
    """A matmul-like operand in batched mode: tracers as they are; a constant with stack
    axes aligned with the batch axis holds one matrix per sample; else it is shared.
    ``core``: the number of trailing axes of one matrix (or vector) of the operand."""
    if isinstance(a, Tracer):
        return a
    a = as_operand_array(a, name)
    if call.per_sample or a.ndim <= core or stack_rank_of_partner is None:
        return a
    stacks = a.ndim - core
    if stacks > stack_rank_of_partner:
        raise ValueError(
            f"{what}: {name} of shape {tuple(a.shape)} has more stack axes than the batch of the other operand; {_PER_SAMPLE_HINT}"
        )
    if stacks < stack_rank_of_partner:
        return a
    if a.shape[0] == call.batch and call.batch != 1:
        return Batched(a)
    if a.shape[0] == 1:
        return a[0]
    raise ValueError(
        f"{what}: {name} of shape {tuple(a.shape)}: its leading axis meets the batch axis (B = {call.batch})"
    )


def matmul(a: Any, b: Any) -> Any:
    """Matrix product ``a @ b`` with NumPy's rules per sample.

    Under tracing, with ``Y = L R`` per sample (``L`` ``(p, q)``, ``R`` ``(q, r)``, all
    flattened row-major): ``dY/dR = L ⊗ I_r`` and ``dY/dL = I_p ⊗ R^T``; ``x @ W.T`` for a
    row vector ``x`` ``(B, n)`` and a constant ``W`` ``(m, n)`` has the ``Shared`` Jacobian ``W``.

    >>> import numpy as np, batchjac as bj
    >>> bj.matmul(np.ones((4, 2, 3)), np.ones((3, 5))).shape
    (4, 2, 5)
    """
    if type(a) is Tracer and type(b) is np.ndarray and 1 <= b.ndim <= 2 and b.dtype.kind in "fiub":
        return bind(MATMUL, (a, b))  # a traced array times a shared vector or matrix: nothing to check
    call = Call(a, b)
    if not call.traced:
        return unwrap(bind(MATMUL, (as_operand_array(a, "a"), as_operand_array(b, "b"))))
    if call.per_sample:
        return unwrap(bind(MATMUL, (_batched_operand(a, call, "a"), _batched_operand(b, call, "b"))))
    full = [len(o.shape) if isinstance(o, Tracer) else np.ndim(o) for o in (a, b)]
    traced = [isinstance(o, Tracer) and o.node.batched for o in (a, b)]
    if traced[1] and full[1] == 2:
        raise ValueError(
            "matmul: a traced (B, q) on the right is a matrix whose rows are the samples: NumPy would "
            "contract over the batch axis; write x @ W.T (x on the left), x[..., None], or "
            + _PER_SAMPLE_HINT
        )
    if traced[0] and full[0] == 2 and (traced[1] or (not isinstance(b, Tracer) and np.ndim(b) > 2)):
        raise ValueError(
            "matmul: a per-sample row vector (B, q) times a per-sample matrix mixes samples in NumPy; use (B, 1, q) or "
            + _PER_SAMPLE_HINT
        )
    stack_a = max(full[0] - 2, 0) if traced[0] else None
    stack_b = max(full[1] - 2, 0) if traced[1] else None
    a_op = _batched_operand(a, call, "a", stack_rank_of_partner=stack_b)
    b_op = _batched_operand(b, call, "b", stack_rank_of_partner=stack_a)
    return unwrap(bind(MATMUL, (a_op, b_op)))


def _parameter(W: Any, call: Call, name: str, ndims: tuple[int, int]) -> Any:
    """A parameter of ``linear``: shared (``ndims[0]`` axes) or per sample (``ndims[1]``)."""
    if isinstance(W, Tracer):
        return W
    W = as_operand_array(W, name)
    if call.per_sample or W.ndim == ndims[0]:
        return W
    if W.ndim == ndims[1]:
        return Batched(W)
    raise ValueError(
        f"linear: {name} must have {ndims[0]} axes (shared) or {ndims[1]} (per sample, B first), got shape {tuple(W.shape)}"
    )


def _plain_layer(x: Any, W: Any, b: Any) -> bool:
    """``x`` traced with per-sample vectors of ``n``, ``W`` a real ``(m, n)`` array and ``b``
    None or a real ``(m,)`` array: shared parameters in either mode (the common layer)."""
    if type(x) is not Tracer or type(W) is not np.ndarray or W.ndim != 2 or W.dtype.kind not in "fiub":
        return False
    shape = x.node.shape
    if not shape or shape[-1] != W.shape[1]:
        return False
    return b is None or (type(b) is np.ndarray and b.shape == (W.shape[0],) and b.dtype.kind in "fiub")


def linear(x: Any, W: Any, b: Any = None) -> Any:
    """The affine map ``x W^T + b`` on the last axis: x ``(B, ..., n)``, W ``(m, n)`` or per
    sample ``(B, m, n)``, b ``(m,)`` or ``(B, m)``; result ``(B, ..., m)``.

    Jacobians: ``dy/dx = W`` (``Shared`` for a constant ``W``; ``I_S ⊗ W`` over ``S``
    leading positions), ``dy/dW = I_m ⊗ x^T`` per sample, ``dy/db = I``.

    >>> import numpy as np, batchjac as bj
    >>> bj.linear(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    """
    if _plain_layer(x, W, b):  # a traced x and a shared weight and bias: what the checks below settle
        y = bind(MATMUL, (x, W.T))
        return y if b is None else lax.add(y, b)
    call = Call(x, W, b)
    x_op, x_shape = main(x, call)
    W_op = _parameter(W, call, "W", (2, 3))
    n = x_shape[-1] if x_shape else None
    W_shape = lax.shape(W_op)
    if len(W_shape) != 2 or W_shape[1] != n:
        raise ValueError(
            f"linear: W must be (m, {n}) or (B, m, {n}) for x with samples of shape {x_shape}, got per-sample {W_shape}"
        )
    Wt = W_op.T if isinstance(W_op, np.ndarray) else lax.swap_last(W_op)  # a shared weight: a view
    y = bind(MATMUL, (x_op, Wt))
    if b is not None:
        b_op = _parameter(b, call, "b", (1, 2))
        if lax.shape(b_op) != (W_shape[0],):
            raise ValueError(
                f"linear: b must be ({W_shape[0]},) or (B, {W_shape[0]}), got per-sample {lax.shape(b_op)}"
            )
        y = lax.add(y, b_op)
    return unwrap(y)


def quadratic_form(x: Any, A: Any) -> Any:
    """``x^T A x`` for each vector of each sample: x ``(B, ..., n)``, A ``(n, n)`` or per sample
    ``(B, n, n)`` -> ``(B, ...)``.

    ``dy/dx = x^T (A + A^T)`` (``2 x^T A`` for symmetric ``A``), ``dy/dA = x x^T``.

    >>> import numpy as np, batchjac as bj
    >>> bj.quadratic_form(np.array([[1.0, 2.0]]), np.eye(2)).tolist()
    [5.0]
    """
    call = Call(x, A)
    x_op, x_shape = main(x, call)
    A_op = _parameter(A, call, "A", (2, 3))
    n = x_shape[-1] if x_shape else None
    if lax.shape(A_op) != (n, n):
        raise ValueError(
            f"quadratic_form: expected A ({n}, {n}) or (B, {n}, {n}) for x with samples {x_shape}, got per-sample {lax.shape(A_op)}"
        )
    Ax = bind(MATMUL, (x_op, lax.swap_last(A_op)))
    return unwrap(lax.reduce_sum(lax.mul(x_op, Ax), (len(x_shape) - 1,)))


def outer(a: Any, b: Any) -> Any:
    """Outer product of the (flattened) samples: ``(B, n), (B, m) -> (B, n, m)``.

    >>> import numpy as np, batchjac as bj
    >>> bj.outer(np.array([[1.0, 2.0]]), np.array([[3.0]])).tolist()
    [[[3.0], [6.0]]]
    """
    call = Call(a, b)
    a_op, a_shape = main(a, call, "a")
    b_op, b_shape = main(b, call, "b")
    n, m = int(np.prod(a_shape)), int(np.prod(b_shape))
    return unwrap(lax.mul(lax.reshape(a_op, (n, 1)), lax.reshape(b_op, (1, m))))


def cross(a: Any, b: Any, axis: int = -1) -> Any:
    """Cross product of 3-vectors along ``axis`` (broadcast like NumPy's).

    >>> import numpy as np, batchjac as bj
    >>> bj.cross(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]])).tolist()
    [[0.0, 0.0, 1.0]]
    """
    from batchjac.exact.ops.shapes import moveaxis, stack

    a_, b_ = (moveaxis(v, axis, -1) for v in (a, b))
    if a_.shape[-1] != 3 or b_.shape[-1] != 3:
        raise ValueError(f"cross: expected 3-vectors along axis {axis}, got shapes {a_.shape} and {b_.shape}")
    mul, sub = FUNCTIONS["multiply"], FUNCTIONS["subtract"]
    parts = [
        sub(mul(a_[..., 1], b_[..., 2]), mul(a_[..., 2], b_[..., 1])),
        sub(mul(a_[..., 2], b_[..., 0]), mul(a_[..., 0], b_[..., 2])),
        sub(mul(a_[..., 0], b_[..., 1]), mul(a_[..., 1], b_[..., 0])),
    ]
    return moveaxis(stack(parts, axis=-1), -1, axis)


def _explicit(spec: str, operands: Any) -> str:
    """NumPy's subscripts with ellipses spelt out (one letter per broadcast axis, right-aligned
    as NumPy aligns them) and the output made explicit (implicit mode: the broadcast axes,
    then the letters that occur once, sorted)."""
    spec = spec.replace(" ", "")
    ins, arrow, out = spec.partition("->")
    terms = ins.split(",")
    if len(terms) != len(operands):
        raise ValueError(f"einsum: {spec!r} names {len(terms)} operands, got {len(operands)}")
    if "." in spec:
        free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in spec]
        widths = []
        for term, operand in zip(terms, operands):
            if term.count("...") != (1 if "." in term else 0) or term.replace("...", "").count("."):
                raise ValueError(f"einsum: malformed ellipsis in {term!r}")
            widths.append(full_ndim(operand) - len(term.replace("...", "")) if "..." in term else 0)
        if min(widths) < 0:
            raise ValueError(f"einsum: an operand of {spec!r} has fewer axes than its subscripts")
        broadcast = "".join(free[: max(widths)])
        terms = [
            t.replace("...", broadcast[len(broadcast) - w :] if w else "") for t, w in zip(terms, widths)
        ]
        if arrow and "..." in out:
            out = out.replace("...", broadcast)
        elif not arrow:
            letters = "".join(terms)
            out = broadcast + "".join(
                sorted(c for c in set(letters) if letters.count(c) == 1 and c not in broadcast)
            )
            arrow = "->"
    if arrow:
        return f"{','.join(terms)}->{out}"
    letters = "".join(terms)
    out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    return f"{','.join(terms)}->{out}"


def einsum(spec: str, *operands: Any) -> Any:
    """``einsum`` with NumPy's subscripts. In batched mode every batched operand (and the
    output) starts with one shared batch letter (``"bij,bj->bi"``); constants without it are
    shared. Jacobians: ``einsum`` of the other operands with each operand's basis.

    >>> import numpy as np, batchjac as bj
    >>> bj.einsum("bij,bj->bi", np.ones((2, 3, 4)), np.ones((2, 4))).shape
    (2, 3)
    """
    spec = _explicit(spec, operands)
    inputs, out = spec.split("->")
    ins = inputs.split(",")
    call = Call(*operands)
    if not call.traced:
        return np.einsum(spec, *(as_operand_array(o, f"operand {i}") for i, o in enumerate(operands)))
    if call.per_sample:
        ops = [
            o if isinstance(o, Tracer) else as_operand_array(o, f"operand {i}")
            for i, o in enumerate(operands)
        ]
        return unwrap(bind(EINSUM, ops, {"spec": spec}))
    batch_letter = next(s[0] for s, o in zip(ins, operands) if isinstance(o, Tracer) and o.node.batched)
    if not out.startswith(batch_letter) or out.count(batch_letter) != 1:
        raise ValueError(
            f"einsum: the output {out!r} must start with the batch letter {batch_letter!r} (batched mode; {_PER_SAMPLE_HINT})"
        )
    ops, sample_ins = [], []
    for i, (s, o) in enumerate(zip(ins, operands)):
        batched = s.startswith(batch_letter)
        if s.count(batch_letter) > (1 if batched else 0):
            raise ValueError(f"einsum: the batch letter {batch_letter!r} may only lead an operand, got {s!r}")
        if isinstance(o, Tracer):
            if o.node.batched != batched:
                raise ValueError(
                    f"einsum: operand {i} ({s!r}) is {'' if o.node.batched else 'not '}batched but its subscripts say otherwise"
                )
            ops.append(o)
        else:
            o = as_operand_array(o, f"operand {i}")
            if batched and o.shape[0] != call.batch:
                raise ValueError(
                    f"einsum: operand {i} ({s!r}) has {o.shape[0]} entries along the batch letter, expected {call.batch}"
                )
            ops.append(Batched(o) if batched else o)
        sample_ins.append(s[1:] if batched else s)
    return unwrap(bind(EINSUM, ops, {"spec": f"{','.join(sample_ins)}->{out[1:]}"}))


def _axis_op(primitive: Primitive, x: Any, axis: int, what: str) -> Any:
    from batchjac.exact.ops.operands import full_ndim, sample_axis

    call = Call(x)
    operand, _ = main(x, call)
    return unwrap(bind(primitive, (operand,), {"axis": sample_axis(axis, full_ndim(x), call, what)}))


def softmax(x: Any, axis: int = -1) -> Any:
    """Softmax along ``axis`` (the last by default) of each sample.

    Jacobian ``diag(s) - s s^T`` per softmax (block-diagonal over the other axes).

    >>> import numpy as np, batchjac as bj
    >>> bj.softmax(np.zeros((1, 2))).tolist()
    [[0.5, 0.5]]
    """
    return _axis_op(SOFTMAX, x, axis, "softmax")


def log_softmax(x: Any, axis: int = -1) -> Any:
    """Log-softmax along ``axis`` (the last by default) of each sample; Jacobian ``I - 1 s^T``.

    >>> import numpy as np, batchjac as bj
    >>> np.round(np.exp(bj.log_softmax(np.zeros((1, 2)))), 6).tolist()
    [[0.5, 0.5]]
    """
    return _axis_op(LOG_SOFTMAX, x, axis, "log_softmax")


def _square(X: Any, what: str) -> int:
    call = Call(X)
    operand, shape = main(X, call, "X")
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{what}: expected square matrices (B, ..., n, n), got samples of shape {shape}")
    return operand


def det(X: Any) -> Any:
    """Determinant of each square matrix: ``(B, ..., n, n) -> (B, ...)``.

    ``d det(X) / dX`` is the cofactor matrix ``det(X) X^-T`` (computed from an SVD, so it is
    right for singular ``X`` too).

    >>> import numpy as np, batchjac as bj
    >>> bj.det(np.array([[[3.0, 2.0], [6.0, -4.0]]])).round(6).tolist()
    [-24.0]
    """
    return unwrap(bind(DET, (_square(X, "det"),)))


def slogdet(X: Any) -> tuple[Any, Any]:
    """``(sign, log|det X|)`` of each square matrix, each ``(B, ...)``; ``sign`` is not
    differentiable, ``d log|det X| / dX = X^-T``.

    >>> import numpy as np, batchjac as bj
    >>> sign, logdet = bj.slogdet(np.array([[[2.0, 0.0], [0.0, -3.0]]]))
    >>> sign.tolist(), np.round(np.exp(logdet), 6).tolist()
    ([-1.0], [6.0])
    """
    operand = _square(X, "slogdet")
    return unwrap(bind(SIGN_DET, (operand,))), unwrap(bind(LOGABSDET, (operand,)))


def inv(X: Any) -> Any:
    """Inverse of each square matrix; ``dY = -Y dX Y``.

    >>> import numpy as np, batchjac as bj
    >>> bj.inv(np.array([[[2.0, 0.0], [0.0, 4.0]]])).tolist()
    [[[0.5, 0.0], [0.0, 0.25]]]
    """
    return unwrap(bind(INV, (_square(X, "inv"),)))


def solve(A: Any, b: Any) -> Any:
    """``x = A^-1 b`` for each sample: A ``(B, ..., n, n)`` (stacks of matrices allowed) or
    shared ``(n, n)``; b ``(B, ..., n)`` (one vector per matrix: b has one axis fewer than A)
    or ``(B, ..., n, k)``, or shared; stacks broadcast. A ``bj.Jacobian`` as ``A`` solves with
    its structure (see :func:`batchjac.structured.solve.solve`).

    Jacobians: ``dx/db = A^-1`` (``⊗ I_k``), ``dx/dA = -(A^-1 ⊗ x^T)`` per matrix.

    >>> import numpy as np, batchjac as bj
    >>> bj.solve(np.array([[[2.0, 0.0], [0.0, 4.0]]]), np.array([[2.0, 4.0]])).tolist()
    [[1.0, 1.0]]
    """
    if isinstance(A, Jacobian):
        return structured_solve(A, b)
    call = Call(A, b)
    A_op, sa = _solve_operand(A, call, "A", matrix_axes=2)
    b_op, sb = _solve_operand(b, call, "b", matrix_axes=None, batch=_eager_batch(A_op))
    return unwrap(bind(SOLVE, (A_op, b_op), {"vector": len(sb) == len(sa) - 1}))


def _eager_batch(operand: Any) -> int | None:
    return operand.array.shape[0] if isinstance(operand, Batched) else None


def _solve_operand(a: Any, call: Call, name: str, matrix_axes: int | None, batch: int | None = None) -> Any:
    """An operand of ``solve`` and its per-sample shape. Batchjac's convention: a constant
    with more than ``matrix_axes`` axes (a stack, or b with a leading axis of length B)
    carries the batch axis first; otherwise it is shared."""
    if isinstance(a, Tracer):
        return a, a.node.shape
    a = as_operand_array(a, name)
    if call.per_sample:
        return a, tuple(a.shape)
    batch = call.batch if call.traced else batch
    if matrix_axes is not None:
        per_sample = a.ndim > matrix_axes
    else:  # b: per sample when its leading length is the batch's (or A is shared and b is not a vector)
        per_sample = a.ndim >= 2 and (batch is None or a.shape[0] == batch)
    if per_sample:
        if batch is not None and a.shape[0] != batch:
            raise ValueError(
                f"solve: {name} of shape {tuple(a.shape)} has {a.shape[0]} samples, expected {batch}"
            )
        return Batched(a), tuple(a.shape[1:])
    return a, tuple(a.shape)


def numpy_solve(a: Any, b: Any) -> Any:
    """``numpy.linalg.solve`` on the arrays ``f`` sees, with NumPy 2's rule: ``b`` is a vector
    only when it has one axis; otherwise ``b`` is a stack of matrices ``(..., n, k)``."""
    call = Call(a, b)
    vector = full_ndim(b) == 1
    if call.per_sample:
        a_op = a if isinstance(a, Tracer) else as_operand_array(a, "a")
        b_op = b if isinstance(b, Tracer) else as_operand_array(b, "b")
        return unwrap(bind(SOLVE, (a_op, b_op), {"vector": vector}))
    n = a.shape[-1] if isinstance(a, Tracer) else np.shape(a)[-1]
    b_rows = b.shape[0] if full_ndim(b) == 2 else None
    if b_rows is not None and (
        (isinstance(b, Tracer) and b.node.batched)
        or (not isinstance(b, Tracer) and b_rows == call.batch and b_rows != n)
    ):
        raise ValueError(
            "numpy.linalg.solve(a, b) with b of shape (B, n): NumPy 2 reads b as one matrix whose rows are the "
            "samples; write numpy.linalg.solve(a, b[..., None])[..., 0], use bj.solve(a, b), or "
            + _PER_SAMPLE_HINT
        )
    stacks = [full_ndim(o) - core for o, core in ((a, 2), (b, 1 if vector else 2))]
    traced = [isinstance(o, Tracer) and o.node.batched for o in (a, b)]
    a_op = _batched_operand(
        a, call, "a", stack_rank_of_partner=stacks[1] if traced[1] else None, what="numpy.linalg.solve"
    )
    b_op = _batched_operand(
        b,
        call,
        "b",
        stack_rank_of_partner=stacks[0] if traced[0] else None,
        core=1 if vector else 2,
        what="numpy.linalg.solve",
    )
    return unwrap(bind(SOLVE, (a_op, b_op), {"vector": vector}))


def cholesky(A: Any) -> Any:
    """Lower Cholesky factor of each symmetric positive-definite matrix (NumPy reads the
    lower triangle only: the derivative w.r.t. the strict upper triangle is 0).

    >>> import numpy as np, batchjac as bj
    >>> bj.cholesky(np.array([[[4.0, 0.0], [0.0, 9.0]]])).tolist()
    [[[2.0, 0.0], [0.0, 3.0]]]
    """
    return unwrap(bind(CHOLESKY, (_square(A, "cholesky"),)))


def matrix_power(X: Any, k: int) -> Any:
    """``X^k`` per sample by repeated squaring (``k < 0``: of the inverse).

    >>> import numpy as np, batchjac as bj
    >>> bj.matrix_power(np.array([[[2.0, 0.0], [0.0, 3.0]]]), 2).tolist()
    [[[4.0, 0.0], [0.0, 9.0]]]
    """
    operand = _square(X, "matrix_power")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"matrix_power: k must be an integer, got {k!r}")
    if k < 0:
        operand, k = bind(INV, (operand,)), -k
    n = lax.shape(operand)[-1]
    result, base = None, operand
    while k:
        if k & 1:
            result = base if result is None else bind(MATMUL, (result, base))
        k >>= 1
        if k:
            base = bind(MATMUL, (base, base))
    if result is None:
        dtype = lax.aval(operand)[1]
        eye = np.broadcast_to(np.eye(n, dtype=dtype), lax.shape(operand))
        result = lax.add(lax.mul(operand, 0.0), eye)
    return unwrap(result)
