"""What a repeated exact call reuses and what it must not leak: the interned structural key,
unit local Jacobians passed on, traces freed by reference counting, the per-structure
memory estimate, and pickled programs."""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest
from helpers import assert_close, complex_step_jacobian, mlp_layers, numpy_mlp

import batchjac as bj
from batchjac import engine
from batchjac.exact.interpret import jacobian as interpret


def test_equal_structures_share_one_interned_key_and_others_do_not(rng):
    f = numpy_mlp(mlp_layers(rng, (5, 7, 3)))
    g = numpy_mlp(mlp_layers(rng, (5, 7, 3)))  # other weights, same structure
    p1 = bj.trace(f, rng.standard_normal((4, 5)))
    p2 = bj.trace(g, rng.standard_normal((9, 5)))
    p3 = bj.trace(numpy_mlp(mlp_layers(rng, (5, 8, 3))), rng.standard_normal((4, 5)))
    assert p1.key is p2.key and hash(p1.key) == hash(p2.key)
    assert p1.key != p3.key and p1.hash != p3.hash
    assert p1.hash == p2.hash  # the digest is of the key


def test_a_pickled_program_comes_back_with_its_primitives_and_structure(rng):
    W = rng.standard_normal((4, 3))
    program = bj.trace(lambda x: bj.sigmoid(bj.linear(x, W)) * 2.0, rng.standard_normal((2, 3)))
    key = program.key
    back = pickle.loads(pickle.dumps(program))
    assert back.hash == program.hash and back.key is key  # re-interned, with this process's hash
    assert [eq.primitive for eq in back.equations] == [eq.primitive for eq in program.equations]
    assert all(b.primitive is a.primitive for a, b in zip(program.equations, back.equations))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    ["bias then tanh", "x + x", "residual", "difference", "constant minus x", "wider constant"],
)
def test_unit_local_jacobians_pass_their_operands_edges_on(case, dtype, rng):
    W = (rng.standard_normal((4, 4)) / 2).astype(dtype)
    c = rng.standard_normal(4).astype(dtype)
    C = rng.standard_normal((3, 4)).astype(dtype)
    functions = {  # NumPy functions: traced for batchjac, complex-safe for the reference
        "bias then tanh": lambda x: np.tanh(x @ W.T + c),
        "x + x": lambda x: np.sin(x) + np.sin(x),
        "residual": lambda x: np.tanh(x @ W.T) + x,
        "difference": lambda x: (np.exp(0.3 * x) - c) - x @ W.T,
        "constant minus x": lambda x: c - np.tanh(x),
        "wider constant": lambda x: np.tanh(x)[:, None, :] + C,  # broadcast: a Gather, not a unit
    }
    f = functions[case]
    x = rng.standard_normal((5, 4)).astype(dtype)
    y = f(x)
    J = bj.jacobian(f, x, method="exact", fuse=False)
    expected = complex_step_jacobian(f, x.astype(np.float64))
    assert J.dtype == y.dtype and J.shape == (5, *y.shape[1:], 4)
    assert_close(J, expected)


def test_a_float32_operand_added_to_a_float64_constant_is_promoted_not_passed_on(rng):
    c = rng.standard_normal(3)  # float64
    x = rng.standard_normal((4, 3)).astype(np.float32)
    J = bj.jacobian(lambda x: np.tanh(x) + c, x, method="exact", fuse=False)
    assert J.dtype == np.float64
    assert_close(J, np.einsum("bi,ij->bij", 1 - np.tanh(x.astype(np.float64)) ** 2, np.eye(3)), rtol=1e-6)


def test_the_mlp_chain_has_no_identity_factors(rng):
    f = numpy_mlp(mlp_layers(rng, (6, 8, 8, 3)))
    J = bj.jacobian(f, rng.standard_normal((4, 6)), method="exact", structured=True, fuse=False)
    assert "Identity" not in J.plan.explain()
    x = rng.standard_normal((4, 6))
    assert_close(bj.jacobian(f, x, method="exact", fuse=False), complex_step_jacobian(f, x))


def test_a_call_leaves_no_reference_cycles(rng):
    """The trace (variables, equations, tracers) is freed by reference counting when the
    call returns, not kept until the garbage collector runs."""
    f = numpy_mlp(mlp_layers(rng, (5, 6, 2)))
    x = rng.standard_normal((3, 5))
    for keywords in ({"fuse": False}, {}, {"structured": True, "fuse": False}):
        bj.jacobian(f, x, method="exact", **keywords)  # caches filled
        gc.collect()
        gc.disable()
        try:
            bj.jacobian(f, x, method="exact", **keywords)
            assert gc.collect() == 0, keywords
        finally:
            gc.enable()


def test_the_memory_estimate_counts_a_shared_weight_once(rng):
    """A product with a weight shared by the batch has a Shared local Jacobian: per sample it
    costs its output, not output x input (which made large MLPs read the free memory and
    split into passes for nothing)."""
    x = rng.standard_normal((2, 300))
    wide = bj.trace(lambda x: bj.linear(x, rng.standard_normal((200, 300))), x)
    per_sample = engine.exact_memory_per_sample(wide, [x])
    itemsize = 8
    # values and local Jacobians (a few entries per output) plus three copies of the result
    assert per_sample <= itemsize * (4 * 200 + 3 * 200 * 300)
    # a product of two per-sample operands keeps its dense block
    batched = bj.trace(lambda x: x.reshape(2, 15, 20) @ np.swapaxes(x.reshape(2, 15, 20), 1, 2), x)
    assert engine.exact_memory_per_sample(batched, [x]) >= itemsize * 15 * 15 * 300


def test_the_memory_estimate_is_made_once_per_structure(rng, monkeypatch):
    f = numpy_mlp(mlp_layers(rng, (4, 5, 2)))
    calls = []
    count = engine._count_memory_per_sample
    monkeypatch.setattr(engine, "_count_memory_per_sample", lambda p: calls.append(1) or count(p))
    engine._MEMORY_PER_SAMPLE.clear()
    for b in (3, 3, 7):
        bj.jacobian(f, rng.standard_normal((b, 4)), method="exact", fuse=False)
    assert len(calls) == 1


def test_a_backend_named_in_the_environment_is_checked_once_per_call(monkeypatch, rng):
    monkeypatch.setenv("BATCHJAC_BACKEND", "not-a-backend")
    with pytest.raises(ValueError, match="not-a-backend"):
        bj.jacobian(bj.tanh, rng.standard_normal((2, 3)), method="exact")
    monkeypatch.setenv("BATCHJAC_BACKEND", "numpy")
    x = rng.standard_normal((2, 3))
    assert_close(
        bj.jacobian(bj.tanh, x, method="exact"), np.einsum("bi,ij->bij", 1 - np.tanh(x) ** 2, np.eye(3))
    )


def test_inside_a_call_nothing_requested_reads_as_none_and_a_context_still_wins(rng):
    from batchjac.backends.dispatch import call_backend, requested_backend

    with call_backend(None):
        assert requested_backend() is None
        with bj.use_backend("numpy"):
            assert requested_backend() == "numpy"
        assert requested_backend("numpy") == "numpy"
    with call_backend("numpy"):
        assert requested_backend() == "numpy"


def test_plans_and_schedules_are_keyed_by_structure_not_by_program_object(rng):
    f = numpy_mlp(mlp_layers(rng, (4, 6, 3)))
    interpret._SCHEDULES.clear()
    interpret.PLAN_CACHE.clear()
    for b in (2, 5, 2):
        bj.jacobian(f, rng.standard_normal((b, 4)), method="exact", fuse=False)
    assert len(interpret._SCHEDULES) == 1 and len(interpret.PLAN_CACHE) == 1


# --------------------------------------------------------------------------------------
# Steps specialised per structure (Primitive.value_step / jacobian_step)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_programs_of_one_structure_with_other_literals_each_use_their_own(dtype, rng):
    """A literal's value is not structure: two programs that differ only in one share the
    cached steps and plan, and each call must read its own literal (value and derivative)."""
    x = rng.standard_normal((3, 4)).astype(dtype)
    interpret._SCHEDULES.clear()
    for a, b in ((2.0, 0.5), (-3.0, 4.0), (2.0, 0.5)):
        J = bj.jacobian(lambda x: np.sin(a * x) * b + a, x, method="exact", fuse=False)
        x64 = x.astype(np.float64)
        assert_close(J, np.einsum("bi,ij->bij", a * b * np.cos(a * x64), np.eye(4)))
        assert_close(
            bj.jacobian(np.deg2rad, x, method="exact", fuse=False),
            np.broadcast_to(np.eye(4) * np.pi / 180, (3, 4, 4)),
        )
        assert_close(
            bj.jacobian(np.rad2deg, x, method="exact", fuse=False),
            np.broadcast_to(np.eye(4) * 180 / np.pi, (3, 4, 4)),
        )
    assert len(interpret._SCHEDULES) <= 2  # steps shared by the programs of one structure


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    [
        "layer",
        "layer with float64 weight",
        "tanh",
        "exp",
        "sigmoid",
        "softplus",
        "log1p",
        "add shared",
        "mul",
    ],
)
def test_a_specialised_step_gives_the_general_rules_results_bit_for_bit(case, dtype, rng):
    from batchjac.backends.dispatch import select_backend
    from batchjac.exact.primitives.base import JacobianContext, Primitive

    W = rng.standard_normal((3, 4))
    c = rng.standard_normal(4)
    functions = {
        "layer": lambda x: x @ W.T.astype(dtype),
        "layer with float64 weight": lambda x: x @ W.T,
        "tanh": np.tanh, "exp": np.exp, "sigmoid": bj.sigmoid, "softplus": bj.softplus, "log1p": np.log1p,
        "add shared": lambda x: x + c.astype(dtype),
        "mul": lambda x: x * x,
    }  # fmt: skip
    x = np.abs(rng.standard_normal((5, 4))).astype(dtype)
    program = bj.trace(functions[case], x)
    (eq,) = program.equations
    values = [
        x if v is program.inputs[0] else program.const_values[program.consts.index(v)] for v in eq.inputs
    ]
    ops = select_backend(x)
    wanted = tuple(i for i, v in enumerate(eq.inputs) if v is program.inputs[0])
    value, local = eq.primitive.jacobian_step(eq.inputs, eq.out, wanted, np, ops, **eq.kwargs)(
        values, 5, eq.inputs
    )
    ctx = JacobianContext(np, values, [v.batched for v in eq.inputs], eq.inputs, eq.out, 5, eq.out.dtype, ops)
    general_value, general = eq.primitive.local_jacobians(ctx, wanted, **eq.kwargs)
    assert value.dtype == eq.out.dtype and np.array_equal(value, general_value)
    assert set(local) == set(general)
    for i in local:
        assert type(local[i]) is type(general[i]) and local[i].dtype == general[i].dtype
        assert np.array_equal(local[i].to_dense(), general[i].to_dense())
    only_value = eq.primitive.value_step(eq.inputs, eq.out, np, **eq.kwargs)(values)
    batched = [v.batched for v in eq.inputs]
    assert only_value.dtype == eq.out.dtype
    assert np.array_equal(
        only_value, Primitive.value_step(eq.primitive, eq.inputs, eq.out, np, **eq.kwargs)(values)
    )
    assert np.array_equal(only_value, eq.primitive.impl(np, values, batched, **eq.kwargs))


def test_the_trusted_constructors_build_what_the_checked_ones_build(rng):
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for trusted, checked in (
        (bj.Dense.trusted(a), bj.Dense(a)),
        (bj.Diagonal.trusted(a[:, 0]), bj.Diagonal(a[:, 0])),
        (bj.Shared.trusted(a[0], 2), bj.Shared(a[0], 2)),
    ):
        assert type(trusted) is type(checked)
        assert (trusted.shape, trusted.dtype, trusted.batch) == (checked.shape, checked.dtype, checked.batch)
        assert all(isinstance(n, int) for n in (trusted.batch, trusted.out_size, trusted.in_size))
        assert np.array_equal(trusted.to_dense(), checked.to_dense())


@pytest.mark.parametrize(
    "left, right",
    [("f4", "f8"), ("f8", "f4"), ("f4", ">f8"), (">f8", ">f8"), ("f4", "identity"), ("identity", "f8")],
)
def test_a_product_promotes_dtypes_as_numpy_does(left, right, rng):
    from batchjac.structured import algebra

    def make(kind, shape):
        if kind == "identity":
            return bj.Identity(shape[0], batch=2)
        return bj.Dense(rng.standard_normal((2, *shape)).astype(kind))

    J, K = make(left, (3, 3)), make(right, (3, 3))
    product = algebra.matmul(J, K)
    dense = lambda M: (
        M.to_dense() if not isinstance(M, bj.Identity) else np.broadcast_to(np.eye(3), (2, 3, 3))
    )  # noqa: E731
    expected = np.matmul(dense(J).astype(np.float64), dense(K).astype(np.float64))
    dtypes = [np.dtype(k) for k in (left, right) if k != "identity"]
    assert product.dtype == np.result_type(*dtypes) and product.dtype.isnative
    assert_close(product.to_dense(), expected, rtol=1e-5 if np.float32 in dtypes else 1e-12)


@pytest.mark.parametrize("fuse", [False, "auto"])
def test_replayed_plans_with_dead_ends_and_shared_vertices_match_complex_step(fuse, rng):
    """A repeated call replays the plan: chain products skip the pruning of dead ends (an
    unused intermediate keeps its edges), vertex eliminations (a value used twice) do not."""
    W = rng.standard_normal((4, 4)) / 2

    def dead_end(x):
        y = np.tanh(x @ W.T)
        unused = np.exp(y) * 2.0  # noqa: F841  # traced, not an output
        return np.sin(y)

    def shared_vertex(x):
        y = np.tanh(x @ W.T)
        return np.sin(y) * np.cos(y @ W)

    for f in (dead_end, shared_vertex):
        for b in (3, 3, 5):
            x = rng.standard_normal((b, 4))
            assert_close(bj.jacobian(f, x, method="exact", fuse=fuse), complex_step_jacobian(f, x))


def test_the_layer_shortcut_of_linear_keeps_the_checks_and_the_program(rng):
    x = rng.standard_normal((3, 4))
    W, b = rng.standard_normal((2, 4)), rng.standard_normal(2)
    program = bj.trace(lambda x: bj.linear(x, W, b), x)
    assert [eq.primitive.name for eq in program.equations] == ["matmul", "add"]
    assert str(program) == str(bj.trace(lambda x: x @ W.T + b, x))
    with pytest.raises(ValueError, match="W must be"):
        bj.jacobian(lambda x: bj.linear(x, W[:, :3]), x, method="exact")
    with pytest.raises(ValueError, match="b must be"):
        bj.jacobian(lambda x: bj.linear(x, W, b[:1]), x, method="exact")
    with pytest.raises(TypeError, match="W"):
        bj.jacobian(lambda x: bj.linear(x, W.astype(np.complex128)), x, method="exact")
    J = bj.jacobian(lambda x: bj.linear(x, W, b), x.astype(np.float32), method="exact")
    assert J.dtype == np.float64  # a float64 weight promotes, as NumPy does
    assert_close(J, np.broadcast_to(W, (3, 2, 4)))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize(
    "case",
    ["x * shared", "shared - x", "x + row", "x * per-sample", "x / 2", "2 - x", "sin x * cos x", "x @ M", "x @ v",
     "stack @ M", "x + x[:, :1]"],
)  # fmt: skip
def test_operands_passed_on_as_they_are_mean_what_numpy_broadcasting_means(case, per_sample, rng):
    """The shortcuts of the operators (a traced array with a number, a shared array or a
    traced array of its shape) give the Jacobians the general operand checks give."""
    B, n = 3, 4
    c = rng.standard_normal(n)
    row = rng.standard_normal((1, n))
    per = rng.standard_normal((B, n))
    M = rng.standard_normal((n, n))
    v = rng.standard_normal(n)
    functions = {
        "x * shared": lambda x: x * c, "shared - x": lambda x: c - x, "x + row": lambda x: np.sin(x + row),
        "x * per-sample": lambda x: x * per, "x / 2": lambda x: x / 2, "2 - x": lambda x: 2 - np.exp(x),
        "sin x * cos x": lambda x: np.sin(x) * np.cos(x), "x @ M": lambda x: np.tanh(x @ M),
        "x @ v": lambda x: (x @ v)[..., None] * x, "stack @ M": lambda x: x.reshape(*x.shape[:-1], 2, 2) @ M[:2, :2],
        "x + x[:, :1]": lambda x: x + x[..., :1],
    }  # fmt: skip
    f = functions[case]
    x = rng.standard_normal((B, n))
    if per_sample and case in ("x + row", "x * per-sample"):
        return  # per sample, these arrays are constants of another shape: not this test's subject
    J = bj.jacobian(f, x, method="exact", fuse=False, per_sample=per_sample)
    assert_close(J, complex_step_jacobian(f, x))


def test_an_array_whose_leading_axis_meets_the_batch_is_still_refused(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="does not broadcast against the batch"):
        bj.jacobian(lambda x: x * np.ones((2, 4)), x, method="exact")
    with pytest.raises(ValueError, match="mix samples|rows are the samples"):
        bj.jacobian(lambda x: np.ones((4, 3)) @ x, x, method="exact")
