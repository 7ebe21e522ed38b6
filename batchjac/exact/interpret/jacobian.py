"""The structured-Jacobian interpreter: values, local Jacobians, and their assembly.

Running a program forward, each equation computes its value and, for every input that
depends on the differentiated ones, its structured local Jacobian (a graph edge
``(B, out_size, in_size)``). Assembly then eliminates the intermediate vertices of that
graph (Griewank's vertex elimination): a maximal chain of single-input, single-output
vertices is multiplied as one chain product in the cheapest order (the planner of
:mod:`batchjac.structured.chain`), parallel edges are summed (the total derivative), and any
vertex left with several inputs and outputs is eliminated by pairwise products, the one
with the fewest products first.

Memory: a value is freed after its last use (the local Jacobians keep what they need), and
a diagonal edge after diagonal edges is multiplied out at once, so that a deep element-wise
chain holds one diagonal.

Plans: the order of eliminations depends only on the program's structure, so it is found
once per structure (:attr:`Program.key` and the differentiated inputs) and replayed on
later calls, whatever the batch size; :data:`PLAN_CACHE` holds the plans and
:data:`PLANNING_COUNT` counts how often one was made.
"""

from __future__ import annotations

import builtins
import numbers
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import numpy as np

from batchjac.backends.dispatch import select_backend
from batchjac.core.arrays import namespace
from batchjac.exact.ir import Program, Var
from batchjac.structured import algebra
from batchjac.structured.chain import chain_plan
from batchjac.structured.types import Diagonal, Identity, Jacobian, Shared

# edges[child][parent]: the local Jacobian d child / d parent (a graph of structured Jacobians)
Edges = dict[Var, dict[Var, Jacobian]]

PLAN_CACHE: dict[tuple[Any, int, tuple[int, ...]], AssemblyPlan] = {}
PLAN_CACHE_SIZE = 512
PLANNING_COUNT = [0]


@dataclass
class AssemblyPlan:
    """How a traced Jacobian was assembled: the chain products and vertex eliminations.

    ``chains`` holds the :class:`~batchjac.structured.chain.ChainPlan` of each chain product;
    ``steps`` describes every step in order; ``path`` is ``"chain"`` (structured local
    Jacobians) or ``"fused"`` (one compiled kernel), and ``reason`` says why.
    """

    steps: list[str] = field(default_factory=list)
    chains: list[Any] = field(default_factory=list)  # ChainPlan objects
    path: str = "chain"
    reason: str = ""
    actions: list[tuple[Any, ...]] = field(
        default_factory=list
    )  # replayable: ("chain", sink, path, source) | ("eliminate", v)

    @property
    def order(self) -> str:
        """The bracketing of each chain product, e.g. ``"(((J4 J3) J2) J1)"``."""
        orders = [getattr(plan, "order", str(plan)) for plan in self.chains]
        return "; ".join(orders) if orders else "no products (a single local Jacobian)"

    @property
    def flops(self) -> int:
        return int(builtins.sum(getattr(plan, "flops", 0) for plan in self.chains))

    def explain(self) -> str:
        head = f"path: {self.path}" + (f" ({self.reason})" if self.reason else "")
        body = "\n".join(f"{i + 1}. {step}" for i, step in enumerate(self.steps)) or "nothing to assemble"
        return f"{head}\n{body}"

    def __str__(self) -> str:
        return self.explain()


def _xp_of(values: Sequence[Any]) -> Any:
    arrays = [v for v in values if hasattr(v, "shape")]
    return namespace(*arrays) if arrays else np


class _Step(NamedTuple):
    """One equation as :func:`forward` runs it: how to read its operands (``get``, None when
    one is a literal, read from the program: literal values are not part of the key), their
    slots (-1: a literal), the operands it computes local Jacobians for (``wanted``) and those
    whose local Jacobian is the identity (``units``: their edges pass on, nothing is
    computed), the slots freed after it, and its work specialised to the avals, namespace
    and backend (``run``: :meth:`Primitive.jacobian_step` ``(values, batch, operands) -> (value,
    {i: J})`` when ``wanted``, else :meth:`Primitive.value_step` ``values -> value``)."""

    get: Any
    refs: tuple[int, ...]
    wanted: tuple[int, ...]
    units: tuple[int, ...]
    frees: tuple[int, ...]
    run: Any


@dataclass
class _Schedule:
    """What :func:`forward` needs of a program's structure, found once per structure
    (:attr:`Program.key` and ``wrt``), namespace and backend: the steps and the number of
    variable slots."""

    steps: list[_Step]
    slots: int


def _getter(refs: tuple[int, ...]) -> Any:
    """``env -> [env[r] for r in refs]`` in C (``operator.itemgetter``)."""
    if len(refs) == 1:
        (r,) = refs
        return lambda env: [env[r]]
    get = operator.itemgetter(*refs)
    return lambda env: list(get(env))


_SCHEDULES: dict[tuple[Any, ...], _Schedule] = {}
_SCHEDULES_SIZE = 512


def _schedule(program: Program, wrt: Sequence[Var], xp: Any, ops: Any) -> _Schedule:
    key = (program.key, tuple(v.index for v in wrt), xp.__name__, ops)
    found = _SCHEDULES.get(key)
    if found is not None:
        return found
    active = program.active(wrt)
    last = program.last_uses()
    steps = []
    with_edges: set[Var] = set()  # variables that will have edges (computed from active ones)
    for k, eq in enumerate(program.equations):
        refs = tuple(o.index if isinstance(o, Var) else -1 for o in eq.inputs)
        wanted = tuple(i for i, o in enumerate(eq.inputs) if isinstance(o, Var) and o in active)
        if eq.out not in active:
            wanted = ()
        params, primitive = eq.kwargs, eq.primitive
        units = tuple(
            i for i in wanted if eq.inputs[i] in with_edges and primitive.unit_partial(eq.inputs, eq.out, i, **params)
        )
        if wanted:
            with_edges.add(eq.out)
        frees = tuple(sorted({o.index for o in eq.inputs if isinstance(o, Var) and last.get(o) == k}))
        rest = tuple(i for i in wanted if i not in units)
        if rest:
            run = primitive.jacobian_step(eq.inputs, eq.out, rest, xp, ops, **params)
        else:  # params are static (part of the key): the step has them
            run = primitive.value_step(eq.inputs, eq.out, xp, **params)
        steps.append(_Step(None if -1 in refs else _getter(refs), refs, rest, units, frees, run))
    variables = [*program.inputs, *program.consts, *(eq.out for eq in program.equations)]
    found = _Schedule(steps, 1 + max((v.index for v in variables), default=-1))
    if len(_SCHEDULES) >= _SCHEDULES_SIZE:
        _SCHEDULES.pop(next(iter(_SCHEDULES)))
    _SCHEDULES[key] = found
    return found


def forward(
    program: Program,
    inputs: Sequence[Any],
    consts: Sequence[Any],
    wrt: Sequence[Var],
    batch: int,
    ops: Any = None,
) -> tuple[list[Any], Edges]:
    """Values and local Jacobians: ``(output value, edges)`` with ``edges[child][parent] = J``;
    ``ops``: the call's backend (chosen from the arrays when None)."""
    arrays = [a for a in (*inputs, *consts) if hasattr(a, "shape")]
    xp = _xp_of(arrays)  # one device for the whole call (checked where the call began)
    if ops is None:
        ops = select_backend(*arrays)
    schedule = _schedule(program, wrt, xp, ops)
    env: list[Any] = [None] * schedule.slots
    for v, a in zip(program.inputs, inputs):
        env[v.index] = a
    for v, a in zip(program.consts, consts):
        env[v.index] = a
    edges: Edges = {}
    for (get, refs, wanted, units, frees, run), eq in zip(schedule.steps, program.equations):
        if get is None:  # a literal operand: its value is this program's (not part of the key)
            values = [env[r] if r >= 0 else o.value for r, o in zip(refs, eq.inputs)]  # type: ignore[union-attr]
        else:
            values = get(env)
        out = eq.out
        if wanted:
            value, local = run(values, batch, eq.inputs)
            parents: dict[Var, Jacobian] = {}
            for i, J in local.items():
                operand = cast(Var, eq.inputs[i])  # wanted: the Var operands only
                if not isinstance(J, Diagonal) or operand not in edges:
                    parents[operand] = parents[operand] + J if operand in parents else J  # (the common case)
                    continue
                for node, K in _compose_diagonal(operand, J, edges):
                    parents[node] = parents[node] + K if node in parents else K
        else:
            value = run(values)
            parents = {}
        for i in units:  # d out / d operand = I: out depends on the operand's parents as it does
            for node, K in edges[cast(Var, eq.inputs[i])].items():
                parents[node] = parents[node] + K if node in parents else K
        if parents:
            edges[out] = parents
        env[out.index] = value
        for r in frees:
            env[r] = None
    return [env[v.index] for v in program.outputs], edges


def _compose_diagonal(node: Var, J: Jacobian, edges: Edges) -> list[tuple[Var, Jacobian]]:
    """Edges for a local Jacobian ``J`` w.r.t. ``node``: ``[(node, J)]``, or, when ``J`` and
    all of ``node``'s own edges are diagonal, ``[(parent, J @ D_parent), ...]``: a product of
    diagonals costs the same whenever it is done, and doing it now frees the intermediate."""
    parents = edges.get(node)
    if isinstance(J, Diagonal) and parents and all(isinstance(D, Diagonal) for D in parents.values()):
        if len(parents) == 1:
            ((parent, D),) = parents.items()
            return [(parent, J if _is_unit_for(D, J) else J @ D)]
        return [(parent, J @ D) for parent, D in parents.items()]
    return [(node, J)]


def _is_unit_for(D: Jacobian, J: Jacobian) -> bool:
    """True when ``J @ D`` is ``J`` itself: ``D`` the plain identity in ``J``'s dtype."""
    return type(D) is Identity and D.is_unit and (D.is_weak or D.dtype == J.dtype)


def _multiply_tree(tree: Any, factors: Sequence[Jacobian], ops: Any = None) -> Jacobian:
    """The product of ``factors`` (left to right) by the bracketing ``tree`` of a chain plan
    (``ops``: the call's backend, chosen once)."""
    if isinstance(tree, int):
        return factors[tree]
    left, right = tree
    return algebra.matmul(_multiply_tree(left, factors, ops), _multiply_tree(right, factors, ops), ops)


def assemble(
    program: Program,
    output: Var,
    wrt: Sequence[Var],
    edges: Edges,
    batch: int,
    dtype: Any,
    xp: Any,
    ops: Any = None,
) -> tuple[list[Jacobian], AssemblyPlan]:
    """The Jacobian of ``output`` w.r.t. each of ``wrt`` from the local Jacobians ``edges``,
    by a cached plan when this structure was assembled before. Returns ``(jacobians, plan)``.
    ``ops``: the call's backend for the chain products (found per product when None)."""
    key = (program.key, output.index, tuple(v.index for v in wrt))
    cached = PLAN_CACHE.get(key)
    if cached is None or any(action[0] == "eliminate" for action in cached.actions):
        # dead ends (a value composed away, an unused result) drop out: planning and vertex
        # eliminations see every edge of a vertex; a chain product takes its own edges only
        edges = _reachable(edges, output)
    by_index = _vertices_by_index(edges)
    plan = AssemblyPlan()
    if cached is not None:  # replay: the same products in the same brackets, no planning
        plan.steps, plan.actions, plan.chains = cached.steps, cached.actions, cached.chains
        for action in cached.actions:
            if action[0] == "chain":
                _, sink, path, source, tree = action
                _multiply_path(
                    edges, by_index[sink], [by_index[u] for u in path], by_index[source], plan, tree, ops
                )
            else:
                _eliminate_vertex(edges, by_index[action[1]])
    else:
        PLANNING_COUNT[0] += 1
        _plan_and_assemble(edges, set(wrt) | {output}, plan)
        if len(PLAN_CACHE) >= PLAN_CACHE_SIZE:
            PLAN_CACHE.pop(next(iter(PLAN_CACHE)))
        PLAN_CACHE[key] = AssemblyPlan(
            steps=list(plan.steps), actions=list(plan.actions), chains=list(plan.chains)
        )
    result: list[Jacobian] = []
    for node in wrt:
        if node is output:
            result.append(Identity(node.size, batch, dtype=dtype, device=_device(xp)))
        elif node in edges.get(output, {}):
            result.append(edges[output][node])
        else:
            result.append(Shared(xp.zeros((output.size, node.size), dtype=dtype), batch))
    return result, plan


def _reachable(edges: Edges, output: Var) -> Edges:
    """The edges on paths that end at ``output``."""
    kept: Edges = {}
    stack, seen = [output], {output}
    while stack:
        node = stack.pop()
        parents = edges.get(node)
        if not parents:
            continue
        kept[node] = parents
        for parent in parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return kept


def _device(xp: Any) -> str:
    return "cpu" if xp is np else "gpu"


def _vertices_by_index(edges: Edges) -> dict[int, Var]:
    found: dict[int, Var] = {}
    for child, parents in edges.items():
        found[child.index] = child
        for p in parents:
            found[p.index] = p
    return found


def _plan_and_assemble(edges: Edges, protected: set[Var], plan: AssemblyPlan) -> None:
    while True:
        inner = [v for v in _vertices(edges) if v not in protected]
        if not inner:
            return
        if not _eliminate_chains(edges, inner, plan):
            vertex = min(inner, key=lambda v: (_markowitz(edges, v), v.index))
            plan.steps.append(
                f"eliminate shared vertex {vertex.type_text()}: {_markowitz(edges, vertex)} pairwise products"
            )
            plan.actions.append(("eliminate", vertex.index))
            _eliminate_vertex(edges, vertex)


def _vertices(edges: Edges) -> list[Var]:
    seen: dict[Var, None] = {}
    for child, parents in edges.items():
        seen[child] = None
        for p in parents:
            seen[p] = None
    return list(seen)


def _children(edges: Edges, v: Var) -> list[Var]:
    return [c for c, parents in edges.items() if v in parents]


def _markowitz(edges: Edges, v: Var) -> int:
    return len(edges.get(v, ())) * len(_children(edges, v))


def _add_edge(edges: Edges, child: Var, parent: Var, J: Jacobian) -> None:
    parents = edges.setdefault(child, {})
    parents[parent] = parents[parent] + J if parent in parents else J


def _eliminate_chains(edges: Edges, inner: Sequence[Var], plan: AssemblyPlan) -> bool:
    """Multiply out every maximal path of single-in, single-out vertices; False if none."""
    links = {v for v in inner if len(edges.get(v, ())) == 1 and len(_children(edges, v)) == 1}
    if not links:
        return False
    for v in sorted(links, key=lambda v: v.index):
        if v not in links:
            continue
        while (child := _children(edges, v)[0]) in links:
            v = child
        sink = child
        path = [v]
        while (parent := next(iter(edges[path[-1]]))) in links:
            path.append(parent)
        source = parent
        _multiply_path(edges, sink, path, source, plan)
        links.difference_update(path)
    return True


def _multiply_path(
    edges: Edges,
    sink: Var,
    path: Sequence[Var],
    source: Var,
    plan: AssemblyPlan,
    tree: Any = None,
    ops: Any = None,
) -> None:
    """Multiply the chain ``sink <- path <- source`` into one edge: planned (``tree`` None:
    the planner's cheapest bracketing, recorded in ``plan``) or replayed by ``tree``."""
    factors = [edges[sink].pop(path[0])]
    for u in path:
        (J,) = edges.pop(u).values()
        factors.append(J)
    if not edges[sink]:
        del edges[sink]
    if tree is None:
        chain_plan_ = chain_plan(*factors)
        tree = chain_plan_.tree
        plan.chains.append(chain_plan_)
        plan.actions.append(("chain", sink.index, tuple(u.index for u in path), source.index, tree))
        merged = source in edges.get(sink, {})
        plan.steps.append(
            f"chain of {len(factors)} factors {' '.join(type(J).__name__ for J in factors)}: "
            f"{chain_plan_.order}" + (", summed with a parallel path" if merged else "")
        )
    _add_edge(edges, sink, source, _multiply_tree(tree, factors, ops))


def _eliminate_vertex(edges: Edges, v: Var) -> None:
    incoming = edges.pop(v)
    for child in _children(edges, v):
        out = edges[child].pop(v)
        for parent, J in incoming.items():
            _add_edge(edges, child, parent, out @ J)


def value_and_jacobians(
    program: Program, inputs: Sequence[Any], consts: Sequence[Any], wrt: Sequence[Var], batch: int
) -> tuple[Any, list[Jacobian], AssemblyPlan]:
    """``(output value, [J w.r.t. each of wrt], plan)`` for a program of one output."""
    ops = select_backend(*[a for a in (*inputs, *consts) if hasattr(a, "shape")])  # once for the call
    (value,), edges = forward(program, inputs, consts, wrt, batch, ops)
    output = program.outputs[0]
    xp = namespace(value) if hasattr(value, "shape") else np
    jacobians, plan = assemble(program, output, list(wrt), edges, batch, output.dtype, xp, ops)
    return value, jacobians, plan


def is_number(v: object) -> bool:
    return isinstance(v, numbers.Number)
