"""The fused CPU kernels against the structured chain and an independent reference, for every
supported primitive, float32 and float64, batches of 0, 1 and 5 samples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from cases import BY_NAME, CASES, Case, fused_and_chain, reference_jacobian, relative_error, sample
from helpers import assert_close, complex_step_jacobian

import batchjac as bj
from batchjac.exact.capture import capture
from batchjac.exact.fuse import fused_value_and_jacobians, plan_fusion
from batchjac.structured.types import Dense, Diagonal

ROOT = Path(__file__).resolve().parents[3]


def _load_workloads():
    """benchmarks/workloads.py by its file (the benchmarks are scripts, not a package here)."""
    spec = importlib.util.spec_from_file_location(
        "fuse_tests_workloads", ROOT / "benchmarks" / "workloads.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


WORKLOADS = _load_workloads()

# fused vs chain (the same dtype) and vs the float64 reference (complex step / central)
CHAIN_TOLERANCE = {np.float64: 1e-12, np.float32: 1e-4}
REFERENCE_TOLERANCE = {(np.float64, True): 1e-12, (np.float64, False): 1e-7, (np.float32, True): 1e-3,
                       (np.float32, False): 1e-3}  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fused_equals_chain_and_reference(case: Case, dtype):
    for batch in (0, 1, 5):
        x = sample(case, batch, dtype, seed=batch)
        value, (J,), chain_value, (chain_J,), decision = fused_and_chain(
            case.f, (x,), per_sample=case.per_sample
        )
        assert decision.fusable, decision.reason
        if case.mode is not None:
            assert decision.mode == case.mode
        assert value.shape == chain_value.shape and value.shape[0] == batch
        assert J.shape == chain_J.shape == (batch, chain_J.shape[1], int(np.prod(case.shape)))
        assert value.dtype == chain_value.dtype == J.dtype == chain_J.dtype == dtype
        assert relative_error(value, chain_value) <= CHAIN_TOLERANCE[dtype]
        assert relative_error(J, chain_J) <= CHAIN_TOLERANCE[dtype]
        if batch:
            reference = reference_jacobian(case, x)
            exact = case.complex_safe or case.closed_form is not None
            assert relative_error(J, reference) <= REFERENCE_TOLERANCE[(dtype, exact)]


def test_closed_forms_of_math_md():
    """The worked examples of math.md: det's cofactors, x + x^2, the ReLU neuron."""
    X0 = np.array([[[3.0, 2.0], [6.0, -4.0]]]).reshape(1, 4)
    _, (J,), _, _, _ = fused_and_chain(lambda x: np.linalg.det(x.reshape(-1, 2, 2)), (X0,))
    assert np.array_equal(J.reshape(1, 4), [[-4.0, -6.0, -2.0, 3.0]])
    x = np.array([[0.5, -2.0, 3.0]])
    _, (J,), _, _, decision = fused_and_chain(lambda x: x + x**2, (x,))
    assert decision.mode == "elementwise" and np.array_equal(J[0], np.diag(1 + 2 * x[0]))
    w, b = np.array([1.0, -2.0]), 0.5
    for point, expected in (([1.0, 0.0], [1.0, 0.0]), ([0.0, 1.0], [0.0, 0.0])):
        _, (J,), _, _, _ = fused_and_chain(
            lambda w: bj.relu(np.sum(w * np.array(point), axis=-1) + b), (w[None],)
        )
        assert np.array_equal(J[0, 0], expected)


def test_singular_det_has_exact_cofactors():
    """The cofactor matrix (det's derivative) is exact for singular matrices too."""
    X = np.array([[1.0, 2.0, 3.0, 2.0, 4.0, 6.0, 0.0, 1.0, 1.0]])  # rank 2
    value, (J,), _, (chain_J,), _ = fused_and_chain(lambda x: np.linalg.det(x.reshape(-1, 3, 3)), (X,))
    A = X.reshape(3, 3)
    cofactors = np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(A, i, 0), j, 1)) for j in range(3)]
                          for i in range(3)])  # fmt: skip
    assert value[0] == 0.0
    np.testing.assert_allclose(J.reshape(3, 3), cofactors, atol=1e-12)
    np.testing.assert_allclose(chain_J.reshape(3, 3), cofactors, atol=1e-12)


def test_kinematics_forward_sparsity_and_complex_step():
    """W4's 6 -> 7 kinematics: exact to rounding against complex step."""
    complex_step, kinematics = WORKLOADS.complex_step, WORKLOADS.kinematics
    q = np.random.default_rng(3).uniform(-np.pi, np.pi, (64, 6))
    value, (J,), _, (chain_J,), decision = fused_and_chain(lambda q: kinematics(np, None, q), (q,))
    assert decision.fusable and decision.path == "fused"
    np.testing.assert_allclose(value, kinematics(np, None, q), rtol=1e-13, atol=1e-15)
    assert relative_error(J, complex_step(None, q)) <= 1e-13
    assert relative_error(J, chain_J) <= 1e-13


def test_shared_parameter_gives_per_sample_jacobians():
    """A differentiated parameter shared by the batch (per_sample, in_axes None) and a
    per-sample constant: J (B, m, W.size)."""
    Wp = np.random.default_rng(1).standard_normal((3, 4))
    x = np.random.default_rng(2).standard_normal((5, 4))
    f = lambda W, x: np.tanh(W @ x) * 2.0
    value, (J,), chain_value, (chain_J,), decision = fused_and_chain(
        f, (Wp, x), per_sample=True, in_axes=(None, 0)
    )
    assert J.shape == (5, 3, 12) and relative_error(J, chain_J) <= 1e-12
    t = np.tanh(x @ Wp.T)
    expected = 2 * (1 - t**2)[:, :, None, None] * np.eye(3)[None, :, :, None] * x[:, None, None, :]
    assert relative_error(J, expected.reshape(5, 3, 12)) <= 1e-12
    assert relative_error(value, chain_value) <= 1e-12


def test_output_shared_by_the_batch():
    """An output computed from a shared parameter only: its value has no batch axis, its
    Jacobians one per sample."""
    Wp = np.array([1.0, 2.0, 3.0])
    x = np.ones((4, 2))
    value, (J,), chain_value, (chain_J,), _ = fused_and_chain(
        lambda W, x: np.sin(W) * W, (Wp, x), per_sample=True, in_axes=(None, 0)
    )
    assert value.shape == chain_value.shape == (3,)
    np.testing.assert_allclose(value, np.sin(Wp) * Wp, rtol=1e-15)
    assert J.shape == (4, 3, 3)
    np.testing.assert_allclose(
        J, np.broadcast_to(np.diag(np.cos(Wp) * Wp + np.sin(Wp)), (4, 3, 3)), rtol=1e-15
    )


def test_two_differentiated_inputs():
    u, v = np.random.default_rng(4).standard_normal((2, 5, 3))
    f = lambda u, v: np.concatenate([u * v, np.sin(u) + v**2], axis=-1)
    _, (Ju, Jv), _, (chain_Ju, chain_Jv), _ = fused_and_chain(f, (u, v), argnums=(0, 1))
    assert relative_error(Ju, chain_Ju) <= 1e-15 and relative_error(Jv, chain_Jv) <= 1e-15
    expected_u = np.concatenate(
        [np.einsum("bi,ij->bij", v, np.eye(3)), np.einsum("bi,ij->bij", np.cos(u), np.eye(3))], 1
    )
    assert relative_error(Ju, expected_u) <= 1e-15


def test_result_types_and_layout():
    """Element-wise programs give a Diagonal (B, n); others a Dense (B, m, n)."""
    case = BY_NAME["element-wise chain (W1)"]
    x = sample(case, 3, np.float64)
    captured = capture(case.f, (x,), {}, (0,))
    program = captured.program
    value, (J,), decision = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 3)
    assert isinstance(J, Diagonal) and J.shape == (3, 5, 5) and decision.mode == "elementwise"
    captured = capture(lambda q: np.cumsum(q, axis=-1), (x,), {}, (0,))
    program = captured.program
    _, (J,), _ = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 3)
    assert isinstance(J, Dense) and np.array_equal(J.to_dense()[0], np.tri(5))


def test_inputs_untouched_read_only_and_strided():
    base = np.random.default_rng(5).uniform(-1, 1, (5, 12))
    x = base[:, ::2]  # not contiguous
    x.setflags(write=False)
    before = x.copy()
    for case in (BY_NAME["element-wise chain (W1)"], BY_NAME["concatenate, stack"]):
        value, (J,), chain_value, (chain_J,), _ = fused_and_chain(case.f, (x,))
        assert relative_error(J, chain_J) <= 1e-12 and relative_error(value, chain_value) <= 1e-12
    assert np.array_equal(x, before)


def test_constants_and_literals_are_arguments():
    """Weights and Python numbers are kernel arguments: two traces with other values share
    the kernel (the program's hash ignores them) and each gets its own result."""
    x = np.random.default_rng(6).standard_normal((4, 3))
    results = []
    for scale, weight in ((2.0, np.eye(3)), (-0.5, np.arange(9.0).reshape(3, 3))):
        f = lambda x: np.sin(x @ weight) * scale
        captured = capture(f, (x,), {}, (0,))
        program = captured.program
        value, (J,), _ = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 4)
        expected = scale * np.cos(x @ weight)[:, :, None] * weight.T[None]
        assert relative_error(J.to_dense(), expected) <= 1e-15
        results.append(program.hash)
    assert results[0] == results[1]


def test_backend_argument_is_checked():
    x = np.ones((2, 3))
    captured = capture(lambda x: np.sin(x), (x,), {}, (0,))
    program = captured.program
    with pytest.raises(ValueError, match="backend"):
        fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 2, backend="tpu")
    with pytest.raises(ValueError, match="input 0 should have shape"):
        fused_value_and_jacobians(program, [np.ones((3, 3))], program.const_values, program.inputs, 2)


def test_decision_picks_the_cheaper_mode():
    """The mode whose generated code does less work per sample (statements plus loop
    iterations): reverse for one output of many inputs; the constant Jacobian of a cumsum
    of copies folds to stores of constants in reverse mode."""
    from batchjac.exact.fuse.codegen import analyse, sample_body
    from batchjac.exact.fuse.lower import lower

    x = np.ones((2, 8))
    functions = (
        lambda x: np.sum(np.sin(np.cumsum(x, axis=-1)), axis=-1),
        lambda x: np.sin(np.tile(x[:, :2], (1, 4)) * np.arange(1.0, 9.0)),
        lambda x: np.cumsum(np.tile(x[:, :2], (1, 4)), axis=-1),
    )
    modes = []
    for f in functions:
        program = bj.trace(f, x)
        decision = plan_fusion(program, program.inputs, 2, np.float64)
        tape = lower(program, program.inputs)
        work = {mode: sample_body(tape, analyse(tape), mode)[3] for mode in ("forward", "reverse")}
        assert decision.fused_operations == min(work.values()) and work[decision.mode] == min(work.values())
        modes.append(decision.mode)
    assert modes[0] == "reverse"


def test_tangents_keep_their_static_sparsity():
    """sin(cumsum(x)), 8 entries: the tangent of entry k has k + 1 nonzero columns
    (triangular), so forward mode costs 36 updates for sin and 7 + 28 for cumsum's additions
    (entry k adds the k columns of entry k - 1 and the one of x_k); a dense tangent would cost 192."""
    x = np.ones((2, 8))
    program = bj.trace(lambda x: np.sin(np.cumsum(x, axis=-1)), x)
    decision = plan_fusion(program, program.inputs, 2, np.float64)
    assert decision.forward_operations == 36 + 7 + 28


def test_large_outputs_reuse_memory_only_once_released():
    """Outputs of 4 MiB and more come from a pool of buffers: a result the caller holds is
    never overwritten by a later call; a released one's memory is used again."""
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((2, 640, 1024))
    program = bj.trace(lambda x: np.tanh(np.exp(x) * x) + x, x1)

    def run(x):
        value, (D,), _ = fused_value_and_jacobians(program, [x], program.const_values, program.inputs, 640)
        return value, D.diagonal()

    v1, d1 = run(x1)
    kept = (v1.copy(), d1.copy())
    v2, d2 = run(x2)
    assert np.array_equal(v1, kept[0]) and np.array_equal(d1, kept[1])
    assert not np.shares_memory(v1, v2) and not np.shares_memory(d1, d2)
    released = {v2.__array_interface__["data"][0], d2.__array_interface__["data"][0]}
    del v2, d2
    v3, d3 = run(x2)
    assert {v3.__array_interface__["data"][0], d3.__array_interface__["data"][0]} == released
    np.testing.assert_allclose(v3, np.tanh(np.exp(x2) * x2) + x2, rtol=1e-15)


def test_a_product_times_its_own_factors_compiles_with_distinct_names(rng):
    """Regression: the partials of prod (prefix and suffix products) and the emitter's
    common subexpressions once shared a name, giving a wrong Jacobian."""
    x = rng.uniform(0.5, 1.5, (4, 5))
    f = lambda t: np.prod(t, axis=-1, keepdims=True) * t  # noqa: E731
    fused = bj.jacobian(f, x, method="exact", fuse=True)
    assert_close(fused, bj.jacobian(f, x, method="exact", fuse=False), rtol=1e-13)
    assert_close(fused, complex_step_jacobian(f, x), rtol=1e-13)
