"""The structured Jacobian types in one import (each is defined in a module of its own).

Other floors import the types from here: ``from batchjac.structured.types import Dense``.
"""

from batchjac.structured.base import Jacobian
from batchjac.structured.blockdiag import BlockDiagonal
from batchjac.structured.dense import Dense
from batchjac.structured.diagonal import Diagonal
from batchjac.structured.gather import Gather
from batchjac.structured.identity import Identity
from batchjac.structured.kronecker import Kronecker
from batchjac.structured.shared import Shared
from batchjac.structured.sparse import Sparse

__all__ = [
    "BlockDiagonal",
    "Dense",
    "Diagonal",
    "Gather",
    "Identity",
    "Jacobian",
    "Kronecker",
    "Shared",
    "Sparse",
]
