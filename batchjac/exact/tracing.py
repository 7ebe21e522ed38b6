"""Tracing: record ``f`` as a graph of structured local Jacobians, then assemble its Jacobian.

Calling ``f`` on :class:`Traced` inputs runs it for real (every value is computed) and
records, for each result of batchjac's array functions, a :class:`Node` holding the
structured local Jacobian with respect to each traced operand. Nodes link to their
parents only; there is no global tape, and intermediate *values* are freed as soon as
``f`` drops them: only local Jacobians stay alive until assembly.

Assembly eliminates the intermediate vertices of the graph (Griewank's vertex
elimination): a maximal chain of single-input, single-output vertices is multiplied as
one chain product in the cheapest order, parallel edges are summed (the total
derivative), and any vertex left with several inputs and outputs is eliminated by
pairwise products, the one with the fewest products first.
"""

from __future__ import annotations

import builtins
import itertools
from dataclasses import dataclass, field

import numpy as np

from batchjac.core.errors import TraceError
from batchjac.structured.types import Diagonal, Identity, Jacobian, Shared

_ids = itertools.count()


class Node:
    """One traced array: its per-sample shape and local Jacobians ``{parent: J}``.

    Each ``J`` maps the parent's flattened per-sample vector to this node's:
    ``(B, size, parent.size)``.
    """

    __slots__ = ("id", "shape", "size", "parents", "__weakref__")

    def __init__(self, shape: tuple, parents: dict):
        self.id = next(_ids)
        self.shape = tuple(shape)
        self.size = int(np.prod(shape[1:], dtype=np.int64))
        self.parents = parents

    def __repr__(self):
        return f"Node({self.id}, shape={self.shape})"


class Traced:
    """An array under tracing: its value ``(B, ...)`` and its :class:`Node` in the graph.

    Arithmetic operators and batchjac's array functions accept it; NumPy functions do
    not (they would drop the derivative), and raise :class:`TraceError`.
    """

    __slots__ = ("value", "node")

    def __init__(self, value, node: Node):
        self.value = value
        self.node = node

    # -- array attributes ----------------------------------------------------------------
    @property
    def shape(self):
        return self.value.shape

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def size(self):
        return self.value.size

    def __len__(self):
        return len(self.value)

    def __repr__(self):
        return f"Traced(shape={self.shape}, dtype={self.dtype})"

    # -- operators (the rules live in batchjac.exact.functions) --------------------------------
    def __add__(self, other):
        return _fn().add(self, other)

    def __radd__(self, other):
        return _fn().add(other, self)

    def __sub__(self, other):
        return _fn().subtract(self, other)

    def __rsub__(self, other):
        return _fn().subtract(other, self)

    def __mul__(self, other):
        return _fn().multiply(self, other)

    def __rmul__(self, other):
        return _fn().multiply(other, self)

    def __truediv__(self, other):
        return _fn().divide(self, other)

    def __rtruediv__(self, other):
        return _fn().divide(other, self)

    def __pow__(self, other):
        return _fn().power(self, other)

    def __rpow__(self, other):
        return _fn().power(other, self)

    def __matmul__(self, other):
        return _fn().matmul(self, other)

    def __rmatmul__(self, other):
        return _fn().matmul(other, self)

    def __neg__(self):
        return _fn().negative(self)

    def __pos__(self):
        return self

    def __getitem__(self, key):
        return _fn().take(self, key)

    def reshape(self, *shape):
        return _fn().reshape(self, shape[0] if len(shape) == 1 else shape)

    def sum(self, axis=None, keepdims=False):
        return _fn().sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _fn().mean(self, axis, keepdims)

    def __abs__(self):
        return _fn().abs(self)

    # Comparisons give plain boolean arrays: they are not differentiable.
    def __gt__(self, other):
        return self.value > _value(other)

    def __ge__(self, other):
        return self.value >= _value(other)

    def __lt__(self, other):
        return self.value < _value(other)

    def __le__(self, other):
        return self.value <= _value(other)

    def __eq__(self, other):
        return self.value == _value(other)

    def __ne__(self, other):
        return self.value != _value(other)

    __hash__ = None  # compared element-wise, like an array

    # -- leaving batchjac is an error, never a silent zero derivative ----------------------
    def __array__(self, dtype=None, copy=None):
        raise TraceError(
            "a traced array was converted to a NumPy array (numpy.asarray or similar); "
            "f must use batchjac's array functions (bj.exp, bj.sum, ...) to be traced"
        )

    _OPERATOR_UFUNCS = {
        "add": "add", "subtract": "subtract", "multiply": "multiply", "true_divide": "divide",
        "divide": "divide", "power": "power", "matmul": "matmul", "negative": "negative",
    }  # fmt: skip

    _COMPARISONS = {"equal", "not_equal", "greater", "greater_equal", "less", "less_equal"}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # ndarray (op) traced reaches here first; route the arithmetic operators to the
        # traced rules and refuse every other NumPy function.
        name = self._OPERATOR_UFUNCS.get(ufunc.__name__)
        if method == "__call__" and name is not None and not kwargs:
            return getattr(_fn(), name)(*inputs)
        if method == "__call__" and ufunc.__name__ in self._COMPARISONS and not kwargs:
            return ufunc(*(_value(a) for a in inputs))  # plain booleans: not differentiable
        raise TraceError(
            f"numpy.{ufunc.__name__} was called on a traced array; use bj.{ufunc.__name__} "
            "(batchjac's array functions trace, NumPy's do not)"
        )

    def __array_function__(self, func, types, args, kwargs):
        raise TraceError(
            f"numpy.{func.__name__} was called on a traced array; use batchjac's array "
            f"functions (bj.{func.__name__} where it exists) so that f can be traced"
        )

    def __getattr__(self, name):
        # Array methods batchjac does not trace (x.T, x.max(), x.astype(...)): refuse them as
        # "does not trace", so that method="auto" falls back instead of failing.
        if name.startswith("__"):
            raise AttributeError(name)
        raise TraceError(
            f"traced arrays have no attribute {name!r}; use batchjac's array functions "
            "(bj.transpose, bj.sum, ...) so that f can be traced"
        )

    def _untraceable(self, *args, **kwargs):
        raise TraceError("this operator has no derivative rule in batchjac (%, //, divmod, bit operations)")

    __mod__ = __rmod__ = __floordiv__ = __rfloordiv__ = __divmod__ = __rdivmod__ = _untraceable
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __invert__ = _untraceable

    def __bool__(self):
        raise TraceError("the truth value of a traced array is not defined; use bj.where for branches")

    def __float__(self):
        raise TraceError("a traced array cannot be converted to a Python float")

    __int__ = __index__ = __float__


def _fn():
    from batchjac.exact import functions

    return functions


def _value(a):
    return a.value if isinstance(a, Traced) else a


def record(value, parents) -> Traced:
    """A :class:`Traced` result ``value`` with local Jacobians ``[(operand, make_J), ...]``.

    Only traced operands get an edge, and ``make_J()`` is called only for them. Edges
    to the same parent (``x * x``) are summed. A diagonal step after diagonal steps is
    multiplied out at once (see :func:`_compose_diagonal`).
    """
    edges: dict = {}
    for operand, make_jacobian in parents:
        if isinstance(operand, Traced):
            for node, J in _compose_diagonal(operand.node, make_jacobian()):
                edges[node] = edges[node] + J if node in edges else J
    return Traced(value, Node(value.shape, edges))


def _compose_diagonal(node: Node, J: Jacobian):
    """Edges for a local Jacobian ``J`` w.r.t. ``node``: ``[(node, J)]``, or, when ``J``
    and all of ``node``'s own edges are diagonal, ``[(parent, J @ D_parent), ...]``.

    A product of diagonals costs the same whenever it is done, and doing it now lets
    the intermediate node (and its diagonal) be freed as soon as ``f`` drops it: a deep
    element-wise chain then holds one diagonal, not one per step.
    """
    if (
        isinstance(J, Diagonal)
        and node.parents
        and all(isinstance(D, Diagonal) for D in node.parents.values())
    ):
        return [(parent, J @ D) for parent, D in node.parents.items()]
    return [(node, J)]


def trace(f, args, argnums):
    """Run ``f(*args)`` with the arguments at ``argnums`` traced.

    Returns ``(output, input_nodes)``; ``output`` is the traced result (or whatever ``f``
    returned), ``input_nodes`` the nodes of the traced arguments, in ``argnums`` order.
    """
    traced_args = list(args)
    inputs = []
    for i in argnums:
        node = Node(args[i].shape, {})
        inputs.append(node)
        traced_args[i] = Traced(args[i], node)
    return f(*traced_args), inputs


def multiply_forward(factors: list[Jacobian]):
    """``factors[0] @ ... @ factors[-1]`` right to left (forward mode), and its description."""
    product = factors[-1]
    for J in reversed(factors[:-1]):
        product = J @ product
    return product, "forward order"


@dataclass
class AssemblyPlan:
    """How a traced Jacobian was assembled: the chain products and vertex eliminations.

    ``chains`` holds the plan of each chain product (``bj.chain_plan`` objects when the
    planner multiplied them); ``steps`` describes every step in order.
    """

    steps: list = field(default_factory=list)
    chains: list = field(default_factory=list)

    @property
    def order(self) -> str:
        """The bracketing of each chain product, e.g. ``"(((J4 J3) J2) J1)"``."""
        orders = [getattr(plan, "order", str(plan)) for plan in self.chains]
        return "; ".join(orders) if orders else "no products (a single local Jacobian)"

    @property
    def flops(self) -> int:
        return int(builtins.sum(getattr(plan, "flops", 0) for plan in self.chains))

    def explain(self) -> str:
        return "\n".join(f"{i + 1}. {step}" for i, step in enumerate(self.steps)) or "nothing to assemble"

    def __str__(self):
        return self.explain()


def assemble(output: Node, inputs: list[Node], batch: int, dtype, device, chain=multiply_forward):
    """The Jacobian of ``output`` with respect to each node of ``inputs``, and its plan.

    Returns ``(jacobians, plan)``: structured Jacobians ``(B, output.size, input.size)``
    (an input the output does not depend on gets a zero ``Shared``) and the
    :class:`AssemblyPlan`. ``chain(factors)`` multiplies factors given left to right and
    returns ``(product, plan_of_the_product)``.
    """
    edges = _reachable_edges(output)  # child -> {parent: J}
    protected = set(inputs) | {output}
    plan = AssemblyPlan()
    while True:
        inner = [v for v in _vertices(edges) if v not in protected]
        if not inner:
            break
        if not _eliminate_chains(edges, inner, chain, plan):
            vertex = min(inner, key=lambda v: _markowitz(edges, v))
            plan.steps.append(
                f"eliminate shared vertex {vertex.shape}: {_markowitz(edges, vertex)} pairwise products"
            )
            _eliminate_vertex(edges, vertex)
    result = []
    for node in inputs:
        if node is output:
            result.append(Identity(node.size, batch, dtype=dtype, device=device))
        elif node in edges.get(output, {}):
            result.append(edges[output][node])
        else:
            zeros = _zeros(device, (output.size, node.size), dtype)
            result.append(Shared(zeros, batch))
    return result, plan


def _zeros(device, shape, dtype):
    from batchjac.core.arrays import GPU, _cupy

    xp = _cupy() if device == GPU else np
    return xp.zeros(shape, dtype=dtype)


def _reachable_edges(output: Node) -> dict:
    edges, stack, seen = {}, [output], {output}
    while stack:
        node = stack.pop()
        if node.parents:
            edges[node] = dict(node.parents)
        for parent in node.parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return edges


def _vertices(edges):
    seen = {}
    for child, parents in edges.items():
        seen[child] = None
        for p in parents:
            seen[p] = None
    return list(seen)


def _children(edges, v):
    return [c for c, parents in edges.items() if v in parents]


def _markowitz(edges, v):
    return len(edges.get(v, ())) * len(_children(edges, v))


def _add_edge(edges, child, parent, J):
    parents = edges.setdefault(child, {})
    parents[parent] = parents[parent] + J if parent in parents else J


def _eliminate_chains(edges, inner, chain, plan) -> bool:
    """Multiply out every maximal path of single-in, single-out vertices; False if none."""
    links = {v for v in inner if len(edges.get(v, ())) == 1 and len(_children(edges, v)) == 1}
    if not links:
        return False
    while links:
        v = next(iter(links))
        # Walk down to the last link, then collect the path upwards.
        while (child := _children(edges, v)[0]) in links:
            v = child
        sink = child
        path = [v]
        while (parent := next(iter(edges[path[-1]]))) in links:
            path.append(parent)
        source = parent
        factors = [edges[sink].pop(path[0])]
        for u in path:
            (J,) = edges.pop(u).values()
            factors.append(J)
        if not edges[sink]:
            del edges[sink]
        product, chain_plan = chain(factors)
        plan.chains.append(chain_plan)
        merged = source in edges.get(sink, {})
        plan.steps.append(
            f"chain of {len(factors)} factors {' '.join(type(J).__name__ for J in factors)}: "
            f"{getattr(chain_plan, 'order', chain_plan)}"
            + (", summed with a parallel path" if merged else "")
        )
        _add_edge(edges, sink, source, product)
        links.difference_update(path)
    return True


def _eliminate_vertex(edges, v):
    incoming = edges.pop(v)
    for child in _children(edges, v):
        out = edges[child].pop(v)
        for parent, J in incoming.items():
            _add_edge(edges, child, parent, out @ J)
