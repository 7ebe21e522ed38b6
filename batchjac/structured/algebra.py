"""The algebra of structured Jacobians: one registry of product and sum rules, per pair of types.

``J @ K`` (J ``(B, m, k)``, K ``(B, k, n)``) and ``J + K`` (both ``(B, m, n)``) look up the
rule registered for the pair of types, most specific first (as ``functools.singledispatch``
does for one argument), and run it. A rule lives beside the type that introduces it
(``Diagonal @ Sparse`` in :mod:`batchjac.structured.sparse`), and declares, next to the code
that computes it:

- ``result``: the structure of the product or sum (a :class:`Kind`: the type, an identity's
  scale, the type's own detail); the sizes follow from the operands;
- ``cost`` (products only): a :class:`Cost`, the flops of the rule in a small vocabulary of
  terms, and whether it moves memory at all.

The chain planner (:mod:`batchjac.structured.chain`) reads these same declarations, so the
structure lattice and the cost model have this one home. Each type in turn declares a
:class:`Profile` of its structure: whether its values vary along the batch, and how many
numbers it stores, costs to apply to a vector, and holds as non-zero entries.

Generic rules (in :mod:`batchjac.structured.shared`) carry every pair that has no
structure-preserving rule: the product takes one operand's dense form (one stored dense
already, else the smaller) and applies the other to it (``J._apply_left(M)`` /
``K._apply_right(M)``, which never build a 0/1 or Kronecker matrix); the sum adds each
operand into a dense array (``J._add_into(out)``). Their result is ``Dense``, or ``Shared``
when neither operand varies along the batch. Every result has
the dtype NumPy's promotion gives for the operands' dtypes; an ``Identity`` without a dtype
of its own ("weak") takes its partner's.

The registered rules, as a table read from the registry (rows: left operand, columns: right
operand, entries: the structure of the result):

>>> print(product_table())  # doctest: +NORMALIZE_WHITESPACE
J @ K          Dense  Diagonal        Shared   Identity  Gather   Sparse   Kronecker       BlockDiagonal
Dense          Dense  Dense           Dense    <-        Dense    Dense    Dense           Dense
Diagonal       Dense  Diagonal        Dense    <-        Sparse   Sparse   BlockDiagonal?  BlockDiagonal
Shared         Dense  Dense           Shared   <-        Shared   Shared?  Shared?         Shared?
Identity       <-     <-              <-       <-        <-       <-       <-              <-
Gather         Dense  Sparse          Shared   <-        Gather   Sparse   Sparse?         Sparse
Sparse         Dense  Sparse          Shared?  <-        Sparse   Sparse   Sparse?         Sparse
Kronecker      Dense  BlockDiagonal?  Shared?  <-        Sparse?  Sparse?  Kronecker?      BlockDiagonal?
BlockDiagonal  Dense  BlockDiagonal   Shared?  <-        Sparse   Sparse   BlockDiagonal?  BlockDiagonal?
>>> print(sum_table())  # doctest: +NORMALIZE_WHITESPACE
J + K          Dense  Diagonal        Shared   Identity        Gather   Sparse   Kronecker       BlockDiagonal
Dense          Dense  Dense           Dense    Dense           Dense    Dense    Dense           Dense
Diagonal       Dense  Diagonal        Dense    Diagonal        Sparse   Sparse   BlockDiagonal?  BlockDiagonal?
Shared         Dense  Dense           Shared   Shared?         Shared   Shared?  Shared?         Shared?
Identity       Dense  Diagonal        Shared?  Identity        Sparse   Sparse   BlockDiagonal?  BlockDiagonal?
Gather         Dense  Sparse          Shared   Sparse          Sparse   Sparse   Sparse?         Sparse
Sparse         Dense  Sparse          Shared?  Sparse          Sparse   Sparse   Sparse?         Sparse
Kronecker      Dense  BlockDiagonal?  Shared?  BlockDiagonal?  Sparse?  Sparse?  Kronecker?      BlockDiagonal?
BlockDiagonal  Dense  BlockDiagonal?  Shared?  BlockDiagonal?  Sparse   Sparse   BlockDiagonal?  BlockDiagonal?

``<-``: the other operand, rescaled (itself for a plain identity). ``?``: it depends on the
operands. ``Shared?``: ``Shared`` when neither varies along the batch, else ``Dense``.
``Kronecker?``: a Kronecker product when the factor shapes match. ``BlockDiagonal?``:
block-diagonal when the blocks match (``I_S (x) R`` is ``S`` blocks ``R``; a sum with a
diagonal needs square blocks). ``Sparse?``: sparse when the Kronecker product has an
identity factor. Where the structure does not hold, the result is ``Sparse`` if both operands
have a sparse form, else ``Dense`` (or ``Shared``).

Registering a new type ``T``: define ``T`` (the methods listed in
:class:`batchjac.structured.base.Jacobian`, and ``profile``), then, beside it, its
structure-preserving rules::

    @register_product(Diagonal, T, result=T, cost=SCALING)
    def _diagonal_times_t(ops, D, X):  # ops: the backend serving the operands
        return T(...)

Pairs without a rule take the generic ones; nothing else needs editing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Union

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.structured.bracketing import estimated_entries, poly_value

if TYPE_CHECKING:  # base imports this module: the type is only named here
    from batchjac.structured.base import Jacobian

IDENTITY_SCALES = ("one", "number", "per_sample")

# --------------------------------------------------------------------------------------
# Structures: what the planner and the rules' declarations know of a Jacobian
# --------------------------------------------------------------------------------------


class Kind(NamedTuple):
    """The part of a structure that does not change with its sizes.

    ``cls`` is the Jacobian type; ``scale`` says how an ``Identity`` is scaled (``"one"``:
    the plain identity, ``"number"``, ``"per_sample"``); ``detail`` is the type's own
    hashable description (a ``Sparse``: whether its values vary along the batch; a
    ``Kronecker``: its factors' shapes and kinds; a ``BlockDiagonal``: its block shape).
    """

    cls: type[Jacobian]
    scale: str = "one"
    detail: tuple[Any, ...] = ()


class Poly(NamedTuple):
    """A count in the sizes of one sample: ``const + m*m_ + n*n_ + mn*m*n + nnz*nnz_``.

    ``m``, ``n``: the output and input sizes; ``nnz``: the stored entries of a sparse kind.
    A plain tuple of coefficients: the planner's compiled fold reads it as an array row.
    """

    const: float = 0
    m: float = 0
    n: float = 0
    mn: float = 0
    nnz: float = 0

    def __call__(self, m: Any, n: Any, nnz: Any = 0) -> Any:
        return poly_value(self, m, n, nnz)


ZERO, ONE, M, N, MN, NNZ = Poly(), Poly(const=1), Poly(m=1), Poly(n=1), Poly(mn=1), Poly(nnz=1)


class Profile(NamedTuple):
    """What a kind of structure costs, per sample, as counts in its sizes.

    ``batched``: its values vary along the batch (else one copy serves every sample);
    ``stored``: the numbers it stores (per sample when batched, once otherwise);
    ``apply``: the multiply-adds of applying it to one vector (``J v``);
    ``entries``: its structurally non-zero entries (estimates the pattern of sparse products);
    ``dense``: it is stored as a full matrix already, so densifying it costs nothing (the
    type's ``stored_dense``, filled in by :func:`profile_of`).
    """

    batched: bool
    stored: Poly
    apply: Poly
    entries: Poly
    dense: bool = False


@dataclass(frozen=True)
class Structure:
    """What the planner knows of a factor: kind, batch and sizes; no arrays.

    ``kind`` is a Jacobian class (``bj.Dense``, ``bj.Diagonal``, ``bj.Shared``,
    ``bj.Identity``, ``bj.Gather``, ``bj.Sparse``, ``bj.Kronecker``, ``bj.BlockDiagonal``);
    the factor is ``(batch, out_size, in_size)``. ``scale`` says how an ``Identity`` is
    scaled: ``"one"`` (the plain identity, which costs nothing), ``"number"`` or
    ``"per_sample"``; other kinds keep the default. ``detail`` is the kind's own description
    (see :class:`Kind`; ``J.structure()`` fills it in) and ``nnz`` the stored entries of a
    ``Sparse`` (an estimate for a planned product).

    >>> import batchjac as bj
    >>> from batchjac.structured.chain import Structure
    >>> Structure(bj.Shared, 64, 10, 1024).stored
    10240
    """

    kind: type[Jacobian]
    batch: int
    out_size: int
    in_size: int
    scale: str = "one"
    detail: tuple[Any, ...] = ()
    nnz: Union[int, float, None] = None

    def __post_init__(self) -> None:
        problem = getattr(self.kind, "structure_problem", None)
        if problem is None:
            raise ValueError(
                f"Structure: expected kind a bj.Jacobian type (Dense, Diagonal, Shared, Identity, Gather, "
                f"Sparse, Kronecker, BlockDiagonal), got {getattr(self.kind, '__name__', self.kind)!r}"
            )
        message = problem(self)
        if message is not None:
            raise ValueError(f"Structure: {message}")

    @classmethod
    def of(cls, J: Any) -> "Structure":
        """The structure of a Jacobian object (``J.structure()``)."""
        return J.structure()

    @property
    def key(self) -> Kind:
        """The size-free part, :class:`Kind`."""
        return Kind(self.kind, self.scale, self.detail)

    @property
    def profile(self) -> Profile:
        return profile_of(self.key)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.batch, self.out_size, self.in_size)

    @property
    def batched(self) -> bool:
        """True when the values vary along the batch."""
        return self.profile.batched

    def count(self, poly_name: str) -> float:
        """One of the profile's counts (``"stored"``, ``"apply"``, ``"entries"``) for one sample."""
        poly = getattr(self.profile, poly_name)
        return poly(self.out_size, self.in_size, self.nnz or 0)

    @property
    def stored(self) -> int:
        """How many numbers the structure stores for the whole batch (``B m n`` for ``Dense``,
        ``m n`` for ``Shared``, ``B n`` for ``Diagonal``, ``B`` or none for an ``Identity``)."""
        per = self.count("stored")
        return int(round(per * self.batch if self.batched else per))

    def describe(self) -> str:
        name = self.kind.__name__
        if self.scale != "one":
            return f"{name}[{self.scale}] {self.out_size}"
        if getattr(self.kind, "always_square", False):
            return f"{name} {self.in_size}"
        extra = f" nnz={self.nnz:g}" if self.nnz is not None else ""
        return f"{name} {self.out_size}x{self.in_size}{extra}"


@functools.lru_cache(maxsize=None)
def profile_of(kind: Kind) -> Profile:
    """The :class:`Profile` a type declares for ``kind`` (kept: profiles are pure); ``dense``
    is the type's ``stored_dense``."""
    return kind.cls.profile(kind)._replace(dense=kind.cls.stored_dense)


# --------------------------------------------------------------------------------------
# Costs: the vocabulary of the rules' declarations
# --------------------------------------------------------------------------------------


class Cost(NamedTuple):
    """The flops of a product rule (multiply-adds; a lone multiplication counts 1) as a sum of
    terms, each a multiple of a count of the operands ``J`` ``(m, k)``, ``K`` ``(k, n)`` and
    the result ``R``:

    - ``result``: per stored number of ``R`` (a scaling, a gather, a copy);
    - ``contraction``: ``m k n`` (a product of full matrices);
    - ``left``: ``apply(J) n``, J applied to each column of K's dense form;
    - ``right``: ``m apply(K)``, K applied to each row of J's dense form;
    - ``pairs``: ``entries(J) entries(K) / k``, the matching entry pairs of two sparse patterns;
    - ``fallback``: the generic product: ``left`` when K is stored dense, else ``right`` when
      J is, else the side whose dense form is smaller (as :func:`generic_product` does);
    - ``constant``: flops fixed by the kinds alone (products of Kronecker factors, of blocks).

    The flops count once per sample when ``R`` varies along the batch, once otherwise.
    ``moves=False``: the rule returns an operand as it is (no flops, no memory traffic);
    else it reads both operands' stored numbers and writes the result's (plus the dense
    intermediate of ``fallback``).
    """

    result: float = 0
    contraction: float = 0
    left: float = 0
    right: float = 0
    pairs: float = 0
    fallback: float = 0
    constant: float = 0
    moves: bool = True


FREE = Cost(moves=False)
SCALING = Cost(result=1)
CONTRACTION = Cost(contraction=1)
FALLBACK = Cost(fallback=1)
PAIRS = Cost(pairs=1)
LEFT = Cost(left=1)
RIGHT = Cost(right=1)

COST_TERMS = ("result", "contraction", "left", "right", "pairs", "fallback", "constant")

# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

Declared = Union["type[Jacobian]", Kind, Callable[[Structure, Structure], Union["type[Jacobian]", Kind]]]


@dataclass(frozen=True)
class Rule:
    """A registered product or sum rule for ``(left, right)`` operand types."""

    left: type[Jacobian]
    right: type[Jacobian]
    compute: Callable[..., Any]
    result: Callable[[Structure, Structure], Kind]
    cost: Callable[[Structure, Structure], Cost]
    priority: int = 0
    label: Callable[[type[Jacobian], type[Jacobian]], str] = lambda left, right: "?"


def _as_kind(declared: Any) -> Kind:
    return declared if isinstance(declared, Kind) else Kind(declared)


def _declaration(value: Any) -> Callable[[Structure, Structure], Kind]:
    if callable(value) and not isinstance(value, type):
        return lambda J, K: _as_kind(value(J, K))
    return lambda J, K: _as_kind(value)


def _cost_declaration(value: Any) -> Callable[[Structure, Structure], Cost]:
    return value if callable(value) and not isinstance(value, Cost) else (lambda J, K: value)


class _Registry:
    """Rules per ``(left type, right type)``; lookups resolve subclasses and are kept."""

    def __init__(self, name: str, commutative: bool):
        self.name = name
        self.commutative = commutative
        self.rules: dict[tuple[type[Jacobian], type[Jacobian]], Rule] = {}
        self._resolved: dict[tuple[type[Jacobian], type[Jacobian]], tuple[Rule, bool]] = {}

    def add(self, rule: Rule) -> None:
        if (rule.left, rule.right) in self.rules:
            raise ValueError(f"{self.name}: a rule for ({rule.left.__name__}, {rule.right.__name__}) exists")
        self.rules[rule.left, rule.right] = rule
        self._resolved.clear()

    def resolve(self, left: type[Jacobian], right: type[Jacobian]) -> tuple[Rule, bool]:
        """The rule for ``(left, right)`` and whether it takes the operands swapped (sums
        commute). The most specific applicable rule wins: one whose left and right types are
        both subclasses of another's is preferred; between rules neither of which is more
        specific, the higher ``priority`` wins (an identity factor scales whatever it meets)."""
        key = (left, right)
        if key not in self._resolved:
            self._resolved[key] = self._most_specific(left, right)
        return self._resolved[key]

    def _most_specific(self, left: type[Jacobian], right: type[Jacobian]) -> tuple[Rule, bool]:
        candidates = [
            (r, False) for (a, b), r in self.rules.items() if issubclass(left, a) and issubclass(right, b)
        ]
        if self.commutative:
            candidates += [
                (r, True)
                for (a, b), r in self.rules.items()
                if (a, b) != (b, a) and issubclass(right, a) and issubclass(left, b)
            ]
        if not candidates:
            raise TypeError(f"{self.name}: no rule for {left.__name__} and {right.__name__}")

        def types(c: tuple[Rule, bool]) -> tuple[type[Jacobian], type[Jacobian]]:
            rule, swapped = c
            return (rule.right, rule.left) if swapped else (rule.left, rule.right)

        def dominates(c: tuple[Rule, bool], d: tuple[Rule, bool]) -> bool:
            (a1, b1), (a2, b2) = types(c), types(d)
            return issubclass(a1, a2) and issubclass(b1, b2) and (a1, b1) != (a2, b2)

        best = [c for c in candidates if not any(dominates(d, c) for d in candidates)]
        top = max(c[0].priority for c in best)
        best = [c for c in best if c[0].priority == top]
        if len({id(c[0]) for c in best}) > 1:
            names = ", ".join(f"({a.__name__}, {b.__name__})" for a, b in map(types, best))
            raise TypeError(f"{self.name}: ambiguous rules for {left.__name__} and {right.__name__}: {names}")
        return best[0]


PRODUCTS = _Registry("matmul", commutative=False)
SUMS = _Registry("add", commutative=True)


Label = Union[str, Callable[["type[Jacobian]", "type[Jacobian]"], str], None]


def _label(result: Any, label: Label) -> Callable[[type[Jacobian], type[Jacobian]], str]:
    if callable(label):
        return label
    if label is None:
        if not isinstance(result, type):
            raise TypeError("register: a rule whose result is a function needs a label for the tables")
        label = result.__name__
    return lambda left, right: label


def register_product(
    left: type[Jacobian],
    right: type[Jacobian],
    *,
    result: Declared,
    cost: Any,
    priority: int = 0,
    label: Label = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``compute(ops, J, K) -> Jacobian`` as the rule for ``J @ K`` with ``J`` a
    ``left`` and ``K`` a ``right`` (or subclasses of them).

    ``result``: the structure of the product, a type, a :class:`Kind`, or a function of the
    operands' :class:`Structure` objects returning one (it may only read their kinds:
    ``kind``, ``scale``, ``detail``, ``batched``). ``cost``: a :class:`Cost` or such a
    function returning one. ``priority`` breaks ties between rules neither of which is more
    specific than the other. ``label`` names the result in the tables (``"Shared?"``: it
    depends on the operands); a type's name by default.
    """
    rule_label = _label(result, label)

    def decorate(compute: Callable[..., Any]) -> Callable[..., Any]:
        PRODUCTS.add(
            Rule(left, right, compute, _declaration(result), _cost_declaration(cost), priority, rule_label)
        )
        return compute

    return decorate


def register_sum(
    left: type[Jacobian], right: type[Jacobian], *, result: Declared, priority: int = 0, label: Label = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``compute(ops, J, K) -> Jacobian`` as the rule for ``J + K`` (and ``K + J``:
    sums commute, the rule receives the operands in its declared order)."""
    rule_label = _label(result, label)

    def decorate(compute: Callable[..., Any]) -> Callable[..., Any]:
        SUMS.add(Rule(left, right, compute, _declaration(result), lambda J, K: FREE, priority, rule_label))
        return compute

    return decorate


# --------------------------------------------------------------------------------------
# The generic functions
# --------------------------------------------------------------------------------------


def _check_batches(what: str, J: Any, K: Any) -> None:
    if J.batch != K.batch:
        raise ValueError(
            f"{what}: the left operand has batch {J.batch} but the right operand has batch {K.batch}"
        )


def backend_of(J: Any, K: Any) -> Any:
    """The backend serving a product or sum of ``J`` and ``K`` (checks they share a device)."""
    left, right = J._arrays(), K._arrays()
    return select_backend(
        *left, *right, names=lambda: ("the left operand",) * len(left) + ("the right operand",) * len(right)
    )


def result_dtype(*Js: Any) -> Any:
    """NumPy's promotion of the operands' dtypes; an identity without a dtype of its own does
    not take part (None when no operand has one)."""
    dtypes = [J.dtype for J in Js if not getattr(J, "is_weak", False)]
    if not dtypes:
        return None
    first = dtypes[0]
    if first.isnative and all(d == first for d in dtypes):
        return first  # one native dtype: nothing to promote (the common case)
    return np.result_type(*dtypes)


def _promoted(R: Any, dtype: Any) -> Any:
    return R if dtype is None or R.dtype == dtype else R.astype(dtype)


def _in_dtype(J: Any, dtype: Any) -> Any:
    """``J`` in the result dtype, so that the rule computes in it (as NumPy's promotion does)."""
    if dtype is None or getattr(J, "is_weak", False) or J.dtype == dtype:
        return J
    return J.astype(dtype)


def matmul(J: Any, K: Any, ops: Any = None) -> Any:
    """``J @ K`` per sample by the registered rule for the pair (see this module's table).
    ``ops``: the backend, when the caller has chosen it for both (an interpreter does once
    per call); found from the operands otherwise.

    >>> import numpy as np, batchjac as bj
    >>> D = bj.Diagonal(np.array([[2.0, 3.0]]))
    >>> W = bj.Shared(np.array([[1.0, 1.0], [0.0, 1.0]]), batch=1)
    >>> (D @ W).to_dense().tolist()
    [[[2.0, 2.0], [0.0, 3.0]]]
    """
    _check_batches("matmul", J, K)
    if J.in_size != K.out_size:
        raise ValueError(
            f"matmul: the left operand {J.shape} has input size {J.in_size} but the right "
            f"operand {K.shape} has output size {K.out_size}"
        )
    rule, _ = PRODUCTS.resolve(type(J), type(K))
    # result_dtype and _in_dtype for two operands, each dtype read once (a call of the
    # structured interpreter makes one product per chain factor)
    dJ = None if getattr(J, "is_weak", False) else J.dtype
    dK = None if getattr(K, "is_weak", False) else K.dtype
    if dJ is None or dK is None:
        dtype = dK if dJ is None else dJ
        if dtype is not None and not dtype.isnative:
            dtype = np.result_type(dtype)
    else:
        dtype = dJ if dJ == dK and dJ.isnative else np.result_type(dJ, dK)
    if dJ is not None and dJ != dtype:
        J = J.astype(dtype)
    if dK is not None and dK != dtype:
        K = K.astype(dtype)
    R = rule.compute(backend_of(J, K) if ops is None else ops, J, K)
    return R if dtype is None or R.dtype == dtype else R.astype(dtype)


def add(J: Any, K: Any) -> Any:
    """``J + K`` per sample by the registered rule for the pair (see this module's table).

    >>> import numpy as np, batchjac as bj
    >>> (bj.Identity(2, batch=1) + bj.Diagonal(np.array([[1.0, 2.0]]))).diagonal().tolist()
    [[2.0, 3.0]]
    """
    _check_batches("add", J, K)
    if (J.out_size, J.in_size) != (K.out_size, K.in_size):
        raise ValueError(f"add: the operands' shapes differ: left {J.shape}, right {K.shape}")
    rule, swapped = SUMS.resolve(type(J), type(K))
    dtype = result_dtype(J, K)
    J, K = _in_dtype(J, dtype), _in_dtype(K, dtype)
    ops = backend_of(J, K)
    R = rule.compute(ops, K, J) if swapped else rule.compute(ops, J, K)
    return _promoted(R, dtype)


def product_structure(J: Structure, K: Structure) -> Structure:
    """The structure of ``J @ K`` as its rule declares it: ``(B, m, k) @ (B, k, n) -> (B, m, n)``.

    >>> import batchjac as bj
    >>> R = product_structure(Structure(bj.Diagonal, 8, 5, 5), Structure(bj.Shared, 8, 5, 3))
    >>> R.kind.__name__, R.shape
    ('Dense', (8, 5, 3))
    """
    rule, _ = PRODUCTS.resolve(J.kind, K.kind)
    kind = rule.result(J, K)
    nnz = None
    if profile_of(kind).stored.nnz:
        nnz = estimated_entries(J.count("entries"), K.count("entries"), J.in_size, J.out_size, K.in_size)
    return Structure(kind.cls, J.batch, J.out_size, K.in_size, kind.scale, kind.detail, nnz)


def product_cost_terms(J: Structure, K: Structure) -> Cost:
    """The :class:`Cost` the rule for ``J @ K`` declares."""
    rule, _ = PRODUCTS.resolve(J.kind, K.kind)
    return rule.cost(J, K)


def sum_structure(J: Structure, K: Structure) -> Structure:
    """The structure of ``J + K`` as its rule declares it (sizes of the operands)."""
    rule, swapped = SUMS.resolve(J.kind, K.kind)
    kind = rule.result(K, J) if swapped else rule.result(J, K)
    nnz = None
    if profile_of(kind).stored.nnz:
        nnz = float(min(J.out_size * J.in_size, J.count("entries") + K.count("entries")))
    return Structure(kind.cls, J.batch, J.out_size, J.in_size, kind.scale, kind.detail, nnz)


# --------------------------------------------------------------------------------------
# The tables of this module's docstring, read from the registry
# --------------------------------------------------------------------------------------


def _table(title: str, registry: _Registry, kinds: list[type[Jacobian]]) -> str:
    rows = [[title] + [k.__name__ for k in kinds]]
    for left in kinds:
        row = [left.__name__]
        for right in kinds:
            rule, swapped = registry.resolve(left, right)
            row.append(rule.label(right, left) if swapped else rule.label(left, right))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _kinds() -> list[type[Jacobian]]:
    seen: dict[type[Jacobian], None] = {}
    for a, b in list(PRODUCTS.rules) + list(SUMS.rules):
        for t in (a, b):
            if "profile" in t.__dict__:  # a concrete type, not the base class
                seen.setdefault(t, None)
    return sorted(seen, key=lambda t: t.table_order)


def product_table() -> str:
    """The product rules as a table: the structure of ``J @ K`` for every pair of types."""
    return _table("J @ K", PRODUCTS, _kinds())


def sum_table() -> str:
    """The sum rules as a table: the structure of ``J + K`` for every pair of types."""
    return _table("J + K", SUMS, _kinds())
