"""The ops layer: batchjac's public array functions, and what traced arrays can do.

Each function works on plain arrays (values, as NumPy computes them, with the batch axis
first) and on traced arrays inside ``bj.jacobian`` (recording the primitive). Importing this
package attaches operators, methods and NumPy's protocols to traced arrays.
"""

from batchjac.exact.ops import array_methods  # noqa: F401 - attaches the Tracer's operators
from batchjac.exact.ops.elementwise import FUNCTIONS, clip, deg2rad, power, rad2deg, where
from batchjac.exact.ops.linalg import (
    cholesky,
    cross,
    det,
    einsum,
    inv,
    linear,
    log_softmax,
    matmul,
    matrix_power,
    outer,
    quadratic_form,
    slogdet,
    softmax,
    solve,
)
from batchjac.exact.ops.reductions import (
    amax,
    amin,
    argmax,
    argmin,
    cumsum,
    dot,
    logsumexp,
    mean,
    norm,
    prod,
    std,
    sum,
    var,
)
from batchjac.exact.ops.shapes import (
    astype,
    broadcast_to,
    concatenate,
    diag,
    diagonal,
    expand_dims,
    flip,
    moveaxis,
    pad,
    repeat,
    reshape,
    roll,
    squeeze,
    stack,
    swapaxes,
    take,
    tile,
    trace,
    transpose,
    tril,
    triu,
)

globals().update(FUNCTIONS)  # exp, log, ..., add, subtract, multiply, ... (element-wise rules)

__all__ = []  # filled below

max = amax  # noqa: A001 - NumPy's names
min = amin  # noqa: A001

PUBLIC = sorted(
    [*FUNCTIONS, "clip", "deg2rad", "power", "rad2deg", "where", "cholesky", "cross", "det", "einsum", "inv",
     "linear", "log_softmax", "matmul", "matrix_power", "outer", "quadratic_form", "slogdet", "softmax",
     "solve", "amax", "amin", "max", "min", "argmax", "argmin", "cumsum", "dot", "logsumexp", "mean", "norm",
     "prod", "std", "sum", "var", "astype", "broadcast_to", "concatenate", "diag", "diagonal", "expand_dims",
     "flip", "moveaxis", "pad", "repeat", "reshape", "roll", "squeeze", "stack", "swapaxes", "take", "tile",
     "transpose", "tril", "triu"]
)  # fmt: skip
__all__ = PUBLIC
