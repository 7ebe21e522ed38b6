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
Every product rule declares its result structure and its cost beside its code
(:mod:`batchjac.structured.algebra`: a :class:`~batchjac.structured.algebra.Cost` in terms of
the operands' and the result's profiles); the planner reads those declarations and nothing
else. **flops** count multiply-adds (a lone multiplication of a scaling counts 1); a product
with a plain identity is free; a row or column scaling, a gather, a copy costs one operation
per stored number of the result; a product of full matrices ``m k n`` per distinct sample.
**bytes** count what a product moves: both operands' stored numbers read and the result's
written, at the element size of the chain's result dtype (0 for a product with a plain
identity). The structure of a sub-chain's product is the left-to-right fold of its factors'
structures (bracketing does not change it; a sparse product's entries are estimated,
uniformly spread, and the fold fixes the estimate).

One plan for every batch size
-----------------------------
A cost is ``a B + c``: ``a`` for the work done per sample (anything whose result varies along
the batch), ``c`` for the work done once (``Shared @ Shared``, the factors of a shared
Kronecker product). The planner compares costs lexicographically: per-sample flops first, then
batch-independent flops, then per-sample bytes, then batch-independent bytes; among equals it
keeps the most reverse-like bracketing (in row-major memory a batched product times a ``Shared``
factor is one GEMM on a reshaped view). That order does not depend on ``B``, so a plan is kept
by the factors' structures without their batch size and serves every ``B`` (a plan made at
``B = 32`` is reused at ``B = 1000``); the chosen bracketing is the cheapest for every batch
large enough that one per-sample operation outweighs the batch-independent ones, and loses at
most the batch-independent work otherwise. ``plan.flops``, ``plan.bytes`` and the forward and
reverse figures report ``a B + c`` at the chain's own ``B``.

Speed
-----
The dynamic programme runs on arrays (:mod:`batchjac.structured.bracketing`), compiled by
numba for chains of more than 24 factors, and solves equal sub-chains once (repeated layers).
``python benchmarks/bench_planner.py`` (2-core x86-64 VM, Python 3.11, numba 0.68, NumPy 2.4;
each figure in a fresh process after ``import batchjac``), for the input Jacobian of an MLP
of 250 hidden layers (501 factors: ``Shared`` 10x256, ``Diagonal`` 256 and ``Shared``
256x256 alternating, ``Shared`` 256x784 last): a new plan takes 24 ms once the compiled
programme is loaded; the first plan of a process 430 ms, mostly importing numba (190 ms)
and loading the programme from numba's cache (2.6 s the very first time on a machine, when
numba compiles it: ``--cold``); the same chain again, at any batch size, 1.3 ms. A 150-layer
MLP (301 factors) plans in 11 ms, 9 and 21 factors in 1 and 4 ms (plain Python), and 500
``Dense`` factors of random sizes, with no repetition to share, in 190 ms.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence, Union

import numpy as np

from batchjac.core.arrays import as_float_array
from batchjac.structured import bracketing
from batchjac.structured.algebra import (
    COST_TERMS,
    IDENTITY_SCALES,
    PRODUCTS,
    Kind,
    Structure,
    product_structure,
    profile_of,
)
from batchjac.structured.base import Jacobian

__all__ = [
    "IDENTITY_SCALES",
    "ORDERS",
    "ChainPlan",
    "Structure",
    "chain",
    "chain_jvp",
    "chain_plan",
    "chain_vjp",
    "forward_bracketing",
    "plan_chain_descriptors",
    "product_cost",
    "product_structure",
    "reverse_bracketing",
]

ORDERS = ("optimal", "forward", "reverse")

# A bracketing: a factor's index in the chain (0 for the leftmost, J_L), or a pair of
# bracketings multiplied left @ right.
Bracketing = Union[int, tuple[Any, Any]]  # (left, right): each a Bracketing


def forward_bracketing(n: int) -> Bracketing:
    """``(J_L (... (J_2 J_1)))`` over factor indices ``0..n-1``: forward mode.

    >>> forward_bracketing(3)
    (0, (1, 2))
    """
    tree: Bracketing = n - 1
    for i in reversed(range(n - 1)):
        tree = (i, tree)
    return tree


def reverse_bracketing(n: int) -> Bracketing:
    """``(((J_L J_{L-1}) ...) J_1)`` over factor indices ``0..n-1``: reverse mode.

    >>> reverse_bracketing(3)
    ((0, 1), 2)
    """
    tree: Bracketing = 0
    for i in range(1, n):
        tree = (tree, i)
    return tree


def _name(tree: Bracketing, n: int) -> str:
    """``"((J3 J2) J1)"`` for ``((0, 1), 2)`` (iterative: chains may be deep)."""
    parts: list[str] = []
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, int):
            parts.append(f"J{n - item}")
        else:
            stack.extend([")", item[1], " ", item[0], "("])
    return "".join(parts)


class _Cost(NamedTuple):
    """A cost as ``a B + c``: flops and numbers moved, per sample and once."""

    flops_per_sample: float
    flops_shared: float
    moved_per_sample: float
    moved_shared: float

    def at(self, batch: int, itemsize: int) -> tuple[int, int]:
        flops = self.flops_per_sample * batch + self.flops_shared
        moved = self.moved_per_sample * batch + self.moved_shared
        return int(round(flops)), int(round(moved)) * itemsize


@dataclass(frozen=True)
class _Core:
    """A plan without its batch size: what the planner keeps per chain of structures."""

    tree: Bracketing
    order: str
    optimal: _Cost
    forward: _Cost
    reverse: _Cost
    result: Structure


@dataclass(frozen=True)
class ChainPlan:
    """How a chain ``J_L ... J_1`` is best multiplied, and what each order costs.

    ``order`` names the cheapest bracketing (``"((J3 J2) J1)"``; ``J1`` is the rightmost
    factor) and ``tree`` is the same bracketing over factor indices, ``0`` the leftmost
    (``((0, 1), 2)``). ``flops`` and ``bytes`` are its cost at the chain's batch size under
    the model of :mod:`batchjac.structured.chain`; ``forward_*`` and ``reverse_*`` are those
    of forward mode (right to left) and reverse mode (left to right). ``result`` is the
    :class:`Structure` of the product; ``factors`` those of ``J_L, ..., J_1``.
    """

    factors: tuple[Structure, ...]
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


# --------------------------------------------------------------------------------------
# The tables of a chain, from the rules' declarations
# --------------------------------------------------------------------------------------

_POLY_FIELDS = ("stored", "apply", "entries")


class _Kinds:
    """Kind ids of a chain, each with its profile and a structure standing for it (the rules'
    declarations read only the kind of a structure), and the rules between kinds."""

    def __init__(self) -> None:
        self.ids: dict[Kind, int] = {}
        self.examples: list[Structure] = []
        self.products: dict[tuple[int, int], int] = {}

    def id_of(self, s: Structure) -> int:
        key = s.key
        if key not in self.ids:
            self.ids[key] = len(self.examples)
            self.examples.append(s)
        return self.ids[key]

    def product(self, a: int, b: int, m: int, n: int) -> int:
        """The kind id of ``a @ b``, for a product of sizes ``(m, n)``."""
        if (a, b) not in self.products:
            J, K = self.examples[a], self.examples[b]
            rule, _ = PRODUCTS.resolve(J.kind, K.kind)
            kind = rule.result(J, K)
            nnz = 0.0 if profile_of(kind).stored.nnz else None
            self.products[a, b] = self.id_of(Structure(kind.cls, 0, m, n, kind.scale, kind.detail, nnz))
        return self.products[a, b]

    def table(self) -> np.ndarray:
        """``table[a, b]``: the kind id of ``a @ b`` (-1 where no sub-chain needs it)."""
        count = len(self.examples)
        table = np.full((count, count), -1, dtype=np.int64)
        for (a, b), r in self.products.items():
            table[a, b] = r
        return table

    def profiles(self) -> dict[str, np.ndarray]:
        """Per kind id: ``batched``, ``dense``, ``uses_nnz`` flags and the coefficient rows of
        ``stored``, ``apply``, ``entries`` (columns ``const, m, n, mn, nnz``)."""
        profiles = [profile_of(s.key) for s in self.examples]
        tables = {
            f: np.array([list(getattr(p, f)) for p in profiles], dtype=np.float64) for f in _POLY_FIELDS
        }
        tables["batched"] = np.array([p.batched for p in profiles], dtype=np.uint8)
        tables["dense"] = np.array([p.dense for p in profiles], dtype=np.uint8)
        tables["uses_nnz"] = np.array([p.stored.nnz != 0 for p in profiles], dtype=np.uint8)
        return tables

    def rules(self) -> tuple[np.ndarray, np.ndarray]:
        """The cost coefficients (columns :data:`~batchjac.structured.algebra.COST_TERMS`) and
        the ``moves`` flag of the rule of every pair of kinds."""
        count = len(self.examples)
        coef = np.zeros((count, count, len(COST_TERMS)), dtype=np.float64)
        moves = np.zeros((count, count), dtype=np.uint8)
        for a, J in enumerate(self.examples):
            for b, K in enumerate(self.examples):
                rule, _ = PRODUCTS.resolve(J.kind, K.kind)
                cost = rule.cost(J, K)
                coef[a, b] = [getattr(cost, term) for term in COST_TERMS]
                moves[a, b] = cost.moves
        return coef, moves


def _chain_tables(structures: Sequence[Structure]) -> tuple[dict[str, np.ndarray], _Kinds]:
    """The per-sub-chain tables of :func:`batchjac.structured.bracketing.bracket` (filled by
    :func:`~batchjac.structured.bracketing.fold`), and the chain's kinds."""
    n = len(structures)
    kinds = _Kinds()
    dims = np.array([s.out_size for s in structures] + [structures[-1].in_size], dtype=np.float64)
    factor_kind = [kinds.id_of(s) for s in structures]
    # The kinds of the sub-chains that end at one factor are few: find every product the
    # fold needs with Python sets, before the fold runs on arrays.
    column: dict[int, int] = {}  # kind -> the start of a sub-chain of that kind
    for j, right in enumerate(factor_kind):
        ending: dict[int, int] = {}
        for a, i in column.items():
            ending.setdefault(kinds.product(a, right, int(dims[i]), int(dims[j + 1])), i)
        ending.setdefault(right, j)
        column = ending
    distinct: dict[tuple[Any, ...], int] = {}
    structure_id = [distinct.setdefault(_key(s), len(distinct)) for s in structures]
    profiles = kinds.profiles()
    tables: dict[str, np.ndarray] = {
        "dims": dims,
        "factor": np.asarray(structure_id, dtype=np.int64),
        "sub_chain": np.zeros((n, n, 6), dtype=np.float64),
        "sub_chain_t": np.zeros((n, n, 6), dtype=np.float64),
        "nnz": np.zeros((n, n), dtype=np.float64),
    }
    fold = bracketing.compiled()[0] if n > bracketing.COMPILE_FROM else bracketing.fold
    fold(
        dims, np.asarray(factor_kind, dtype=np.int64), np.array([s.nnz or 0.0 for s in structures]),
        kinds.table(), profiles["stored"], profiles["apply"], profiles["entries"], profiles["batched"],
        profiles["dense"], profiles["uses_nnz"], tables["sub_chain"], tables["sub_chain_t"], tables["nnz"],
    )  # fmt: skip
    return tables, kinds


_FORCED = {"optimal": 0, "forward": 1, "reverse": 2}


def _run(
    tables: dict[str, np.ndarray],
    coef: np.ndarray,
    moves: np.ndarray,
    order: str,
    best: tuple[np.ndarray, np.ndarray],
    split: np.ndarray,
) -> None:
    """Run the programme for ``order`` into ``best`` (the array and its transpose) and
    ``split`` (each run writes every cell it reads, so they serve the three orders in turn)."""
    n = tables["dims"].shape[0] - 1
    run = bracketing.compiled()[1] if n > bracketing.COMPILE_FROM else bracketing.bracket
    run(
        tables["dims"], tables["factor"], tables["sub_chain"], tables["sub_chain_t"], coef, moves,
        _FORCED[order], best[0], best[1], split,
    )  # fmt: skip


def _tree(split: np.ndarray, n: int) -> Bracketing:
    """The bracketing of ``0..n-1`` recorded in ``split`` (built without recursion)."""
    done: dict[tuple[int, int], Bracketing] = {}
    stack = [(0, n - 1)]
    while stack:
        i, j = stack[-1]
        if i == j:
            done[i, j] = i
            stack.pop()
            continue
        k = int(split[i, j])
        left, right = (i, k), (k + 1, j)
        missing = [s for s in (left, right) if s not in done]
        if missing:
            stack.extend(missing)
            continue
        done[i, j] = (done[left], done[right])
        stack.pop()
    return done[0, n - 1]


# A traced function or a training loop plans the same chain at every call, and a plan is
# immutable: plans are kept by the factors' structures without their batch size.
@functools.lru_cache(maxsize=512)
def _plan_core(key: tuple[tuple[Any, ...], ...]) -> _Core:
    structures = [Structure(kind, 0, m, n, scale, detail, nnz) for kind, scale, detail, m, n, nnz in key]
    n = len(structures)
    tables, kinds = _chain_tables(structures)
    coef, moves = kinds.rules()
    best = (np.zeros((n, n, 4), dtype=np.float64), np.zeros((n, n, 4), dtype=np.float64))
    split = np.full((n, n), -1, dtype=np.int64)
    costs = {}
    for order in ("optimal", "forward", "reverse"):
        _run(tables, coef, moves, order, best, split)
        costs[order] = _Cost(*best[0][0, n - 1].tolist()) if n > 1 else _Cost(0.0, 0.0, 0.0, 0.0)
        if order == "optimal":
            tree = _tree(split, n)
    last = kinds.examples[int(tables["sub_chain"][0, n - 1, bracketing.KIND])]
    nnz = float(tables["nnz"][0, n - 1]) if last.nnz is not None else None
    result = Structure(
        last.kind, 0, structures[0].out_size, structures[-1].in_size, last.scale, last.detail, nnz
    )
    return _Core(tree, _name(tree, n), costs["optimal"], costs["forward"], costs["reverse"], result)


def _key(s: Structure) -> tuple[Any, ...]:
    return (s.kind, s.scale, s.detail, s.out_size, s.in_size, s.nnz)


@functools.lru_cache(maxsize=512)
def _plan(structures: tuple[Structure, ...], itemsize: int) -> ChainPlan:
    core = _plan_core(tuple(_key(s) for s in structures))
    batch = structures[0].batch
    flops, nbytes = core.optimal.at(batch, itemsize)
    forward_flops, forward_bytes = core.forward.at(batch, itemsize)
    reverse_flops, reverse_bytes = core.reverse.at(batch, itemsize)
    r = core.result
    return ChainPlan(
        factors=structures,
        itemsize=itemsize,
        tree=core.tree,
        order=core.order,
        flops=flops,
        bytes=nbytes,
        forward_flops=forward_flops,
        forward_bytes=forward_bytes,
        reverse_flops=reverse_flops,
        reverse_bytes=reverse_bytes,
        result=Structure(r.kind, batch, r.out_size, r.in_size, r.scale, r.detail, r.nnz),
    )


def product_cost(J: Structure, K: Structure, itemsize: int = 8) -> tuple[int, int]:
    """``(flops, bytes)`` of ``J @ K`` at ``J.batch`` under the model of this module's
    docstring; ``itemsize`` is the element size of the result dtype.

    >>> import batchjac as bj
    >>> D, W = Structure(bj.Diagonal, 8, 5, 5), Structure(bj.Shared, 8, 5, 3)
    >>> product_cost(D, W, itemsize=8)  # a row scaling of W
    (120, 1400)
    """
    plan = plan_chain_descriptors([J, K], itemsize)
    return plan.flops, plan.bytes


# --------------------------------------------------------------------------------------
# Validation and the public functions
# --------------------------------------------------------------------------------------


def _check_adjacent(where: str, factors: Sequence[Any]) -> None:
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


def _require_factors(where: str, factors: Sequence[Any]) -> None:
    if len(factors) == 0:
        raise ValueError(f"{where}: expected at least one factor, got none")


def plan_chain_descriptors(descriptors: Sequence[Any], itemsize: int = 8) -> ChainPlan:
    """Plan the product ``J_L ... J_1`` from structures alone, without arrays.

    ``descriptors`` lists the factors left to right (``J_L`` first, ``J_1`` last), each a
    :class:`Structure` (``J.structure()`` gives one) or a tuple of its fields,
    ``(kind, batch, out_size, in_size)`` or ``(kind, batch, out_size, in_size, scale)``, with
    ``kind`` one of the classes ``Dense``, ``Diagonal``, ``Shared``, ``Identity``, ``Gather``
    and ``scale`` (identities only) ``"one"``, ``"number"`` or ``"per_sample"``.
    ``itemsize`` is the element size in bytes of the result dtype (8 for float64, 4 for
    float32). Returns a :class:`ChainPlan`; ``plan.tree`` indexes ``descriptors``. Raises
    ``ValueError`` when the chain is empty or adjacent factors disagree in size or batch.

    >>> import batchjac as bj
    >>> plan = plan_chain_descriptors([(bj.Shared, 64, 10, 1024), (bj.Diagonal, 64, 1024, 1024),
    ...                                (bj.Shared, 64, 1024, 784)], itemsize=4)
    >>> plan.order, plan.tree, plan.result.kind.__name__
    ('((J3 J2) J1)', ((0, 1), 2), 'Dense')
    """
    structures = tuple(d if isinstance(d, Structure) else Structure(*d) for d in descriptors)
    _require_factors("chain", structures)
    _check_adjacent("chain", structures)
    return _plan(structures, int(itemsize))


def _check_jacobians(where: str, Js: Sequence[Any]) -> None:
    _require_factors(where, Js)
    for i, J in enumerate(Js):
        if not isinstance(J, Jacobian):
            raise TypeError(
                f"{where}: factor {len(Js) - i} (argument {i + 1} of {len(Js)}) must be a "
                f"bj.Jacobian (Dense, Diagonal, Shared, Identity, ...), got {type(J).__name__}"
            )
    _check_adjacent(where, Js)


def _result_itemsize(Js: Sequence[Jacobian]) -> int:
    # An identity without a dtype of its own takes its partner's, so it does not count.
    dtypes = [J.dtype for J in Js if not getattr(J, "is_weak", False)]
    return np.result_type(*dtypes).itemsize if dtypes else np.dtype(np.float64).itemsize


def chain_plan(*Js: Jacobian) -> ChainPlan:
    """The cheapest bracketing of ``J_L @ ... @ J_1`` and the costs of every order.

    ``Js`` are the factors left to right, each a ``bj.Jacobian`` of shape ``(B, m_i, n_i)``
    with ``n_i == m_{i-1}``. Nothing is multiplied: the plan is made from kinds and sizes
    (see :class:`ChainPlan` for what it reports and :mod:`batchjac.structured.chain` for the
    costs), and kept for the next chain of the same structures at any batch size.

    >>> import numpy as np, batchjac as bj
    >>> W = bj.Shared(np.ones((2, 100)), batch=8)
    >>> D = bj.Diagonal(np.ones((8, 100)))
    >>> V = bj.Shared(np.ones((100, 50)), batch=8)
    >>> plan = bj.chain_plan(W, D, V)
    >>> plan.order, plan.flops, plan.forward_flops
    ('((J3 J2) J1)', 81600, 120000)
    """
    _check_jacobians("chain", Js)
    return plan_chain_descriptors([J.structure() for J in Js], _result_itemsize(Js))


def _multiply(tree: Bracketing, Js: Sequence[Jacobian]) -> Jacobian:
    """The product of ``Js`` in the bracketing ``tree`` (post-order, without recursion)."""
    results: list[Jacobian] = []
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            results.append(Js[item])
        elif item is _MULTIPLY:
            right = results.pop()
            left = results.pop()
            results.append(left @ right)
        else:
            stack.extend([_MULTIPLY, item[1], item[0]])
    return results[0]


_MULTIPLY = object()


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


def _check_vector(where: str, x: Any, batch: int, size: int, name: str, factor: int) -> Any:
    x = as_float_array(x, name)
    if tuple(x.shape) != (batch, size):
        raise ValueError(
            f"{where}: {name} must have shape ({batch}, {size}) to match factor {factor}, got {tuple(x.shape)}"
        )
    return x


def _factor_list(where: str, Js: Any) -> list[Any]:
    if isinstance(Js, Jacobian) or not isinstance(Js, (list, tuple)):
        raise TypeError(f"{where}: Js must be a list of Jacobians [J_L, ..., J_1], got {type(Js).__name__}")
    _check_jacobians(where, Js)
    return list(Js)


def chain_jvp(Js: Sequence[Jacobian], v: Any) -> Any:
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


def chain_vjp(Js: Sequence[Jacobian], u: Any) -> Any:
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
