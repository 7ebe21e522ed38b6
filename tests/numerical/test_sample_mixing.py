"""Functions that mix samples are refused by every numerical method (issue 13, item 17).

``x - x.mean(axis=0)`` differentiated by stacking perturbed copies of the batch used to
give the identity (the mean moves with the stack). The check perturbs half the samples
in one copy and the rest in another and asks the unmoved ones to stay put.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj
from batchjac.numerical.differences import check_samples_independent, numerical_value_and_jacobian

METHODS = ("complex-step", "central", "forward")
DTYPES = (np.float64, np.float32)

MIXING = {
    "minus_mean": lambda x: x - x.mean(axis=0),
    "batch_norm": lambda x: (x - x.mean(axis=0)) / x.std(axis=0),
    "minus_first": lambda x: x - x[0],
    "minus_last": lambda x: x * x[-1],
    "over_batch_size": lambda x: x / len(x),
    "neighbours": lambda x: x + np.roll(x, 1, axis=0),
    "batch_max": lambda x: np.exp(x - x.real.max(axis=0)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MIXING))
def test_a_function_that_mixes_samples_is_refused(name, method, dtype, rng):
    x = rng.standard_normal((12, 3)).astype(dtype)
    with pytest.raises(ValueError, match=r"^f mixes samples: its output for sample \d+ moved by"):
        numerical_value_and_jacobian(MIXING[name], (x,), 0, method)


@pytest.mark.parametrize("method", METHODS)
def test_the_mean_is_refused_through_the_front_door_even_for_one_sample(method, rng):
    for batch in (1, 2, 12):
        x = rng.standard_normal((batch, 4))
        with pytest.raises(ValueError, match=r"f mixes samples"):
            bj.jacobian(lambda x: x - np.mean(x, axis=0), x, method=method)


def test_a_coupling_through_another_argument_is_refused(rng):
    x, w = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    with pytest.raises(ValueError, match=r"f mixes samples"):
        numerical_value_and_jacobian(lambda x, w: x * w.mean(axis=0), (x, w), (0, 1), "central")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_sample_wise_functions_with_blas_and_reductions_pass(method, dtype, rng):
    # matmul over stacks of different heights rounds rows differently; still sample-wise.
    W = rng.standard_normal((300, 40)).astype(dtype)
    x = rng.standard_normal((33, 300)).astype(dtype)

    def f(x):
        return np.tanh(x @ W) * x[:, :40].sum(axis=1, keepdims=True)

    _, (J,) = numerical_value_and_jacobian(f, (x,), 0, method, chunk_size=7)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    t, s = np.tanh(x64 @ W64), x64[:, :40].sum(axis=1, keepdims=True)
    expected = ((1 - t**2) * s)[:, :, None] * W64.T[None]
    expected[:, :, :40] += t[:, :, None]
    rtol = {("complex-step", np.float64): 1e-10, ("central", np.float64): 1e-6, ("forward", np.float64): 1e-4}
    assert_close(J, expected, rtol=rtol.get((method, dtype), 5e-2))


def test_the_check_alone_names_the_first_moved_sample():
    x = np.arange(8.0).reshape(4, 2)
    check_samples_independent(lambda s: 2 * s, x, 2 * x)  # sample-wise: silent
    with pytest.raises(ValueError, match=r"^f mixes samples: its output for sample 0"):
        check_samples_independent(lambda s: s - s[0], x, x - x[0])


@pytest.mark.parametrize("batch", [0, 1])
def test_empty_and_single_sample_batches_of_sample_wise_functions_pass(batch, rng):
    x = rng.standard_normal((batch, 3))
    for method in METHODS:
        _, (J,) = numerical_value_and_jacobian(np.sin, (x,), 0, method)
        assert_close(J, np.cos(x)[:, :, None] * np.eye(3), rtol=1e-4)
