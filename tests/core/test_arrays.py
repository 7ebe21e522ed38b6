"""Taking arrays in (issue 13 item 9, issue 20): NumPy subclasses whose semantics batchjac
cannot keep are refused with advice, others become plain ndarrays; PyTorch tensors that
require grad are detached. References: NumPy closed forms on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close

import batchjac as bj
from batchjac.core.arrays import as_array, as_float_array, framework_of
from batchjac.numerical.differences import numerical_value_and_jacobian


def test_np_matrix_is_refused_with_what_to_pass():
    m = np.matrix([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(TypeError, match=r"^x: np.matrix is not supported .*; pass np.asarray\(x\)$"):
        as_array(m)
    for method in ("auto", "exact", "complex-step", "central"):  # t * t would be a matrix product
        with pytest.raises(TypeError, match=r"x: np.matrix is not supported"):
            bj.jacobian(lambda t: t * t, m, method=method)
    with pytest.raises(TypeError, match=r"argument 0: np.matrix is not supported"):
        numerical_value_and_jacobian(lambda t: t * t, (m,), 0, "central")


def test_a_masked_array_is_refused_naming_the_argument_and_filled():
    x = np.ma.masked_array([[1.0, 2.0], [3.0, 4.0]], mask=[[0, 1], [0, 0]])
    with pytest.raises(
        TypeError, match=r"^w: a masked array is not supported .*pass w.filled\(value\) \(or w.data\)$"
    ):
        as_float_array(x, "w")
    with pytest.raises(TypeError, match=r"x: a masked array is not supported"):
        bj.jacobian(np.sin, x, method="central")
    with pytest.raises(TypeError, match=r"x: a masked array is not supported"):
        bj.check_jacobian(np.sin, x, J=np.zeros((2, 2, 2)))


def test_other_subclasses_become_plain_ndarrays_without_a_copy(tmp_path, rng):
    class Tagged(np.ndarray):
        pass

    base = rng.standard_normal((3, 2))
    tagged = base.view(Tagged)
    taken = as_array(tagged)
    assert type(taken) is np.ndarray and np.shares_memory(taken, base)
    memmap = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=(3, 2))
    memmap[:] = base
    J = bj.jacobian(lambda t: t * t, memmap, method="central")
    assert_close(J, 2 * base[:, :, None] * np.eye(2), rtol=1e-8)


def test_a_torch_tensor_that_requires_grad_is_detached(rng):
    torch = pytest.importorskip("torch")
    t = torch.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    a = as_array(t)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.detach().numpy())
    assert t.requires_grad and t.grad is None


def test_framework_of_names_the_four_frameworks_and_nothing_else():
    assert framework_of(np.zeros(1)) == "numpy"
    assert framework_of([1.0]) is None and framework_of(1.0) is None
    torch = pytest.importorskip("torch")
    assert framework_of(torch.zeros(1)) == "torch"
    jnp = pytest.importorskip("jax.numpy")
    assert framework_of(jnp.zeros(1)) == "jax"
