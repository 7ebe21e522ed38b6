"""Chains of structured Jacobians, multiplied in the cheapest order.

The chain rule turns the Jacobian of a composition into a product ``J_L ... J_2 J_1``
(``J_1`` is the innermost function's, applied first). The product is associative and the
bracketing decides the cost: right to left, ``(J_L (... (J_2 J_1)))``, is forward mode; left
to right, ``(((J_L J_{L-1}) ...) J_1)``, is reverse mode; the cheapest bracketing is found by
dynamic programming over the chain (the matrix-chain problem) with costs that know the
structure of every factor and of every intermediate product.

Factors are numbered as in the product: in ``chain(J3, J2, J1)`` the first argument is
factor 3 and the last is factor 1; plans and error messages use these numbers.

The cost model
--------------
A product ``J @ K`` of a ``(B, m, k)`` by a ``(B, k, n)`` Jacobian is costed without
computing it, from *structures* (:class:`Structure`: kind, batch and sizes):

- **flops** counts multiply-adds, a fused multiply-add as **1**, and a lone multiplication
  (of a scaling) as 1 as well. A product with a plain identity is free (it returns the
  other factor). A product that involves a ``Diagonal`` or a scaled ``Identity`` is a row or
  column scaling: one multiplication per stored entry of the result (``Diagonal @ Dense``
  costs ``B m n``, ``Diagonal @ Diagonal`` costs ``B n``); so is a product with a ``Gather``
  (rows picked or columns scattered: one move per stored entry of the result, a scattered
  product with a non-injective gather is undercounted). A product of two full matrices
  is a contraction, ``m k n`` multiply-adds per distinct sample: once for ``Shared @ Shared``
  (which stays ``Shared``), ``B`` times otherwise.
- **bytes** counts what a batched product moves through memory: the stored arrays of both
  operands read once and the stored array of the result written once, at the element size
  of the chain's result dtype (0 for a product with a plain identity).

The structure of a product follows the table of :mod:`batchjac.structured.algebra`. The planner
minimises flops first and, among bracketings of equal flops, bytes; among bracketings equal
in both it takes the one that multiplies the longest left part first (the most reverse-like):
in row-major memory a batched product times a ``Shared`` factor is one GEMM on a reshaped
view, while a ``Shared`` factor times a batched product first transposes the batched one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Sequence, Union

import numpy as np

from batchjac.core.arrays import as_float_array
from batchjac.structured.types import Dense, Diagonal, Gather, Identity, Jacobian, Shared

ORDERS = ("optimal", "forward", "reverse")
IDENTITY_SCALES = ("one", "number", "per_sample")

# A structure is a point of a small lattice: how much of each sample's matrix is stored
# (nothing, one number, a diagonal, everything) and whether it varies along the batch.
# A product takes the larger of each for its operands: that is the structure table of
# batchjac.structured.algebra in two lines (Diagonal @ Shared is per sample and full: Dense).
_UNIT, _SCALAR, _DIAGONAL, _GATHER, _FULL = range(5)
_LATTICE = {
    (Identity, "one"): (False, _UNIT),
    (Identity, "number"): (False, _SCALAR),
    (Identity, "per_sample"): (True, _SCALAR),
    (Diagonal, "one"): (True, _DIAGONAL),
    (Gather, "one"): (False, _GATHER),
    (Shared, "one"): (False, _FULL),
    (Dense, "one"): (True, _FULL),
}
_FROM_LATTICE = {point: kind_scale for kind_scale, point in _LATTICE.items()}
_FROM_LATTICE[True, _GATHER] = (Dense, "one")  # a gather times a per-sample diagonal or scale


@dataclass(frozen=True)
class Structure:
    """What the planner knows of a factor: kind, batch and sizes; no arrays.

    ``kind`` is one of the classes ``Dense``, ``Diagonal``, ``Shared``, ``Identity``, ``Gather``;
    the factor is ``(batch, out_size, in_size)``. ``scale`` says how an ``Identity`` is
    scaled: ``"one"`` (the plain identity, which costs nothing), ``"number"`` or
    ``"per_sample"`` (a ``(B,)`` array); other kinds keep the default ``"one"``.

    >>> import batchjac as bj
    >>> from batchjac.structured.chain import Structure
    >>> Structure(bj.Shared, 64, 10, 1024).stored
    10240
    """

    kind: type
    batch: int
    out_size: int
    in_size: int
    scale: str = "one"

    def __post_init__(self):
        if (self.kind, self.scale) not in _LATTICE:
            raise ValueError(
                f"Structure: expected kind Dense, Diagonal, Shared or Identity (scale one of "
                f"{', '.join(IDENTITY_SCALES)}; 'one' for the other kinds), got kind "
                f"{getattr(self.kind, '__name__', self.kind)!r} with scale {self.scale!r}"
            )
        if self.kind in (Diagonal, Identity) and self.out_size != self.in_size:
            raise ValueError(
                f"Structure: a {self.kind.__name__} is square, got out_size {self.out_size} "
                f"and in_size {self.in_size}"
            )

    @classmethod
    def of(cls, J: Jacobian) -> "Structure":
        """The structure of a Jacobian object."""
        if isinstance(J, Identity):
            scale = "per_sample" if J.per_sample else ("one" if J.scale == 1.0 else "number")
            return cls(Identity, J.batch, J.out_size, J.in_size, scale)
        return cls(type(J), J.batch, J.out_size, J.in_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_size, self.in_size)

    @property
    def stored(self) -> int:
        """How many numbers the structure stores (``B m n`` for ``Dense``, ``m n`` for
        ``Shared``, ``B n`` for ``Diagonal``, ``B`` or none for an ``Identity``)."""
        per_sample, sparsity = _LATTICE[self.kind, self.scale]
        if not per_sample and sparsity <= _SCALAR:
            return 0  # the scale is a Python number, not an array
        per_matrix = {
            _SCALAR: 1,
            _DIAGONAL: self.in_size,
            _GATHER: self.out_size,
            _FULL: self.out_size * self.in_size,
        }[sparsity]
        return per_matrix * (self.batch if per_sample else 1)

    def describe(self) -> str:
        if self.kind is Identity and self.scale != "one":
            return f"Identity[{self.scale}] {self.out_size}"
        if self.kind in (Diagonal, Identity):
            return f"{self.kind.__name__} {self.in_size}"
        return f"{self.kind.__name__} {self.out_size}x{self.in_size}"


def product_structure(J: Structure, K: Structure) -> Structure:
    """The structure of ``J @ K`` (as :mod:`batchjac.structured.algebra` builds it):
    ``(B, m, k) @ (B, k, n) -> (B, m, n)``.

    >>> import batchjac as bj
    >>> R = product_structure(Structure(bj.Diagonal, 8, 5, 5), Structure(bj.Shared, 8, 5, 3))
    >>> R.kind.__name__, R.shape
    ('Dense', (8, 5, 3))
    """
    j_batched, j_sparsity = _LATTICE[J.kind, J.scale]
    k_batched, k_sparsity = _LATTICE[K.kind, K.scale]
    kind, scale = _FROM_LATTICE[j_batched or k_batched, max(j_sparsity, k_sparsity)]
    return Structure(kind, J.batch, J.out_size, K.in_size, scale)


def product_cost(J: Structure, K: Structure, result: Structure, itemsize: int) -> tuple[int, int]:
    """``(flops, bytes)`` of ``J @ K``, whose structure is ``result``, under the model of
    this module's docstring; ``itemsize`` is the element size of the result dtype.

    >>> import batchjac as bj
    >>> D, W = Structure(bj.Diagonal, 8, 5, 5), Structure(bj.Shared, 8, 5, 3)
    >>> product_cost(D, W, product_structure(D, W), itemsize=8)  # a row scaling of W
    (120, 1400)
    """
    sparsities = (_LATTICE[J.kind, J.scale][1], _LATTICE[K.kind, K.scale][1])
    if _UNIT in sparsities:
        return 0, 0
    if min(sparsities) < _FULL:
        flops = result.stored  # a row or column scaling
    else:
        distinct = 1 if result.kind is Shared else J.batch
        flops = distinct * J.out_size * J.in_size * K.in_size
    return flops, (J.stored + K.stored + result.stored) * itemsize


# A bracketing: a factor's index in the chain (0 for the leftmost, J_L), or a pair of
# bracketings multiplied left @ right.
Bracketing = Union[int, tuple]


class _Costed(NamedTuple):
    flops: int
    bytes: int
    structure: Structure
    tree: Bracketing


def _multiply_costed(left: _Costed, right: _Costed, itemsize: int) -> _Costed:
    result = product_structure(left.structure, right.structure)
    flops, nbytes = product_cost(left.structure, right.structure, result, itemsize)
    return _Costed(
        left.flops + right.flops + flops, left.bytes + right.bytes + nbytes, result, (left.tree, right.tree)
    )


def _cost_of(tree: Bracketing, structures: Sequence[Structure], itemsize: int) -> _Costed:
    if isinstance(tree, int):
        return _Costed(0, 0, structures[tree], tree)
    left, right = (_cost_of(t, structures, itemsize) for t in tree)
    return _multiply_costed(left, right, itemsize)


def _cheapest(structures: Sequence[Structure], itemsize: int) -> _Costed:
    """The matrix-chain dynamic programme: the cheapest bracketing of every sub-chain
    ``i..j``, built from those of its shorter sub-chains, (flops, bytes) compared in order;
    splits are tried right to left so that ``min`` keeps the most reverse-like of equals."""
    n = len(structures)
    best = {(i, i): _Costed(0, 0, s, i) for i, s in enumerate(structures)}
    for span in range(1, n):
        for i in range(n - span):
            j = i + span
            splits = (_multiply_costed(best[i, k], best[k + 1, j], itemsize) for k in reversed(range(i, j)))
            best[i, j] = min(splits, key=lambda c: (c.flops, c.bytes))
    return best[0, n - 1]


def forward_bracketing(n: int) -> Bracketing:
    """``(J_L (... (J_2 J_1)))`` over factor indices ``0..n-1``: forward mode.

    >>> forward_bracketing(3)
    (0, (1, 2))
    """
    tree = n - 1
    for i in reversed(range(n - 1)):
        tree = (i, tree)
    return tree


def reverse_bracketing(n: int) -> Bracketing:
    """``(((J_L J_{L-1}) ...) J_1)`` over factor indices ``0..n-1``: reverse mode.

    >>> reverse_bracketing(3)
    ((0, 1), 2)
    """
    tree = 0
    for i in range(1, n):
        tree = (tree, i)
    return tree


def _name(tree: Bracketing, n: int) -> str:
    if isinstance(tree, int):
        return f"J{n - tree}"
    left, right = tree
    return f"({_name(left, n)} {_name(right, n)})"


@dataclass(frozen=True)
class ChainPlan:
    """How a chain ``J_L ... J_1`` is best multiplied, and what each order costs.

    ``order`` names the cheapest bracketing (``"((J3 J2) J1)"``; ``J1`` is the rightmost
    factor) and ``tree`` is the same bracketing over factor indices, ``0`` the leftmost
    (``((0, 1), 2)``). ``flops`` and ``bytes`` are its cost under the model of
    :mod:`batchjac.structured.chain`; ``forward_*`` and ``reverse_*`` are those of forward mode
    (right to left) and reverse mode (left to right). ``result`` is the
    :class:`Structure` of the product; ``factors`` those of ``J_L, ..., J_1``.
    """

    factors: tuple
    itemsize: int
    tree: Bracketing
    order: str
    flops: int
    bytes: int
    forward_flops: int
    forward_bytes: int
    reverse_flops: int
    reverse_bytes: int
    result: Structure

    def bracketing(self, order: str = "optimal") -> Bracketing:
        """The bracketing ``chain`` multiplies for ``order``: ``"optimal"``, ``"forward"``
        or ``"reverse"``."""
        if order not in ORDERS:
            raise ValueError(f"order: expected one of {', '.join(map(repr, ORDERS))}, got {order!r}")
        if order == "optimal":
            return self.tree
        make = forward_bracketing if order == "forward" else reverse_bracketing
        return make(len(self.factors))

    def explain(self) -> str:
        """A readable account of the factors, the chosen order and the costs of the three."""
        n = len(self.factors)
        factors = ", ".join(f"J{n - i}: {s.describe()}" for i, s in enumerate(self.factors))
        rows = [
            ("optimal", self.order, self.flops, self.bytes),
            ("forward", _name(forward_bracketing(n), n), self.forward_flops, self.forward_bytes),
            ("reverse", _name(reverse_bracketing(n), n), self.reverse_flops, self.reverse_bytes),
        ]
        width = max(len(r[1]) for r in rows)
        lines = [
            f"chain of {n} factor(s), batch {self.result.batch}: {factors}",
            f"result: {self.result.describe()} ({self.itemsize}-byte elements)",
            f"  {'':8}{'bracketing':<{width}}  {'flops':>14}  {'bytes':>14}",
        ]
        lines += [
            f"  {label:<8}{name:<{width}}  {flops:>14,}  {nbytes:>14,}" for label, name, flops, nbytes in rows
        ]
        return "\n".join(lines)

    __str__ = explain


def _check_adjacent(where: str, factors: Sequence) -> None:
    """Adjacent factors must agree in size and all in batch; ``factors`` are ``J_L..J_1``."""
    n = len(factors)
    for i in range(n - 1):
        left, right, k = factors[i], factors[i + 1], n - i
        if left.in_size != right.out_size:
            raise ValueError(
                f"{where}: factor {k} has input size {left.in_size} but factor {k - 1} has "
                f"output size {right.out_size}"
            )
        if left.batch != right.batch:
            raise ValueError(
                f"{where}: factor {k} has batch {left.batch} but factor {k - 1} has batch {right.batch}"
            )


def _require_factors(where: str, factors: Sequence) -> None:
    if len(factors) == 0:
        raise ValueError(f"{where}: expected at least one factor, got none")


def plan_chain_descriptors(descriptors: Sequence, itemsize: int = 8) -> ChainPlan:
    """Plan the product ``J_L ... J_1`` from structures alone, without arrays.

    ``descriptors`` lists the factors left to right (``J_L`` first, ``J_1`` last), each a
    :class:`Structure` or a tuple ``(kind, batch, out_size, in_size)`` or
    ``(kind, batch, out_size, in_size, scale)`` with ``kind`` one of the classes
    ``Dense``, ``Diagonal``, ``Shared``, ``Identity`` and ``scale`` (identities only)
    ``"one"``, ``"number"`` or ``"per_sample"``. ``itemsize`` is the element size in bytes
    of the result dtype (8 for float64, 4 for float32). Returns a :class:`ChainPlan`;
    ``plan.tree`` indexes ``descriptors``. Raises ``ValueError`` when the chain is empty or
    adjacent factors disagree in size or batch.

    >>> import batchjac as bj
    >>> plan = plan_chain_descriptors([(bj.Shared, 64, 10, 1024), (bj.Diagonal, 64, 1024, 1024),
    ...                                (bj.Shared, 64, 1024, 784)], itemsize=4)
    >>> plan.order, plan.tree, plan.result.kind.__name__
    ('((J3 J2) J1)', ((0, 1), 2), 'Dense')
    """
    structures = tuple(d if isinstance(d, Structure) else Structure(*d) for d in descriptors)
    _require_factors("chain", structures)
    _check_adjacent("chain", structures)
    return _plan(structures, itemsize)


# A traced function or a training loop plans the same chain at every call, and a plan is
# immutable: plans are kept by structure so that a repeated chain costs a lookup.
@functools.lru_cache(maxsize=1024)
def _plan(structures: tuple, itemsize: int) -> ChainPlan:
    best = _cheapest(structures, itemsize)
    forward = _cost_of(forward_bracketing(len(structures)), structures, itemsize)
    reverse = _cost_of(reverse_bracketing(len(structures)), structures, itemsize)
    return ChainPlan(
        factors=structures,
        itemsize=itemsize,
        tree=best.tree,
        order=_name(best.tree, len(structures)),
        flops=best.flops,
        bytes=best.bytes,
        forward_flops=forward.flops,
        forward_bytes=forward.bytes,
        reverse_flops=reverse.flops,
        reverse_bytes=reverse.bytes,
        result=best.structure,
    )


def _check_jacobians(where: str, Js: Sequence) -> None:
    _require_factors(where, Js)
    for i, J in enumerate(Js):
        if not isinstance(J, Jacobian):
            raise TypeError(
                f"{where}: factor {len(Js) - i} (argument {i + 1} of {len(Js)}) must be a "
                f"bj.Jacobian (Dense, Diagonal, Shared or Identity), got {type(J).__name__}"
            )
    _check_adjacent(where, Js)


def _result_itemsize(Js: Sequence[Jacobian]) -> int:
    # An identity without a dtype of its own takes its partner's, so it does not count.
    dtypes = [J.dtype for J in Js if not (isinstance(J, Identity) and J.is_weak)]
    return np.result_type(*dtypes).itemsize if dtypes else np.dtype(np.float64).itemsize


def chain_plan(*Js: Jacobian) -> ChainPlan:
    """The cheapest bracketing of ``J_L @ ... @ J_1`` and the costs of every order.

    ``Js`` are the factors left to right, each a ``bj.Jacobian`` of shape ``(B, m_i, n_i)``
    with ``n_i == m_{i-1}``. Nothing is multiplied: the plan is made from kinds and sizes
    (see :class:`ChainPlan` for what it reports and :mod:`batchjac.structured.chain` for the costs).

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.ones((2, 100)), batch=8)
    >>> D = bj.Diagonal(np.ones((8, 100)))
    >>> V = bj.Shared(np.ones((100, 50)), batch=8)
    >>> plan = bj.chain_plan(W, D, V)
    >>> plan.order, plan.flops, plan.forward_flops
    ('((J3 J2) J1)', 81600, 120000)
    """
    _check_jacobians("chain", Js)
    return plan_chain_descriptors([Structure.of(J) for J in Js], _result_itemsize(Js))


def _multiply(tree: Bracketing, Js: Sequence[Jacobian]) -> Jacobian:
    if isinstance(tree, int):
        return Js[tree]
    left, right = tree
    return _multiply(left, Js) @ _multiply(right, Js)


def chain(*Js: Jacobian, order: str = "optimal") -> Jacobian:
    """The product ``J_L @ ... @ J_1`` of a chain of Jacobians, structure kept.

    ``Js`` are the factors left to right, each ``(B, m_i, n_i)`` with ``n_i == m_{i-1}``;
    the result is ``(B, m_L, n_1)`` in numerator layout, of the structure the product has
    (a chain of ``Diagonal`` factors is ``Diagonal``). ``order`` is ``"optimal"`` (the
    bracketing of :func:`chain_plan`), ``"forward"`` (right to left) or ``"reverse"``
    (left to right). Every product is a structured one (a scaling, never a dense product,
    where a factor is diagonal). One factor is returned as it is.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.array([[1.0, 2.0]]), batch=2)
    >>> D = bj.Diagonal(np.array([[1.0, 10.0], [2.0, 20.0]]))
    >>> bj.chain(W, D, order="reverse").to_dense().tolist()
    [[[1.0, 20.0]], [[2.0, 40.0]]]
    """
    return _multiply(chain_plan(*Js).bracketing(order), Js)


def _check_vector(where: str, x, batch: int, size: int, name: str, factor: int):
    x = as_float_array(x, name)
    if tuple(x.shape) != (batch, size):
        raise ValueError(
            f"{where}: {name} must have shape ({batch}, {size}) to match factor {factor}, got {tuple(x.shape)}"
        )
    return x


def _factor_list(where: str, Js) -> list:
    if isinstance(Js, Jacobian) or not isinstance(Js, (list, tuple)):
        raise TypeError(f"{where}: Js must be a list of Jacobians [J_L, ..., J_1], got {type(Js).__name__}")
    _check_jacobians(where, Js)
    return list(Js)


def chain_jvp(Js: Sequence[Jacobian], v):
    """``J_L ... J_1 v`` per sample, one factor at a time, never forming the product.

    ``Js`` is the list ``[J_L, ..., J_1]`` (factor ``J_i`` of shape ``(B, m_i, n_i)``);
    ``v`` is ``(B, n_1)``; ``J_1`` is applied first and the result is ``(B, m_L)``.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.array([[1.0, 2.0]]), batch=1)
    >>> D = bj.Diagonal(np.array([[3.0, 4.0]]))
    >>> bj.chain_jvp([W, D], np.array([[1.0, 1.0]])).tolist()
    [[11.0]]
    """
    Js = _factor_list("chain_jvp", Js)
    v = _check_vector("chain_jvp", v, Js[-1].batch, Js[-1].in_size, "v", 1)
    for J in reversed(Js):
        v = J.jvp(v)
    return v


def chain_vjp(Js: Sequence[Jacobian], u):
    """``u^T J_L ... J_1`` per sample, one factor at a time, never forming the product.

    ``Js`` is the list ``[J_L, ..., J_1]`` (factor ``J_i`` of shape ``(B, m_i, n_i)``);
    ``u`` is ``(B, m_L)``; ``J_L`` is applied first and the result is ``(B, n_1)``.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.array([[1.0, 2.0]]), batch=1)
    >>> D = bj.Diagonal(np.array([[3.0, 4.0]]))
    >>> bj.chain_vjp([W, D], np.array([[1.0]])).tolist()
    [[3.0, 8.0]]
    """
    Js = _factor_list("chain_vjp", Js)
    u = _check_vector("chain_vjp", u, Js[0].batch, Js[0].out_size, "u", len(Js))
    for J in Js:
        u = J.vjp(u)
    return u
