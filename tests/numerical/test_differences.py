"""Numerical batched Jacobians (issue 5): accuracy against closed forms, chunking, memory,
complex safety, bad outputs of ``f`` and the progress bar; once per backend.

Every reference is an independent float64 closed form computed with NumPy on the host.
"""

from __future__ import annotations

import doctest
import re
import time
import tracemalloc
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from helpers import assert_close, to_numpy

from batchjac.backends.dispatch import TABLE
from batchjac.core.arrays import namespace
from batchjac.numerical import differences as numerical
from batchjac.numerical.differences import NotComplexSafeError, numerical_value_and_jacobian

METHODS = ("complex-step", "central", "forward")
DTYPES = (np.float64, np.float32)

# float64: the accuracy the issue asks for; float32: a few times the errors measured on
# these functions (documented in batchjac/numerical.py).
RTOL = {
    ("complex-step", np.float64): 1e-13,
    ("central", np.float64): 1e-8,
    ("forward", np.float64): 1e-6,
    ("complex-step", np.float32): 2e-6,
    ("central", np.float32): 5e-4,
    ("forward", np.float32): 5e-3,
}


@pytest.fixture
def numerical_backend(backend):
    """A backend that implements the ``difference_columns`` primitive."""
    if TABLE["difference_columns"][backend] is None:
        pytest.skip(f"backend {backend!r} has no difference_columns primitive")
    return backend


# --------------------------------------------------------------------------------------
# Functions with closed-form Jacobians
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``f(*args)`` with its inputs and closed-form Jacobians (float64, NumPy, numerator)."""

    f: Callable
    shapes: tuple  # per-sample shape of each batched argument
    shared: tuple  # shapes of the shared (unbatched) arguments that follow
    argnums: tuple
    jacobians: Callable  # (*args as float64 NumPy) -> tuple of (B, *out, *in)


def _sin_reverse(x):
    return namespace(x).sin(x) * x[..., ::-1]


def _sin_reverse_jacobian(x):
    batch, n = x.shape
    J = np.zeros((batch, n, n))
    i = np.arange(n)
    J[:, i, i] += np.cos(x) * x[:, ::-1]
    J[:, i, n - 1 - i] += np.sin(x)
    return (J,)


def _mlp(x, W1, b1, W2):
    return namespace(x).tanh(x @ W1.T + b1) @ W2.T


def _mlp_jacobian(x, W1, b1, W2):
    t = np.tanh(x @ W1.T + b1)
    return (np.einsum("oh,bh,hi->boi", W2, 1 - t**2, W1),)


def _softmax(x):
    xp = namespace(x)
    # Softmax is shift-invariant, so taking the shift from the real part is complex-safe.
    e = xp.exp(x - x.real.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_jacobian(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    s = e / e.sum(axis=-1, keepdims=True)
    return (np.einsum("bi,ij->bij", s, np.eye(x.shape[1])) - s[:, :, None] * s[:, None, :],)


def _matrix_square(X):
    return X @ X


def _matrix_square_jacobian(X):
    eye = np.eye(X.shape[1])
    # d(XX)[i, j] / dX[k, l] = delta_ik X[l, j] + X[i, k] delta_jl
    return (np.einsum("ik,blj->bijkl", eye, X) + np.einsum("bik,jl->bijkl", X, eye),)


def _vector_to_matrix(x):
    return x[:, :, None] * namespace(x).sin(x)[:, None, :]


def _vector_to_matrix_jacobian(x):
    eye = np.eye(x.shape[1])
    # d(x_i sin x_j) / dx_k = delta_ik sin x_j + x_i cos x_j delta_jk
    return (np.einsum("ik,bj->bijk", eye, np.sin(x)) + np.einsum("bi,bj,jk->bijk", x, np.cos(x), eye),)


def _cube_sum(x):
    return (x**3).sum(axis=(1, 2))


def _cube_sum_jacobian(x):
    return (3 * x**2,)


def _two_arguments(u, v, A):
    return u * namespace(u).sin(v) + u @ A


def _two_arguments_jacobian(u, v, A):
    n = u.shape[1]
    du = np.einsum("bi,ij->bij", np.sin(v), np.eye(n)) + A.T[None]
    dv = np.einsum("bi,ij->bij", u * np.cos(v), np.eye(n))
    return du, dv


CASES = {
    "sin_reverse": Case(_sin_reverse, ((5,),), (), (0,), _sin_reverse_jacobian),
    "mlp": Case(_mlp, ((4,),), ((6, 4), (6,), (3, 6)), (0,), _mlp_jacobian),
    "softmax": Case(_softmax, ((5,),), (), (0,), _softmax_jacobian),
    "matrix_square": Case(_matrix_square, ((3, 3),), (), (0,), _matrix_square_jacobian),
    "vector_to_matrix": Case(_vector_to_matrix, ((4,),), (), (0,), _vector_to_matrix_jacobian),
    "cube_sum": Case(_cube_sum, ((2, 3),), (), (0,), _cube_sum_jacobian),
    "two_arguments": Case(_two_arguments, ((3,), (3,)), ((3, 3),), (0, 1), _two_arguments_jacobian),
}


def case_inputs(case: Case, batch: int, rng):
    """float64 NumPy arguments of ``case``: the batched ones, then the shared ones."""
    batched = [rng.standard_normal((batch, *shape)) for shape in case.shapes]
    shared = [rng.standard_normal(shape) for shape in case.shared]
    return batched + shared


def place(a, on_device, dtype, layout="contiguous"):
    """``a`` on the backend's device as ``dtype``: contiguous, strided (a view taking every
    other entry of the last axis) or read-only (NumPy)."""
    a = np.asarray(a, dtype=dtype)
    if layout == "strided":
        return on_device(np.repeat(a, 2, axis=-1))[..., ::2]
    placed = on_device(a)
    if layout == "readonly" and isinstance(placed, np.ndarray):
        placed.setflags(write=False)
    return placed


# --------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, 1, 9])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(CASES))
def test_accuracy_against_closed_form(name, method, dtype, batch, numerical_backend, on_device, rng):
    case = CASES[name]
    host = case_inputs(case, batch, rng)
    args = tuple(place(a, on_device, dtype) for a in host)
    value, jacobians = numerical_value_and_jacobian(
        case.f, args, case.argnums, method, backend=numerical_backend
    )
    rounded = [np.asarray(a, dtype=dtype).astype(np.float64) for a in host]  # the points evaluated
    expected = case.jacobians(*rounded)
    assert type(value) is type(args[0]) and type(jacobians[0]) is type(args[0])
    assert_close(value, to_numpy(case.f(*[np.asarray(a) for a in rounded])), rtol=RTOL["complex-step", dtype])
    assert len(jacobians) == len(expected)
    for J, E, i in zip(jacobians, expected, case.argnums):
        assert J.shape == E.shape == (batch, *value.shape[1:], *args[i].shape[1:])
        assert J.dtype == dtype and J.flags.c_contiguous
        assert_close(J, E, rtol=RTOL[method, dtype])


@pytest.mark.parametrize("layout", ["strided", "readonly"])
@pytest.mark.parametrize("method", METHODS)
def test_strided_and_readonly_inputs_are_used_and_left_unchanged(
    layout, method, numerical_backend, on_device, rng
):
    case = CASES["two_arguments"]
    host = case_inputs(case, 6, rng)
    args = tuple(place(a, on_device, np.float64, layout) for a in host)
    before = [to_numpy(a).copy() for a in args]
    _, jacobians = numerical_value_and_jacobian(case.f, args, case.argnums, method, backend=numerical_backend)
    for J, E in zip(jacobians, case.jacobians(*host)):
        assert_close(J, E, rtol=RTOL[method, np.float64])
    for a, b in zip(args, before):
        assert np.array_equal(to_numpy(a), b)


@pytest.mark.parametrize("method", METHODS)
def test_steps_are_exact_so_the_identity_is_exact(method, numerical_backend, on_device, rng):
    # For f(x) = x a difference quotient is exactly 1 only if x + h and x - h are exact and
    # the step divided by is the step taken; inputs span 60 orders of magnitude and signs.
    host = rng.standard_normal((50, 6)) * 10.0 ** rng.integers(-30, 30, (50, 6))
    for dtype in DTYPES:
        x = place(np.clip(host, -1e30, 1e30), on_device, dtype)
        _, (J,) = numerical_value_and_jacobian(lambda x: x + 0, (x,), (0,), method, backend=numerical_backend)
        assert np.array_equal(to_numpy(J), np.broadcast_to(np.eye(6, dtype=dtype), (50, 6, 6)))


def test_step_sizes_follow_the_scale_of_the_input():
    x = np.array([[0.25, -3.0, 1e6, 0.0]])
    eps = np.finfo(np.float64).eps
    scale = np.maximum(1, np.abs(x))
    for method, relative in (("forward", eps**0.5), ("central", eps ** (1 / 3)), ("complex-step", eps)):
        h = numerical.steps(x, method)
        assert np.all((h > 0.5 * relative * scale) & (h < 2 * relative * scale)), method
    h = numerical.steps(x, "complex-step")
    assert np.array_equal(np.frexp(h)[0], np.full_like(h, 0.5))  # powers of two


def test_batched_extra_arguments_are_tiled_and_shared_ones_passed_through(numerical_backend, on_device, rng):
    # y = s * tanh(W x) + c with s per sample (leading axis B: tiled), W shared (passed as is)
    # and c a Python float.
    batch, n, m = 5, 4, 3
    x, s, W = rng.standard_normal((batch, n)), rng.standard_normal(batch), rng.standard_normal((m, n))
    seen = []

    def f(x, s, W, c):
        seen.append((x.shape[0], s.shape[0], W.shape))
        return s[:, None] * namespace(x).tanh(x @ W.T) + c

    args = (on_device(x), on_device(s), on_device(W), 0.5)
    for method in METHODS:
        seen.clear()
        _, (J,) = numerical_value_and_jacobian(f, args, (0,), method, backend=numerical_backend, chunk_size=2)
        t = np.tanh(x @ W.T)
        assert_close(J, s[:, None, None] * (1 - t**2)[:, :, None] * W, rtol=RTOL[method, np.float64])
        assert all(count == count_s and shape == (m, n) for count, count_s, shape in seen)
        assert {count for count, _, _ in seen} > {batch}  # stacked batches were used


# --------------------------------------------------------------------------------------
# Chunking and memory
# --------------------------------------------------------------------------------------


def _batch_invariant(u, v):
    # Element-wise work and einsum compute each sample the same way whatever the batch size
    # (BLAS matmul need not), so the chunking alone decides whether bits can differ.
    xp = namespace(u)
    mixed = xp.einsum(
        "bi,ij->bj", xp.sin(u) * v, xp.asarray(np.arange(1.0, 26.0).reshape(5, 5) / 25, dtype=u.dtype)
    )
    return mixed * u[:, ::-1] + xp.tanh(v) ** 2


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("method", METHODS)
def test_results_are_identical_bit_for_bit_for_every_chunk_size(
    method, dtype, numerical_backend, on_device, rng
):
    args = tuple(on_device(rng.standard_normal((11, 5)).astype(dtype)) for _ in range(2))
    results = {}
    for chunk_size in (1, 2, 3, 7, 5, None):
        results[chunk_size] = numerical_value_and_jacobian(
            _batch_invariant, args, (0, 1), method, backend=numerical_backend, chunk_size=chunk_size
        )
    value, jacobians = results.pop(None)
    for chunk_size, (other_value, others) in results.items():
        assert np.array_equal(to_numpy(other_value), to_numpy(value)), chunk_size
        for J, K in zip(jacobians, others):
            assert np.array_equal(to_numpy(J), to_numpy(K)), chunk_size


def test_a_petabyte_jacobian_fails_at_once_and_allocates_nothing():
    # B = 10^7 samples of 10^4 inputs, read-only and broadcast from one number: the
    # (B, 10^4, 10^4) float64 Jacobian is 8 PB.
    x = np.broadcast_to(np.zeros(1), (10**7, 10**4))
    assert not x.flags.writeable
    for chunk_size in (None, 1):
        tracemalloc.start()
        start = time.perf_counter()
        with pytest.raises(MemoryError) as err:
            numerical_value_and_jacobian(lambda x: 2 * x, (x,), (0,), "central", chunk_size=chunk_size)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        message = str(err.value)
        pattern = r"needs ([\d,]+) bytes .*: ([\d,]+) for the Jacobians .* only ([\d,]+) bytes are free"
        needed, jacobian, free = (int(s.replace(",", "")) for s in re.search(pattern, message).groups())
        assert jacobian == 8 * 10**15 and jacobian < needed < 1.01 * jacobian
        assert "(10000000, 10000, 10000)" in message and f"{free:,} bytes are free on the cpu" in message
        assert peak < 4 << 20 and elapsed < 5


def test_automatic_chunk_size_keeps_within_half_the_free_memory(monkeypatch, rng):
    # f(x) = 2x allocates only its output, which the estimate counts, so the traced peak
    # must stay within the half of "free" memory that chunk_size=None may use.
    batch, n = 2000, 64
    x = rng.standard_normal((batch, n))
    jacobian_bytes = batch * n * n * 8
    free = 2 * jacobian_bytes + 24 * batch * n * 8  # room for the Jacobian and ~2 columns
    monkeypatch.setattr(numerical, "free_memory", lambda x: free)
    for method in METHODS:
        tracemalloc.start()
        _, (J,) = numerical_value_and_jacobian(lambda x: 2 * x, (x,), (0,), method)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert_close(J, np.broadcast_to(2 * np.eye(n), J.shape), rtol=RTOL[method, np.float64])
        assert jacobian_bytes < peak <= free // 2, method
    with pytest.raises(MemoryError, match=f"only {jacobian_bytes // 2:,} bytes are free"):
        monkeypatch.setattr(numerical, "free_memory", lambda x: jacobian_bytes // 2)
        numerical_value_and_jacobian(lambda x: 2 * x, (x,), (0,), "forward")


@pytest.mark.parametrize(
    "chunk_size,error,message",
    [
        (0, ValueError, "chunk_size: expected a positive int or None, got 0"),
        (-1, ValueError, "chunk_size: expected a positive int or None, got -1"),
        (np.int64(0), ValueError, "chunk_size: expected a positive int or None, got 0"),
        (1.5, TypeError, r"chunk_size: expected a positive int or None, got 1.5 \(float\)"),
        (True, TypeError, r"chunk_size: expected a positive int or None, got True \(bool\)"),
        ("2", TypeError, "chunk_size: expected a positive int or None, got '2'"),
    ],
)
def test_chunk_size_must_be_a_positive_int(chunk_size, error, message):
    for method in METHODS:  # whatever the method, before f runs
        with pytest.raises(error, match=message):
            numerical_value_and_jacobian(np.sin, (np.zeros((2, 3)),), (0,), method, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [np.int64(2), np.int32(3), np.uint8(7)])
def test_numpy_integer_chunk_sizes_are_taken_like_ints(chunk_size, rng):
    x = rng.standard_normal((4, 5))
    _, (J,) = numerical_value_and_jacobian(np.sin, (x,), np.int64(0), "central", chunk_size=chunk_size)
    assert_close(J, np.cos(x)[:, :, None] * np.eye(5), rtol=1e-8)


def test_an_explicit_chunk_size_that_does_not_fit_fails_before_allocating(monkeypatch, rng):
    batch, n = 500, 40
    x = rng.standard_normal((batch, n))
    jacobian_bytes = batch * n * n * 8
    monkeypatch.setattr(numerical, "free_memory", lambda x: 2 * jacobian_bytes)
    _, (J,) = numerical_value_and_jacobian(lambda x: 2 * x, (x,), 0, "central", chunk_size=4)  # fits
    assert_close(J, np.broadcast_to(2 * np.eye(n), J.shape), rtol=1e-8)
    tracemalloc.start()
    with pytest.raises(
        MemoryError, match=r"with chunk_size=40: .* bytes are free on the cpu; use a smaller chunk_size"
    ):
        numerical_value_and_jacobian(lambda x: 2 * x, (x,), 0, "central", chunk_size=40)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < jacobian_bytes // 4  # the Jacobian was never allocated


@pytest.mark.parametrize("progress", ["yes", 1, 0.0])
def test_progress_must_be_true_false_or_none(progress):
    for method in METHODS:
        with pytest.raises(TypeError, match=r"progress: expected True, False or None, got"):
            numerical_value_and_jacobian(np.sin, (np.zeros((2, 3)),), 0, method, progress=progress)


# --------------------------------------------------------------------------------------
# Complex safety and bad outputs of f
# --------------------------------------------------------------------------------------


def _takes_real_part(x):
    return namespace(x).real(namespace(x).sin(x))


def _abs_returns_real(x):
    return namespace(x).abs(x) * 2


def _times_abs(x):  # x |x|: complex output, but abs dropped the imaginary part
    return x * namespace(x).abs(x)


def _casts_to_real(x):
    return (x.real**2).astype(x.dtype)


@pytest.mark.parametrize("f", [_takes_real_part, _abs_returns_real, _times_abs, _casts_to_real])
def test_complex_step_rejects_functions_that_drop_the_imaginary_part(f, numerical_backend, on_device, rng):
    host = rng.uniform(0.5, 2.0, (6, 4)) * rng.choice([-1, 1], (6, 4))
    x = on_device(host)
    with pytest.raises(NotComplexSafeError, match="complex"):
        numerical_value_and_jacobian(f, (x,), (0,), "complex-step", backend=numerical_backend)
    # The same function differentiates fine with central differences.
    derivative = {
        _takes_real_part: np.cos(host),
        _abs_returns_real: 2 * np.sign(host),
        _times_abs: 2 * np.abs(host),
        _casts_to_real: 2 * host,
    }[f]
    _, (J,) = numerical_value_and_jacobian(f, (x,), (0,), "central", backend=numerical_backend)
    assert_close(J, derivative[:, :, None] * np.eye(4), rtol=1e-8)
    assert issubclass(NotComplexSafeError, ValueError)


@pytest.mark.parametrize("method", METHODS)
def test_an_f_that_changes_the_batch_size_raises_value_error(method, numerical_backend, on_device, rng):
    x = on_device(rng.standard_normal((7, 3)))
    with pytest.raises(ValueError, match=r"map a batch of 7 samples to 7 outputs.*\(6, 3\)"):
        numerical_value_and_jacobian(lambda x: x[:-1], (x,), (0,), method, backend=numerical_backend)
    # Right on the unperturbed batch, wrong on the stacked one: caught as well.
    with pytest.raises(ValueError, match=r"map a batch of \d+ samples .* returned shape \(7, 3\)"):
        numerical_value_and_jacobian(lambda x: x[:7] * 1.0, (x,), (0,), method, backend=numerical_backend)


@pytest.mark.parametrize("make", [lambda x: x > 0, lambda x: (x * 10).astype(np.int64)], ids=["bool", "int"])
def test_non_float_output_raises_type_error(make, numerical_backend, on_device, rng):
    x = on_device(rng.standard_normal((4, 3)))
    for method in METHODS:
        with pytest.raises(TypeError, match="floating-point"):
            numerical_value_and_jacobian(make, (x,), (0,), method, backend=numerical_backend)


def test_non_float_or_unbatched_differentiated_arguments_are_rejected():
    with pytest.raises(TypeError, match="argument 0: expected a real floating-point array"):
        numerical_value_and_jacobian(np.sin, (np.zeros((2, 3), dtype=np.int64),), (0,), "central")
    with pytest.raises(ValueError, match="argument 1: batch size 3 differs from argument 0's 2"):
        numerical_value_and_jacobian(np.multiply, (np.zeros((2, 3)), np.zeros((3, 3))), (0, 1), "central")
    with pytest.raises(ValueError, match="method"):
        numerical_value_and_jacobian(np.sin, (np.zeros((2, 3)),), (0,), "backward")


# --------------------------------------------------------------------------------------
# Progress bar and docstring examples
# --------------------------------------------------------------------------------------


def test_progress_bar_is_written_to_stderr_only_when_asked(capsys, rng):
    pytest.importorskip("tqdm")
    x = rng.standard_normal((3, 5))
    numerical_value_and_jacobian(np.sin, (x,), (0,), "central", chunk_size=1, progress=True)
    err = capsys.readouterr().err
    assert "numerical Jacobian" in err and "5/5" in err
    for progress in (False, None):  # None: stderr is captured, not a terminal
        numerical_value_and_jacobian(np.sin, (x,), (0,), "central", chunk_size=1, progress=progress)
        assert capsys.readouterr().err == ""


def test_progress_true_without_tqdm_raises_import_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm":
            raise ImportError("No module named 'tqdm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    x = np.zeros((2, 3))
    with pytest.raises(ImportError, match="progress=True needs tqdm"):
        numerical_value_and_jacobian(np.sin, (x,), (0,), "central", progress=True)
    _, (J,) = numerical_value_and_jacobian(np.sin, (x,), (0,), "central", chunk_size=1)  # auto: no bar
    assert_close(J, np.broadcast_to(np.eye(3), (2, 3, 3)), rtol=1e-8)


def test_docstring_examples_run():
    failed, attempted = doctest.testmod(numerical)
    assert attempted > 0 and failed == 0
