"""Sparse numerical Jacobians by column colouring (issue 19): the colouring itself, the
coloured differences against closed forms, the exact path and the dense numerical path,
evaluation counts, chunking, errors and ``sparsity="auto"``.

References: the closed-form Jacobian of the banded residual (float64 NumPy), the exact
path's Jacobian of the same (traced) function, and the dense numerical path, which the
coloured path must reproduce bit for bit where the pattern is structural.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from helpers import DIFFERENCES, assert_close, to_numpy

import batchjac as bj
from batchjac.core.errors import NotComplexSafeError
from batchjac.numerical import coloring
from batchjac.numerical.coloring import Coloring, color_columns, sparse_value_and_jacobian
from batchjac.numerical.differences import HEAD_SAMPLES, numerical_value_and_jacobian

METHODS = ("central", "forward", "complex-step")
DTYPES = (np.float32, np.float64)
COUPLING = 7  # the residual's coupling band: output i reads x[i + 7]


def residual(x):
    """A banded residual, sample by sample: ``r_i = 2 x_i - x_(i-1) - x_(i+1) + 0.1 x_i^3 +
    0.5 sin(x_(i+7))`` (missing neighbours are zero). NumPy functions only: it traces, and
    runs on CuPy arrays through NumPy's dispatch."""
    zero = np.zeros_like(x[:, :1])
    left = np.concatenate([zero, x[:, :-1]], axis=1)
    right = np.concatenate([x[:, 1:], zero], axis=1)
    far = np.concatenate([x[:, COUPLING:], np.zeros_like(x[:, :COUPLING])], axis=1)
    return 2 * x - left - right + 0.1 * x**3 + 0.5 * np.sin(far)


def residual_jacobian(x):
    """Closed form of :func:`residual`'s Jacobian, ``(B, n, n)``, float64."""
    x = np.asarray(x, dtype=np.float64)
    batch, n = x.shape
    J = np.zeros((batch, n, n))
    i = np.arange(n)
    J[:, i, i] = 2 + 0.3 * x**2
    J[:, i[1:], i[:-1]] = -1
    J[:, i[:-1], i[1:]] = -1
    J[:, i[:-COUPLING], i[COUPLING:]] = 0.5 * np.cos(x[:, COUPLING:])
    return J


def residual_pattern(n):
    offsets = (-1, 0, 1, COUPLING)
    return np.any([np.eye(n, k=k, dtype=bool) for k in offsets], axis=0)


def assert_valid(c: Coloring, P):
    """No two columns of a colour share a row; every column with entries is coloured, and
    the colouring is greedy (a column of colour ``c`` has neighbours of every colour below)."""
    P = scipy.sparse.csr_array(P).astype(bool)
    P.sum_duplicates()
    m, n = P.shape
    rows, columns = P.nonzero()
    colour = c.colors[columns]
    assert (colour >= 0).all() and c.colors.shape == (n,)
    has_entries = np.zeros(n, dtype=bool)
    has_entries[columns] = True
    assert (c.colors[~has_entries] == -1).all()
    assert np.unique(rows * (c.count + 1) + colour).size == rows.size, "two columns of a colour share a row"
    assert c.count == (int(c.colors.max()) + 1 if has_entries.any() else 0)
    neighbours = (P.T.astype(np.int64) @ P.astype(np.int64)).tocoo()
    for j in np.flatnonzero(has_entries):
        seen = set(c.colors[neighbours.col[neighbours.row == j]].tolist())
        assert set(range(c.colors[j])) <= seen, f"column {j} could take a smaller colour"


# --------------------------------------------------------------------------------------
# Colouring
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 30), (40, 25), (25, 40), (1, 10), (10, 1)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.2, 1.0])
def test_colouring_of_random_patterns_is_valid(shape, density):
    rng = np.random.default_rng(hash((shape, density)) % 2**32)
    P = rng.random(shape) < density
    c = color_columns(P)
    assert_valid(c, P)
    assert c.shape == shape and c.nnz == P.sum()
    longest_row = int(P.sum(axis=1).max()) if P.size else 0
    degrees = (P.T.astype(int) @ P.astype(int) > 0).sum(axis=1) - P.any(axis=0)
    assert longest_row <= c.count <= int(degrees.max(initial=-1)) + 1


@pytest.mark.parametrize("n", [1, 2, 5, 64, 1000])
@pytest.mark.parametrize("band", [(0,), (-1, 0, 1), (-2, -1, 0, 1, 2), (0, 3), (-1, 0, 1, COUPLING)])
def test_colouring_of_banded_patterns(n, band):
    P = np.any([np.eye(n, k=k, dtype=bool) for k in band], axis=0)
    c = color_columns(P)
    assert_valid(c, P)
    width = max(band) - min(band) + 1
    assert c.count <= min(n, width)


def test_issue_banded_residual_needs_at_most_six_colours():
    n = 4096
    c = color_columns(residual_pattern(n))
    assert_valid(c, residual_pattern(n))
    assert c.count <= 6


def test_pattern_kinds_give_the_same_colouring():
    rng = np.random.default_rng(3)
    P = rng.random((20, 30)) < 0.15
    P[0, 29] = False
    reference = color_columns(P)
    rows, columns = np.nonzero(P)
    # SciPy: a stored zero is no entry; a repeated position is one entry (or-ed, never cancelled)
    stored_zero = scipy.sparse.coo_array((np.r_[np.ones(rows.size), 0.0], (np.r_[rows, 0], np.r_[columns, 29])),
                                         shape=P.shape)  # fmt: skip
    repeated = scipy.sparse.coo_array((np.r_[np.ones(rows.size), -1.0], (np.r_[rows, rows[0]], np.r_[columns, columns[0]])),
                                      shape=P.shape)  # fmt: skip
    indptr = np.r_[0, np.cumsum(P.sum(axis=1))]
    as_sparse = bj.Sparse(indptr, columns, np.ones((2, columns.size)), in_size=P.shape[1])
    for kind in (P.astype(np.int8), scipy.sparse.csr_array(P), scipy.sparse.csc_matrix(P), as_sparse, stored_zero,
                 repeated, P.tolist(), reference):  # fmt: skip
        c = color_columns(kind)
        assert np.array_equal(c.colors, reference.colors) and c.count == reference.count
        np.testing.assert_array_equal(c.indices, columns)


def test_the_validity_check_rejects_bad_colourings():
    P = residual_pattern(12)
    good = color_columns(P)
    shared_row = Coloring(np.zeros(12, dtype=np.int64), 1, good.indptr, good.indices, good.shape)
    with pytest.raises(AssertionError, match="share a row"):
        assert_valid(shared_row, P)
    wasteful = Coloring(np.arange(12), 12, good.indptr, good.indices, good.shape)
    with pytest.raises(AssertionError, match="could take a smaller colour"):
        assert_valid(wasteful, P)


def test_colouring_is_fast_for_large_banded_patterns():
    import time

    n = 100_000
    P = scipy.sparse.diags([np.ones(n - abs(k)) for k in (-1, 0, 1, COUPLING)], [-1, 0, 1, COUPLING],
                           shape=(n, n), format="csr")  # fmt: skip
    color_columns(P[:10, :10])  # compiled (or loaded) once
    start = time.perf_counter()
    c = color_columns(P)
    assert time.perf_counter() - start < 2.0  # measured: ~30 ms
    assert c.count <= 6


@pytest.mark.parametrize(
    "pattern, error, match",
    [
        (np.ones((3, 3)), TypeError, r"pattern: expected booleans .* got dtype float64; pass pattern != 0"),
        (np.array([[0, 2], [1, 0]]), ValueError, r"pattern: an integer pattern must hold only 0 and 1"),
        (np.ones((2, 2, 2), dtype=bool), ValueError, r"pattern: expected a 2-D pattern \(m, n\), got shape \(2, 2, 2\)"),
        ("dense", TypeError, r"pattern: expected a boolean array \(m, n\), a SciPy sparse matrix, .* got 'dense'"),
        (5, TypeError, r"pattern: expected a boolean array .* got 5 \(int\)"),
        (np.array([["a"]]), TypeError, r"pattern: expected booleans"),
    ],
)  # fmt: skip
def test_bad_patterns_are_refused(pattern, error, match):
    with pytest.raises(error, match=match):
        color_columns(pattern)


# --------------------------------------------------------------------------------------
# Coloured differences
# --------------------------------------------------------------------------------------


def _input(batch, n, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, n)).astype(dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [0, 1, 5])
def test_coloured_jacobian_against_closed_form_exact_and_dense(method, dtype, batch):
    n = 40
    x = _input(batch, n, dtype)
    value, (S,) = sparse_value_and_jacobian(residual, (x,), 0, method, pattern=residual_pattern(n))
    assert isinstance(S, bj.Sparse) and S.shape == (batch, n, n)
    assert S.values.dtype == dtype and S.values.shape == (batch, residual_pattern(n).sum())
    assert S.colors == color_columns(residual_pattern(n)).count <= 6
    tolerance = DIFFERENCES[method][1][dtype == np.float64]
    assert_close(value, residual(x.astype(np.float64)), rtol=tolerance)
    assert_close(S.to_dense(), residual_jacobian(x), rtol=tolerance)
    if batch:
        exact = bj.jacobian(residual, x.astype(np.float64), method="exact")
        assert_close(S.to_dense(), exact, rtol=tolerance)
    # the dense path perturbs one column at a time with the same steps: the same numbers
    _, (dense,) = numerical_value_and_jacobian(residual, (x,), 0, method)
    np.testing.assert_array_equal(S.to_dense(), dense)


def test_float64_central_agrees_with_exact_within_1e_8():
    n = 256
    x = _input(16, n, np.float64, seed=4)
    _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=bj.sparsity(residual, x))
    exact = bj.jacobian(residual, x, method="exact", structured=True)
    assert isinstance(exact, bj.Sparse)
    assert np.abs(S.to_dense() - exact.to_dense()).max() < 1e-8


@pytest.mark.parametrize("method", METHODS)
def test_every_chunk_size_gives_identical_results(method):
    n = 50
    x = _input(3, n, np.float64, seed=1)
    P = residual_pattern(n)
    _, (reference,) = sparse_value_and_jacobian(residual, (x,), 0, method, pattern=P)
    for chunk_size in range(1, reference.colors + 2):
        _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, method, pattern=P, chunk_size=chunk_size)
        np.testing.assert_array_equal(S.values, reference.values)


class Counted:
    """``f`` that records the batch size of every call."""

    def __init__(self, f):
        self.f, self.sizes = f, []

    def __call__(self, x):
        self.sizes.append(x.shape[0])
        return self.f(x)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_evaluations_are_counted(method, chunk_size):
    n, batch = 64, 5
    x = _input(batch, n, np.float64)
    f = Counted(residual)
    _, (S,) = sparse_value_and_jacobian(
        f, (x,), 0, method, pattern=residual_pattern(n), chunk_size=chunk_size
    )
    c = S.colors
    expected = {"central": 2 * c, "forward": c + 1, "complex-step": c}[method]
    assert S.evaluations == expected
    assert S.coloring.count == c
    # f's calls: the head, the value, the mixing check (2B), the differences, and for
    # complex step the safety check (12B real samples)
    # f's calls: the head, the value, the mixing check (2B), one call per pass of k colours
    # (2kB, kB, kB samples), and for complex step the safety check (12B real samples)
    per_colour = {"central": 2, "forward": 1, "complex-step": 1}[method]
    k = chunk_size or c
    passes = [per_colour * min(k, c - start) * batch for start in range(0, c, k)]
    safety = [12 * batch] if method == "complex-step" else []
    assert f.sizes == [min(batch, HEAD_SAMPLES), batch, 2 * batch, *passes, *safety]


def test_several_arguments_take_one_pattern_each():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))

    def f(x, w):
        return np.sin(x) * w + np.concatenate([x[:, 1:], x[:, :1]], axis=1)

    Px = np.eye(6, dtype=bool) | np.roll(np.eye(6, dtype=bool), 1, axis=1)
    Pw = np.eye(6, dtype=bool)
    value, (Sx, Sw) = sparse_value_and_jacobian(f, (x, w), (0, 1), "central", pattern=(Px, Pw))
    Jx = np.stack([np.diag(np.cos(a) * b) + np.roll(np.eye(6), 1, axis=1) for a, b in zip(x, w)])
    Jw = np.stack([np.diag(np.sin(a)) for a in x])
    assert_close(Sx.to_dense(), Jx, rtol=1e-8)
    assert_close(Sw.to_dense(), Jw, rtol=1e-8)
    assert (Sx.colors, Sw.colors) == (2, 1)
    with pytest.raises(ValueError, match=r"sparsity: 2 arrays are differentiated \(argnums \(0, 1\)\): give one "
                                         r"pattern per array, a tuple of 2 .* got ndarray"):  # fmt: skip
        sparse_value_and_jacobian(f, (x, w), (0, 1), "central", pattern=Px)


def test_matrix_shaped_input_and_output_flatten_row_major():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3, 2, 4))

    def f(X):
        return X[:, ::-1, :] ** 2  # output (i, j) reads X[1 - i, j]

    P = np.zeros((8, 8), dtype=bool)
    for i in range(2):
        for j in range(4):
            P[i * 4 + j, (1 - i) * 4 + j] = True
    _, (S,) = sparse_value_and_jacobian(f, (X,), 0, "complex-step", pattern=P)
    assert S.colors == 1 and S.evaluations == 1
    expected = np.zeros((3, 8, 8))
    flat = X.reshape(3, 8)
    expected[:, np.arange(8), [4, 5, 6, 7, 0, 1, 2, 3]] = 2 * flat[:, [4, 5, 6, 7, 0, 1, 2, 3]]
    assert_close(S.to_dense(), expected, rtol=1e-13)


def test_inputs_are_not_modified_and_may_be_read_only_or_strided():
    base = _input(6, 80, np.float64, seed=7)
    x = base[::2, ::2]  # (3, 40), not contiguous
    x.flags.writeable = False
    before = x.copy()
    _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=residual_pattern(40))
    np.testing.assert_array_equal(x, before)
    assert_close(S.to_dense(), residual_jacobian(before), rtol=1e-8)


def test_an_empty_pattern_evaluates_no_differences():
    x = _input(3, 5, np.float64)
    f = Counted(lambda x: np.ones_like(x))
    _, (S,) = sparse_value_and_jacobian(f, (x,), 0, "central", pattern=np.zeros((5, 5), dtype=bool))
    assert (S.colors, S.evaluations, S.nnz) == (0, 0, 0)
    np.testing.assert_array_equal(S.to_dense(), np.zeros((3, 5, 5)))
    assert sum(f.sizes) == 3 + 3  # the head and the value


def test_through_the_api_dense_results_and_layouts():
    n = 30
    x = _input(4, n, np.float64, seed=8)
    P = residual_pattern(n)
    for method in METHODS:
        J = bj.jacobian(residual, x, method=method, sparsity=P)
        assert_close(J, residual_jacobian(x), rtol=DIFFERENCES[method][1][1])
        Jt = bj.jacobian(residual, x, method=method, sparsity=P, layout="denominator")
        np.testing.assert_array_equal(Jt, np.swapaxes(J, 1, 2))
    with pytest.raises(
        ValueError,
        match=r"sparsity: the pattern for argument 0 must be \(m, n\) = \(30, 30\) .* got \(30, 29\)",
    ):
        bj.jacobian(residual, x, method="central", sparsity=P[:, :-1])


# --------------------------------------------------------------------------------------
# Errors and checks
# --------------------------------------------------------------------------------------


def test_pattern_shape_must_match_the_output_and_input_sizes():
    x = _input(2, 10, np.float64)
    for bad in (
        np.eye(9, 10, dtype=bool),
        np.eye(10, 11, dtype=bool),
        color_columns(np.eye(10, 11, dtype=bool)),
    ):
        with pytest.raises(
            ValueError, match=r"sparsity: the pattern for argument 0 must be \(m, n\) = \(10, 10\)"
        ):
            sparse_value_and_jacobian(np.sin, (x,), 0, "central", pattern=bad)
    with pytest.raises(TypeError, match=r"sparsity: expected booleans .* got dtype float64"):
        sparse_value_and_jacobian(np.sin, (x,), 0, "central", pattern=np.eye(10))
    with pytest.raises(ValueError, match=r"sparsity: expected a boolean array .* or 'auto', got 'detect'"):
        sparse_value_and_jacobian(np.sin, (x,), 0, "central", pattern="detect")


def test_memory_error_before_allocating(monkeypatch):
    x = _input(4, 64, np.float64)
    f = Counted(residual)
    monkeypatch.setattr(coloring, "free_memory", lambda a: 10_000)
    with pytest.raises(MemoryError, match=r"sparse central Jacobian with respect to argument 0 needs [\d,]+ bytes "
                                          r"even one colour at a time: .* only 10,000 bytes are free"):  # fmt: skip
        sparse_value_and_jacobian(f, (x,), 0, "central", pattern=residual_pattern(64))
    assert f.sizes == [4]  # only the head ran
    with pytest.raises(MemoryError, match=r"with chunk_size=3 colours"):
        sparse_value_and_jacobian(f, (x,), 0, "central", pattern=residual_pattern(64), chunk_size=3)


def test_memory_budget_chunks_the_colours(monkeypatch):
    x = _input(4, 64, np.float64)
    P = residual_pattern(64)
    _, (reference,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=P)
    f = Counted(residual)
    monkeypatch.setattr(coloring, "free_memory", lambda a: 120_000)  # room for about two colours a pass
    _, (S,) = sparse_value_and_jacobian(f, (x,), 0, "central", pattern=P)
    np.testing.assert_array_equal(S.values, reference.values)
    assert reference.colors == 6 and f.sizes[-3:] == [2 * 2 * 4] * 3  # +h and -h of 2 colours, 3 passes


def test_complex_step_of_a_function_that_drops_imaginary_parts_raises():
    x = _input(3, 8, np.float64) + 2.0
    with pytest.raises(NotComplexSafeError, match="f is not complex-safe"):
        sparse_value_and_jacobian(
            lambda x: x * np.abs(x), (x,), 0, "complex-step", pattern=np.eye(8, dtype=bool)
        )
    # central differences are right for it
    _, (S,) = sparse_value_and_jacobian(
        lambda x: x * np.abs(x), (x,), 0, "central", pattern=np.eye(8, dtype=bool)
    )
    assert_close(S.values, 2 * np.abs(x), rtol=1e-8)


def test_samples_that_mix_are_refused():
    x = _input(4, 6, np.float64)
    with pytest.raises(ValueError, match="f mixes samples"):
        sparse_value_and_jacobian(
            lambda x: x - x.mean(axis=0), (x,), 0, "central", pattern=np.eye(6, dtype=bool)
        )


def test_a_missing_entry_is_not_detected_but_a_superset_is_harmless():
    n = 20
    x = _input(2, n, np.float64, seed=9)
    superset = residual_pattern(n) | np.eye(n, k=3, dtype=bool)
    _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=superset)
    assert_close(S.to_dense(), residual_jacobian(x), rtol=1e-8)
    tridiagonal = np.any([np.eye(n, k=k, dtype=bool) for k in (-1, 0, 1)], axis=0)
    _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=tridiagonal)
    # the coupling entries (i, i + 7) are folded into the entries sharing their colour
    assert np.abs(S.to_dense() - residual_jacobian(x)).max() > 0.01


def test_progress_bar_counts_passes(capsys):
    pytest.importorskip("tqdm")
    x = _input(2, 30, np.float64)
    _, (S,) = sparse_value_and_jacobian(residual, (x,), 0, "central", pattern=residual_pattern(30),
                                        chunk_size=1, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "numerical Jacobian" in err and f"{S.colors}/{S.colors}" in err


# --------------------------------------------------------------------------------------
# sparsity="auto"
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_detects_the_structural_pattern(method, dtype):
    n, batch = 48, 5
    x = _input(batch, n, dtype, seed=10)
    f = Counted(residual)
    entries = int(residual_pattern(n).sum())  # 48 + 47 + 47 + 41
    with pytest.warns(UserWarning, match=rf"sparsity='auto' detected the pattern of argument 0 \(48 x 48, {entries} "
                                         r"entries\) from 6 probes \(2 samples, 3 points each\)") as record:  # fmt: skip
        _, (S,) = sparse_value_and_jacobian(f, (x,), 0, method, pattern="auto")
    P = residual_pattern(n)
    dense = np.zeros((n, n), dtype=bool)
    dense[np.repeat(np.arange(n), np.diff(to_numpy(S.indptr))), to_numpy(S.indices)] = True
    np.testing.assert_array_equal(dense, P)
    assert_close(S.to_dense(), residual_jacobian(x), rtol=DIFFERENCES[method][1][dtype == np.float64])
    # the warning's count is the number of samples f saw while probing
    a, b = {"central": (2, 0), "forward": (1, 1), "complex-step": (1, 0)}[method]
    probing = 6 * (1 + a * n + b)  # one pass: all 48 columns fit
    message = str(record[0].message)
    assert f"{probing:,} evaluations of f on one sample" in message
    total = min(batch, HEAD_SAMPLES) + batch * (3 + S.evaluations - (method == "forward"))
    total += 12 * batch if method == "complex-step" else 0
    assert sum(f.sizes) == total + probing


def test_auto_finds_entries_that_vanish_at_the_data():
    x = np.zeros((3, 10))  # d(x_i x_(i+1))/dx_(i+1) = x_i = 0 at every sample

    def f(x):
        return x * np.concatenate([x[:, 1:], x[:, :1]], axis=1)

    with pytest.warns(UserWarning, match="sparsity='auto'"):
        _, (S,) = sparse_value_and_jacobian(f, (x,), 0, "central", pattern="auto")
    assert S.nnz == 20  # the diagonal and the cyclic superdiagonal, seen at the perturbed probes


def test_auto_misses_a_branch_no_probe_takes():
    """The documented limit: an entry that is zero at every probe is not in the pattern."""
    x = _input(4, 6, np.float64, seed=11)

    def f(x):
        shifted = np.concatenate([x[:, 1:], x[:, :1]], axis=1)
        return np.sin(x) + np.where(shifted > 100, shifted, 0)

    with pytest.warns(UserWarning, match="entries that vanish at every probe"):
        _, (S,) = sparse_value_and_jacobian(f, (x,), 0, "central", pattern="auto")
    assert S.nnz == 6  # the diagonal only


def test_auto_keeps_every_column_of_an_output_that_no_probe_can_evaluate():
    x = _input(3, 5, np.float64, seed=15)

    def f(x):
        with np.errstate(invalid="ignore"):
            return np.concatenate([np.log(-1 - np.abs(x[:, :1])), np.sin(x[:, 1:])], axis=1)  # output 0: NaN

    with pytest.warns(UserWarning, match="sparsity='auto'"):
        _, (S,) = sparse_value_and_jacobian(f, (x,), 0, "central", pattern="auto")
    np.testing.assert_array_equal(to_numpy(S.indptr), [0, 5, 6, 7, 8, 9])  # row 0 full, then the diagonal
    np.testing.assert_array_equal(to_numpy(S.indices), [0, 1, 2, 3, 4, 1, 2, 3, 4])
    assert_close(S.values[:, 5:], np.cos(x[:, 1:]), rtol=1e-8)


def test_auto_with_an_empty_batch_gives_an_empty_pattern():
    with pytest.warns(UserWarning, match=r"found no sample to probe .* the pattern is empty"):
        _, (S,) = sparse_value_and_jacobian(np.sin, (np.zeros((0, 4)),), 0, "central", pattern="auto")
    assert S.shape == (0, 4, 4) and S.nnz == 0


def test_auto_through_the_api():
    x = _input(3, 16, np.float64, seed=12)
    with pytest.warns(UserWarning, match="sparsity='auto'"):
        J = bj.jacobian(residual, x, method="central", sparsity="auto")
    assert_close(J, residual_jacobian(x), rtol=1e-8)


# --------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cupy_inputs_stay_on_the_gpu(cp, method):
    n = 64
    x = _input(5, n, np.float64, seed=13)
    value, (S,) = sparse_value_and_jacobian(
        residual, (cp.asarray(x),), 0, method, pattern=residual_pattern(n)
    )
    assert (
        isinstance(S.values, cp.ndarray)
        and isinstance(S.indices, cp.ndarray)
        and isinstance(value, cp.ndarray)
    )
    assert_close(S.to_dense(), residual_jacobian(x), rtol=DIFFERENCES[method][1][1])
    with pytest.warns(UserWarning, match="sparsity='auto'"):
        _, (A,) = sparse_value_and_jacobian(residual, (cp.asarray(x),), 0, method, pattern="auto")
    np.testing.assert_array_equal(to_numpy(A.indices), to_numpy(S.indices))


def test_torch_function():
    torch = pytest.importorskip("torch")
    x = _input(3, 12, np.float64, seed=14)

    def f(t):
        assert isinstance(t, torch.Tensor)
        return torch.sin(t) * 3

    _, (S,) = sparse_value_and_jacobian(
        f, (x,), 0, "central", pattern=np.eye(12, dtype=bool), f_framework="torch"
    )
    assert_close(S.values, 3 * np.cos(x), rtol=1e-8)
