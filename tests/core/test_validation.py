"""The argument checks of ``batchjac.core.validation`` (issue 13, items 13 and 16): NumPy
integers serve wherever ints do, and every misuse is a clear error naming the argument,
what was expected and what came. Also through the public functions that use them."""

from __future__ import annotations

import numpy as np
import pytest

import batchjac as bj
from batchjac.core import validation
from batchjac.core.validation import (
    LAYOUTS,
    METHODS,
    NUMERICAL_METHODS,
    check_argnums,
    check_chunk_size,
    check_integer,
    check_layout,
    check_method,
    check_progress,
    check_real,
    check_tolerance,
)
from batchjac.numerical.differences import numerical_value_and_jacobian

INTEGERS = [3, np.int64(3), np.int32(3), np.uint16(3), np.int8(3)]


def test_the_lists_are_the_documented_ones_and_live_here_only():
    assert METHODS == ("auto", "exact", "complex-step", "central", "forward")
    assert NUMERICAL_METHODS == METHODS[2:] and LAYOUTS == ("numerator", "denominator")
    from batchjac.numerical import device_jacobian, differences

    assert differences.METHODS is NUMERICAL_METHODS  # imported, not copied
    assert device_jacobian.DEVICE_METHODS == ("complex-step", "central")


@pytest.mark.parametrize("value", INTEGERS, ids=lambda v: type(v).__name__)
def test_every_integer_type_is_an_integer(value):
    assert check_integer(value, "n") == 3 and type(check_integer(value, "n")) is int
    assert check_chunk_size(value) == 3
    assert check_argnums(value - 3, 2) == (0,)
    assert check_argnums((value - 3, value - 2), 2) == (0, 1)


@pytest.mark.parametrize(
    "argnums,error,message",
    [
        (None, TypeError, r"argnums: expected an int or a tuple of ints, got None \(NoneType\)"),
        (1.0, TypeError, r"argnums: expected an int or a tuple of ints, got 1.0 \(float\)"),
        (True, TypeError, r"argnums: expected an int or a tuple of ints, got True \(bool\)"),
        ("0", TypeError, r"argnums: expected an int or a tuple of ints, got '0'"),
        ((0, 1.0), TypeError, r"argnums: .*got \(0, 1.0\) \(tuple\) containing 1.0 \(float\)"),
        ((), ValueError, r"argnums: expected at least one position, got an empty sequence"),
        (2, ValueError, r"argnums: position 2 is not among the 2 arguments \(expected 0 to 1\), got 2"),
        (-1, ValueError, r"argnums: position -1 is not among the 2 arguments"),
        ((0, 0), ValueError, r"argnums: expected distinct positions, got \(0, 0\)"),
    ],
)
def test_bad_argnums_are_named(argnums, error, message):
    with pytest.raises(error, match=message):
        check_argnums(argnums, 2)
    x = np.ones((2, 3))
    with pytest.raises(error, match=message):  # the same words through the numerical floor
        numerical_value_and_jacobian(np.multiply, (x, x), argnums, "central")


@pytest.mark.parametrize("argnums", [None, 1.0])
def test_bad_argnums_through_the_front_door(argnums):
    with pytest.raises(TypeError, match=r"argnums: expected an int or a tuple of ints"):
        bj.jacobian(np.multiply, np.ones((2, 3)), np.ones((2, 3)), argnums=argnums, method="central")


def test_numpy_integer_argnums_through_the_front_door(rng):
    x, w = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    J = bj.jacobian(np.multiply, x, w, argnums=np.int64(1), method="central")
    np.testing.assert_allclose(J, x[:, :, None] * np.eye(3), rtol=1e-8)


@pytest.mark.parametrize(
    "check,value,error,message",
    [
        (check_method, "magic", ValueError, r"method: expected one of 'auto', 'exact', .*, got 'magic'"),
        (check_method, None, ValueError, r"method: expected one of .*, got None \(NoneType\)"),
        (
            check_layout,
            "sideways",
            ValueError,
            r"layout: expected 'numerator' or 'denominator', got 'sideways'",
        ),
        (check_chunk_size, 0, ValueError, r"chunk_size: expected a positive int or None, got 0"),
        (check_chunk_size, 2.0, TypeError, r"chunk_size: expected a positive int or None, got 2.0 \(float\)"),
        (check_progress, "yes", TypeError, r"progress: expected True, False or None, got 'yes'"),
        (check_progress, 1, TypeError, r"progress: expected True, False or None, got 1 \(int\)"),
        (check_tolerance, "1e-3", TypeError, r"rtol: expected a real number, got '1e-3'"),
        (check_tolerance, -1, ValueError, r"rtol: expected a finite real number >= 0, got -1.0"),
        (check_tolerance, np.inf, ValueError, r"rtol: expected a finite real number >= 0, got inf"),
    ],
)
def test_bad_options_are_named(check, value, error, message):
    with pytest.raises(error, match=message):
        check(value, "rtol") if check is check_tolerance else check(value)


def test_method_lists_can_be_narrowed():
    assert check_method("forward", NUMERICAL_METHODS) == "forward"
    with pytest.raises(
        ValueError, match=r"method: expected one of 'complex-step', 'central', 'forward', got 'exact'"
    ):
        check_method("exact", NUMERICAL_METHODS)


def test_reals_take_numpy_scalars_and_refuse_bools_and_strings():
    assert check_real(np.float32(0.5), "alpha") == 0.5 and check_real(np.int64(2), "alpha") == 2.0
    with pytest.raises(TypeError, match=r"alpha: expected a real number, got True \(bool\)"):
        check_real(True, "alpha")
    with pytest.raises(TypeError, match=r"alpha: expected a real number, got 'a'"):
        check_real("a", "alpha")
    with pytest.raises(ValueError, match=r"step: expected a finite real number > 0, got 0.0"):
        check_real(0, "step", minimum=0.0, strict=True)


def test_long_values_are_shortened_in_messages():
    with pytest.raises(TypeError) as err:
        check_argnums(list(range(100)) + [0.5], 200)
    assert len(str(err.value)) < 200 and "..." in str(err.value)


def test_the_module_docstring_examples_run():
    import doctest

    failed, attempted = doctest.testmod(validation)
    assert attempted > 0 and failed == 0
