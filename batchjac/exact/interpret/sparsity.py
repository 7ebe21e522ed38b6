"""The sparsity interpreter: which output entries depend on which input entries, per sample,
read from the program alone (no derivative is evaluated).

Each variable's pattern is a boolean sparse matrix ``(its size, input size)``; an equation's
pattern is the union over its differentiated operands of ``local pattern @ operand's
pattern``. Local patterns come from the structure of the primitive: element-wise rules map
an entry to the same entry (or its broadcast source), moves pick entries through their
index maps, reductions sum sets, ``cumsum`` prefixes, a product with a constant matrix
follows that matrix's nonzeros, softmax couples the entries of one line, linear algebra
couples the entries of one matrix. Primitives without a finer rule are taken as dense
(every output entry depends on every input entry of the operand): the pattern is always a
superset of the true one, never a subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from batchjac.exact.ir import Equation, Literal, Program, Var
from batchjac.exact.primitives import jacobians as local
from batchjac.exact.primitives.base import size_of
from batchjac.exact.primitives.moves import Concatenate, Move
from batchjac.exact.primitives.reductions import cumsum_pattern, reduction_pattern


def _sparse() -> Any:
    import scipy.sparse as sparse

    return sparse


def _csr(
    rows: npt.NDArray[Any] | Sequence[int], cols: npt.NDArray[Any] | Sequence[int], shape: tuple[int, ...]
) -> Any:
    sparse = _sparse()
    data = np.ones(len(rows), dtype=bool)
    return sparse.csr_array(
        (data, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))), shape=shape
    )


def _identity(n: int) -> Any:
    return _sparse().eye_array(n, dtype=bool, format="csr")


def _selection(index: npt.NDArray[Any] | Sequence[int], in_size: int) -> Any:
    index = np.asarray(index).ravel()
    rows = np.flatnonzero(index >= 0)
    return _csr(rows, index[rows], (index.size, in_size))


def _from_csr(
    indptr: npt.NDArray[Any] | Sequence[int], indices: npt.NDArray[Any] | Sequence[int], in_size: int
) -> Any:
    sparse = _sparse()
    out = len(indptr) - 1
    return sparse.csr_array(
        (np.ones(len(indices), dtype=bool), np.asarray(indices), np.asarray(indptr)), shape=(out, in_size)
    )


def _dense(out_size: int, in_size: int) -> Any:
    return _sparse().csr_array(np.ones((out_size, in_size), dtype=bool))


def _same_group(shape: Sequence[int], axes: Sequence[int]) -> Any:
    """Entries that share their coordinates outside ``axes`` (a line of softmax, a matrix of a
    stack): ``R^T R`` with ``R`` the reduction over ``axes``."""
    R = _from_csr(*reduction_pattern(tuple(shape), tuple(axes)), size_of(shape))
    return (R.T @ R).astype(bool)


def local_pattern(eq: Equation, i: int) -> Any:
    """The pattern ``(eq.out.size, operand size)`` of ``d eq.out / d eq.inputs[i]``."""
    prim, operand, out = eq.primitive, eq.inputs[i], eq.out
    params = dict(eq.params)
    name = prim.name
    if not prim.differentiable:
        return _sparse().csr_array((out.size, operand.size), dtype=bool)
    if isinstance(prim, Move):
        return _selection(prim.index(operand.shape, params), operand.size)
    if isinstance(prim, Concatenate):
        positions = prim.positions([o.shape for o in eq.inputs], params["axis"], i).ravel()
        index = np.full(out.size, -1, dtype=np.int64)
        index[positions] = np.arange(positions.size)
        return _selection(index, operand.size)
    if name in ("reshape", "convert"):
        return _identity(out.size)
    if name == "scatter_add":
        return _selection(params["index"].array, out.size).T.tocsr()
    if name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "logsumexp"):
        return _from_csr(*reduction_pattern(operand.shape, params["axes"]), operand.size)
    if name == "cumsum":
        return _from_csr(*cumsum_pattern(operand.shape, params["axis"]), operand.size)
    if name in ("softmax", "log_softmax"):
        return _same_group(operand.shape, (params["axis"],))
    if name in ("det", "logabsdet"):
        n = len(operand.shape)
        return _from_csr(*reduction_pattern(operand.shape, (n - 2, n - 1)), operand.size)
    if name in ("inv", "cholesky"):
        n = len(operand.shape)
        return _same_group(operand.shape, (n - 2, n - 1))
    if name == "matmul":
        return _matmul_with(eq, i, None)
    if hasattr(prim, "rule") or name == "select":  # element-wise: an entry, or its broadcast source
        if operand.shape == out.shape:
            return _identity(out.size)
        return _selection(local.broadcast_index(tuple(operand.shape), tuple(out.shape)), operand.size)
    return _dense(out.size, operand.size)


def sparsity_pattern(program: Program, wrt: Sequence[Var] | None = None, output: Var | None = None) -> Any:
    """The pattern ``(output size, total size of wrt)`` of the program's Jacobian, as a
    boolean SciPy CSR array (columns: the inputs of ``wrt`` one after the other)."""
    wrt = list(program.inputs if wrt is None else wrt)
    output = program.outputs[0] if output is None else output
    sparse = _sparse()
    total = sum(v.size for v in wrt)
    patterns: dict[Var, Any] = {}
    offset = 0
    for v in wrt:
        rows = np.arange(v.size)
        patterns[v] = _csr(rows, rows + offset, (v.size, total))
        offset += v.size
    consts = dict(zip(program.consts, program.const_values))
    for eq in program.equations:
        parts = []
        for i, o in enumerate(eq.inputs):
            if isinstance(o, Literal) or o not in patterns:
                continue
            if eq.primitive.name == "matmul":  # a constant factor's zeros are structural
                other = eq.inputs[1 - i]
                value = consts.get(other) if isinstance(other, Var) and not other.batched else None
                parts.append(_matmul_with(eq, i, value) @ patterns[o])
            else:
                parts.append(local_pattern(eq, i) @ patterns[o])
        if parts:
            total_pattern = parts[0]
            for p in parts[1:]:
                total_pattern = total_pattern + p
            patterns[eq.out] = total_pattern.astype(bool).tocsr()
    if output not in patterns:
        return sparse.csr_array((output.size, total), dtype=bool)
    return patterns[output]


def _matmul_with(eq: Equation, i: int, other_value: Any) -> Any:
    """The pattern of ``dY/d(operand i)`` of ``Y = A B``: ``I_p ⊗ B^T`` or ``A ⊗ I_r`` with the
    other factor's nonzeros when it is a known constant (dense otherwise)."""
    from batchjac.exact.primitives.linalg import _matrix_shapes

    a, b = eq.inputs
    sa2, sb2, out_shape, _ = _matrix_shapes(a.shape, b.shape)
    sparse = _sparse()
    if len(out_shape) != 2:
        return _dense(eq.out.size, eq.inputs[i].size)
    shape = sb2 if i == 0 else sa2
    if other_value is None or hasattr(other_value, "recording"):
        nonzero = np.ones(shape, dtype=bool)
    else:
        nonzero = np.asarray(other_value).reshape(shape) != 0
    if i == 0:  # dY/dA = I_p ⊗ B^T
        return sparse.kron(_identity(sa2[0]), sparse.csr_array(nonzero.T), format="csr").astype(bool)
    return sparse.kron(sparse.csr_array(nonzero), _identity(sb2[1]), format="csr").astype(bool)
