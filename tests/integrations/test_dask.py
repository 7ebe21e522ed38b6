"""Dask arrays in ``bj.jacobian``, ``bj.value_and_jacobian`` and ``bj.check_jacobian`` (issue 9).

The results computed on a ``LocalCluster`` of two worker processes equal the in-memory call
bit for bit. The functions compute every sample the same way whatever the batch size
(element-wise code, reductions along the last axis, ``einsum``; no BLAS ``matmul`` of a whole
batch, whose rounding may depend on the number of rows), which is what makes that hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402

import batchjac as bj  # noqa: E402
from batchjac.integrations import dask as dask_support  # noqa: E402

B, CHUNK = 40, 16  # batch chunks (16, 16, 8)
W = np.random.default_rng(3).standard_normal((4, 5))


@pytest.fixture(scope="module")
def client():
    """A client of two single-threaded worker processes; the default scheduler meanwhile."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        with distributed.Client(cluster) as c:
            yield c
        cluster.close()


@pytest.fixture
def data():
    rng = np.random.default_rng(20261122)
    return rng.standard_normal((B, 5)), rng.standard_normal((B, 3, 3)), rng.standard_normal((B, 4))


def batched(a, chunk=CHUNK):
    """``a`` as a Dask array split along the batch axis only."""
    return da.from_array(a, chunks=(chunk, *a.shape[1:]))


def traced(x):  # (B, 5) -> (B, 5): element-wise and a per-sample softmax
    return bj.sin(x) * bj.exp(-(x**2)) + bj.softmax(x)


def traced_matrix(X):  # (B, 3, 3) -> (B, 3, 3)
    return bj.tanh(bj.matmul(X, X)) + X


def black_box(x, v, w):  # (B, 5), (B, 4), shared (4, 5) -> (B, 4)
    return np.tanh(np.einsum("bj,ij->bi", x, w)) * v + np.sin(v) * x[:, :4]


# --------------------------------------------------------------------------------------
# Bit for bit on the cluster
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["numerator", "denominator"])
def test_exact_equals_the_in_memory_call_bit_for_bit(client, data, layout):
    x, X, _ = data
    for f, a in ((traced, x), (traced_matrix, X)):
        y, J = bj.value_and_jacobian(f, batched(a), method="exact", layout=layout)
        y_ref, J_ref = bj.value_and_jacobian(f, a, method="exact", layout=layout)
        assert isinstance(J, da.Array) and J.shape == J_ref.shape and J.dtype == J_ref.dtype
        assert J.chunks == ((16, 16, 8), *((d,) for d in J_ref.shape[1:]))
        y, J = dask.compute(y, J)
        assert np.array_equal(y, y_ref) and np.array_equal(J, J_ref)


@pytest.mark.parametrize("method", ["complex-step", "central", "forward"])
def test_numerical_equals_the_in_memory_call_bit_for_bit(client, data, method):
    x, _, v = data
    J = bj.jacobian(black_box, batched(x), batched(v, 10), W, argnums=(0, 1), method=method, chunk_size=2)
    J_ref = bj.jacobian(black_box, x, v, W, argnums=(0, 1), method=method)
    assert isinstance(J, tuple) and all(isinstance(j, da.Array) for j in J)
    assert [j.chunks[0] for j in J] == [(16, 16, 8)] * 2  # v's chunks follow x's
    for got, want in zip(dask.compute(*J), J_ref):
        assert np.array_equal(got, want)


def test_a_dask_extra_argument_is_split_with_the_batch(client, data):
    x, _, v = data
    J = bj.jacobian(black_box, batched(x), batched(v, 7), W, method="central")
    assert np.array_equal(J.compute(), bj.jacobian(black_box, x, v, W, method="central"))


def test_check_jacobian_passes_with_the_in_memory_report(client, data):
    x, _, _ = data
    report = bj.check_jacobian(traced, batched(x), method="central")
    assert str(report) == str(bj.check_jacobian(traced, x, method="central"))


def test_check_jacobian_names_the_worst_entry_with_its_global_sample(client, data):
    x, _, _ = data
    J = bj.jacobian(traced, x, method="exact")
    bad = J.copy()
    bad[37, 1, 2] += 0.5  # in the last block, which starts at sample 32
    bad[5, 0, 0] += 1e-3
    messages = []
    for xs, Js in ((x, bad), (batched(x), batched(bad)), (batched(x), bad)):
        with pytest.raises(AssertionError) as err:
            bj.check_jacobian(traced, xs, J=Js, method="central")
        messages.append(str(err.value))
    assert "in 2 of 1000 entries; worst at sample 37, output index (1,), input index (2,)" in messages[0]
    assert messages[1] == messages[0] and messages[2] == messages[0]


def test_check_jacobian_counts_failures_under_a_given_atol_like_in_memory(client, data):
    x, _, _ = data
    messages = []
    for xs in (x, batched(x)):
        with pytest.raises(AssertionError) as err:  # atol=0: entries where N = 0 fail
            bj.check_jacobian(traced, xs, method="central", rtol=1e-9, atol=0.0)
        messages.append(str(err.value))
    assert messages[1] == messages[0]


# --------------------------------------------------------------------------------------
# Laziness, chunks, warnings, errors (the local threaded scheduler is enough)
# --------------------------------------------------------------------------------------


def test_nothing_is_computed_until_asked(data):
    x, _, v = data
    sizes, produced = [], []

    def f(x, v, w):
        sizes.append(x.shape[0])
        return black_box(x, v, w)

    def source(block):
        produced.append(block.shape[0])
        return block

    lazy_x = batched(x).map_blocks(source, meta=np.empty((0, 0)))
    with dask.config.set(scheduler="sync"):
        y, J = bj.value_and_jacobian(f, lazy_x, batched(v), W, method="central")
        assert set(sizes) == {0} and produced == []  # only the zero-sample probe ran
        y.compute()
        assert produced and max(sizes) > 0
    assert np.array_equal(J.compute(scheduler="sync"), bj.jacobian(black_box, x, v, W, method="central"))


def test_value_and_jacobian_share_one_call_per_block(data):
    x, _, _ = data
    sizes = []

    def f(x):
        sizes.append(x.shape[0])
        return np.tanh(x)

    y, J = bj.value_and_jacobian(f, batched(x), method="forward")
    sizes.clear()
    dask.compute(y, J, scheduler="sync")
    together = sorted(sizes)
    sizes.clear()
    J.compute(scheduler="sync")
    assert sorted(sizes) == together


def test_non_batch_chunks_are_merged_with_a_warning_when_costly(data, monkeypatch):
    x, _, _ = data
    split = da.from_array(x, chunks=(10, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        J = bj.jacobian(traced, split, method="exact")  # 1.6 kB: below the threshold
    assert J.chunks == ((10,) * 4, (5,), (5,))
    monkeypatch.setattr(dask_support, "RECHUNK_WARNING_BYTES", 0)
    with pytest.warns(
        dask_support.RechunkWarning, match=r"x: rechunking .* \(10x4, 2x3\) to \(10x4, 5\)"
    ) as rec:
        J = bj.jacobian(traced, split, method="exact")
    assert rec[0].filename == __file__
    assert np.array_equal(J.compute(scheduler="sync"), bj.jacobian(traced, x, method="exact"))


def test_auto_warns_at_the_call_not_in_the_workers(data):
    x, _, _ = data
    with pytest.warns(bj.NumericalFallbackWarning, match="does not trace"):
        J = bj.jacobian(lambda x: np.sin(np.asarray(x)), batched(x))  # numpy.asarray leaves the trace
    assert np.array_equal(J.compute(scheduler="sync"), np.apply_along_axis(np.diag, 1, np.cos(x)))


def test_structured_is_refused_with_the_way_out(data):
    with pytest.raises(ValueError, match=r"structured=True.*to_delayed.*dask.delayed"):
        bj.jacobian(traced, batched(data[0]), method="exact", structured=True)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.ones((B, 4)), W), "argument 1: an in-memory array with leading axis 40 .* ambiguous"),
        (
            (da.ones((B - 1, 4)), W),
            "argument 1: a Dask argument is split along axis 0 .* got leading axis 39",
        ),
    ],
)
def test_extra_arguments_that_do_not_fit_the_batch_are_named(data, args, match):
    with pytest.raises(ValueError, match=match):
        bj.jacobian(black_box, batched(data[0]), *args, method="central")


def test_argnums_and_dtypes_are_checked(data):
    x = batched(data[0])
    with pytest.raises(ValueError, match="argnums"):
        bj.jacobian(traced, x, argnums=(0, 0))
    with pytest.raises(TypeError, match="x: expected real floating-point"):
        bj.jacobian(traced, x.astype(bool))


def test_integer_batches_are_promoted_like_in_memory():
    x = np.arange(12).reshape(4, 3)
    J = bj.jacobian(lambda x: x**2, da.from_array(x, chunks=(2, 3)), method="exact")
    assert J.dtype == np.float64
    assert np.array_equal(J.compute(scheduler="sync"), bj.jacobian(lambda x: x**2, x, method="exact"))


# --------------------------------------------------------------------------------------
# The extra stays optional
# --------------------------------------------------------------------------------------


def test_batchjac_works_without_dask():
    script = textwrap.dedent(
        """
        import sys

        class NoDask:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("dask", "distributed"):
                    raise ImportError(f"dask is blocked: {name}")
                return None

        sys.meta_path.insert(0, NoDask())
        import numpy as np
        import batchjac as bj

        x = np.array([[1.0, 2.0], [3.0, 4.0]])
        J = bj.jacobian(lambda x: x**3, x, method="exact")
        assert J[1].tolist() == [[27.0, 0.0], [0.0, 48.0]]
        assert bj.jacobian(lambda x: np.sin(x), x, method="central").shape == (2, 2, 2)
        assert bj.check_jacobian(lambda x: x**3, x).max_abs_error < 1e-9
        assert not [m for m in sys.modules if m.partition(".")[0] == "dask"]
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --------------------------------------------------------------------------------------
# A worker dies mid-computation
# --------------------------------------------------------------------------------------


def dies_once(marker):
    """``black_box``-like ``f`` whose first call on the block holding the last sample kills
    its worker process (the blocks finished before are lost with it)."""

    def f(x):
        if x.shape[0] and np.any(x == KILL_VALUE) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return np.tanh(x) * np.sin(x)

    return f


KILL_VALUE = 7.0


def test_a_killed_worker_does_not_corrupt_the_result(client, data, tmp_path):
    x = data[0].copy()
    x[-1, 0] = KILL_VALUE
    marker = str(tmp_path / "killed")
    J = bj.jacobian(dies_once(marker), batched(x, 5), method="central")
    result = J.compute()
    assert os.path.exists(marker)  # a worker did die
    assert np.array_equal(result, bj.jacobian(dies_once(marker), x, method="central"))


def test_numpy_integer_argnums_are_taken_like_ints(data):
    x, _, v = data
    with dask.config.set(scheduler="sync"):
        J = bj.jacobian(black_box, batched(x), batched(v), W, method="central", argnums=np.int64(1))
        np.testing.assert_array_equal(J.compute(), bj.jacobian(black_box, x, v, W, method="central", argnums=1))
        J0, J1 = bj.jacobian(black_box, batched(x), batched(v), W, method="central", argnums=(np.int32(0), np.int64(1)))
        K0, K1 = bj.jacobian(black_box, x, v, W, method="central", argnums=(0, 1))
        np.testing.assert_array_equal(J0.compute(), K0)
        np.testing.assert_array_equal(J1.compute(), K1)
