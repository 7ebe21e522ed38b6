"""Argument validation: the one home of every check on the keywords of the public functions.

Each check takes the value and returns it normalised (NumPy integers become ``int``,
``argnums`` a tuple), or raises an error that names the argument, says what was expected
and what came: ``TypeError`` for a value of the wrong type, ``ValueError`` for a value of
the right type outside its range. Integers are any ``numbers.Integral`` but ``bool``
(so ``np.int64(3)`` serves wherever ``3`` does); real numbers any ``numbers.Real`` but
``bool``. The method and layout lists live here once; every floor imports them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

METHODS = ("auto", "exact", "complex-step", "central", "forward")
NUMERICAL_METHODS = ("complex-step", "central", "forward")
LAYOUTS = ("numerator", "denominator")


def _got(value: Any) -> str:
    """``value`` as an error message shows it: its repr and, for non-strings, its type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if isinstance(value, str) else f"{text} ({type(value).__name__})"


def is_integer(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools and everything else.

    >>> import numpy as np
    >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(3.0)
    (True, True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """True for Python and NumPy real numbers (integers included), False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_callable(f: Any, name: str = "f") -> Callable[..., Any]:
    """``f`` if it is callable, else a ``TypeError`` naming ``name``."""
    if not callable(f):
        raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")
    return f


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    """``value`` if it is one of ``choices`` (strings), else a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        listed = (
            " or ".join(map(repr, choices))
            if len(choices) == 2
            else f"one of {', '.join(map(repr, choices))}"
        )
        raise ValueError(f"{name}: expected {listed}, got {_got(value)}")
    return value


def check_method(method: Any, allowed: tuple[str, ...] = METHODS) -> str:
    """``method`` if it is one of ``allowed`` (by default every method of ``bj.jacobian``).

    >>> check_method("central", NUMERICAL_METHODS)
    'central'
    """
    return check_choice(method, allowed, "method")


def check_layout(layout: Any) -> str:
    """``layout`` if it is ``"numerator"`` or ``"denominator"``."""
    return check_choice(layout, LAYOUTS, "layout")


def check_argnums(argnums: Any, n_args: int) -> tuple[int, ...]:
    """``argnums`` (an integer or a sequence of them) as a tuple of distinct positions
    among ``n_args`` arguments.

    ``TypeError`` for anything but integers (``None``, ``1.0``, ``True``, ``"0"``);
    ``ValueError`` for an empty sequence, a repeated position or one outside
    ``0 .. n_args - 1``.

    >>> import numpy as np
    >>> check_argnums(np.int64(1), 2), check_argnums([0, 1], 2)
    ((1,), (0, 1))
    """
    nums: tuple[Any, ...]
    if is_integer(argnums):
        nums = (argnums,)
    elif isinstance(argnums, (tuple, list)):
        nums = tuple(argnums)
    else:
        raise TypeError(f"argnums: expected an int or a tuple of ints, got {_got(argnums)}")
    wrong = [i for i in nums if not is_integer(i)]
    if wrong:
        raise TypeError(
            f"argnums: expected an int or a tuple of ints, got {_got(argnums)} containing {_got(wrong[0])}"
        )
    nums = tuple(int(i) for i in nums)
    if not nums:
        raise ValueError("argnums: expected at least one position, got an empty sequence")
    outside = [i for i in nums if not 0 <= i < n_args]
    if outside:
        raise ValueError(
            f"argnums: position {outside[0]} is not among the {n_args} arguments "
            f"(expected 0 to {n_args - 1}), got {argnums!r}"
        )
    if len(set(nums)) != len(nums):
        raise ValueError(f"argnums: expected distinct positions, got {argnums!r}")
    return nums


def check_integer(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``.

    >>> import numpy as np
    >>> check_integer(np.int32(2), "out_size")
    2
    """
    if not is_integer(value):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {_got(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {int(value)}")
    return int(value)


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size``: None (chosen from free memory) or a positive integer.

    >>> import numpy as np
    >>> check_chunk_size(np.int64(3)), check_chunk_size(None)
    (3, None)
    """
    if chunk_size is None:
        return None
    if not is_integer(chunk_size):
        raise TypeError(f"chunk_size: expected a positive int or None, got {_got(chunk_size)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int or None, got {int(chunk_size)}")
    return int(chunk_size)


def check_progress(progress: Any) -> bool | None:
    """``progress``: True, False or None (a bar only for long computations on a terminal)."""
    if progress is None:
        return None
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress: expected True, False or None, got {_got(progress)}")
    return bool(progress)


def check_real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite ``float`` (``>= minimum``, or ``> minimum`` when ``strict``).

    Strings are refused, not parsed: ``rtol="1e-3"`` is a ``TypeError``.

    >>> check_real(1e-3, "rtol", minimum=0.0)
    0.001
    """
    if not is_real(value):
        raise TypeError(f"{name}: expected a real number, got {_got(value)}")
    number = float(value)
    relation = ">" if strict else ">="
    bound = "" if minimum is None else f" {relation} {minimum:g}"
    if not math.isfinite(number) or (
        minimum is not None and (number <= minimum if strict else number < minimum)
    ):
        raise ValueError(f"{name}: expected a finite real number{bound}, got {number!r}")
    return number


def check_tolerance(value: Any, name: str) -> float | None:
    """A tolerance: None (the documented default) or a finite real number ``>= 0``."""
    return None if value is None else check_real(value, name, minimum=0.0)
