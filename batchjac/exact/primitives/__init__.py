"""The primitives of traced programs, grouped by family, each declared once with its rules.

Importing this package declares every primitive in :data:`REGISTRY` (name -> primitive).
"""

from batchjac.exact.primitives import elementwise, linalg, moves, reductions  # noqa: F401 - declares
from batchjac.exact.primitives.base import REGISTRY, JacobianContext, Primitive

__all__ = ["REGISTRY", "JacobianContext", "Primitive"]
