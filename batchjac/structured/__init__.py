"""Structured batched Jacobians: the types (one module each), their algebra and the chain planner.

Importing the package registers every type's rules (:mod:`batchjac.structured.algebra`), in
the order of the imports below: each type's module registers the rules it introduces.
"""

from batchjac.structured import (  # noqa: F401  (imported for their registrations)
    blockdiag,
    dense,
    diagonal,
    gather,
    identity,
    kronecker,
    shared,
    sparse,
)
