"""Dispatch by measured speed, decided without a device: fake availability (both GPU
backends "available", the numba column filled in), a fake device identity and fake
timings; the cache lives in a temporary directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batchjac.backends import autotune, dispatch


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """Both GPU backends available and implementing every primitive; measurements are
    fake and counted: ``fake_gpu.timings[prim][backend]`` in ms, ``fake_gpu.calls``."""

    class Fake:
        identity = {"device": "Fake GPU 80GB", "driver": 13000, "cupy": "14.0", "batchjac": "0.1.0"}
        timings = {prim: {"cupy": 1.0, "numba": 2.0} for prim in dispatch.TABLE}
        calls: list = []

    def measure(prim, backends):
        Fake.calls.append((prim, tuple(backends)))
        return {name: Fake.timings[prim][name] for name in backends}

    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(autotune.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(dispatch, "_problems", {"numpy": None, "cupy": None, "numba": None})
    monkeypatch.setattr(dispatch, "_backends", {})
    for prim in dispatch.TABLE:
        monkeypatch.setitem(dispatch.TABLE[prim], "numba", "xp_ops")
    monkeypatch.setattr(autotune, "device_identity", lambda: dict(Fake.identity))
    monkeypatch.setattr(autotune, "measure", measure)
    return Fake


def chosen(prim):
    return dispatch.get_backend("gpu").implementations[prim][0]


def test_the_default_picks_the_faster_backend_per_primitive(fake_gpu):
    fake_gpu.timings["scale_rows"] = {"cupy": 3.0, "numba": 1.5}
    fake_gpu.timings["slogdet"] = {"cupy": 0.2, "numba": 9.0}
    assert chosen("scale_rows") == "numba"
    assert chosen("slogdet") == "cupy"
    assert dispatch.gpu_preference()["scale_rows"] == ("numba", "cupy")


def test_each_primitive_is_measured_once_then_read_from_the_disk_cache(fake_gpu, tmp_path):
    dispatch.gpu_preference()
    assert sorted(prim for prim, _ in fake_gpu.calls) == sorted(dispatch.TABLE)
    (path,) = tmp_path.glob("dispatch-*.json")
    stored = json.loads(path.read_text())
    assert stored["identity"] == fake_gpu.identity
    assert stored["timings"]["matvec"] == {"cupy": 1.0, "numba": 2.0}
    fake_gpu.calls.clear()
    dispatch.gpu_preference()  # a new process would do the same: the file answers
    assert fake_gpu.calls == []


def test_another_device_or_version_measures_afresh(fake_gpu, tmp_path):
    dispatch.gpu_preference()
    fake_gpu.calls.clear()
    fake_gpu.identity = {**fake_gpu.identity, "cupy": "14.1"}
    dispatch.gpu_preference()
    assert len(fake_gpu.calls) == len(dispatch.TABLE)
    assert len(list(tmp_path.glob("dispatch-*.json"))) == 2


def test_a_corrupt_cache_file_is_measured_over(fake_gpu):
    path = autotune.cache_file(fake_gpu.identity)
    path.write_text("{not json")
    fake_gpu.timings["vecmat"] = {"cupy": 5.0, "numba": 1.0}
    assert dispatch.gpu_preference()["vecmat"] == ("numba", "cupy")
    assert json.loads(path.read_text())["timings"]["vecmat"] == {"cupy": 5.0, "numba": 1.0}


def test_a_table_of_another_identity_in_the_file_is_not_used(fake_gpu):
    path = autotune.cache_file(fake_gpu.identity)
    path.write_text(
        json.dumps({"identity": {"device": "other"}, "timings": {"matvec": {"cupy": 9.0, "numba": 0.1}}})
    )
    assert dispatch.gpu_preference()["matvec"] == ("cupy", "numba")


def test_one_gpu_backend_means_no_measurement_and_the_default_order(fake_gpu, monkeypatch):
    monkeypatch.setitem(dispatch._problems, "numba", "numba-cuda is not installed")
    assert dispatch.gpu_preference() == dispatch.GPU_PREFERENCE
    assert fake_gpu.calls == []
    assert chosen("matvec") == "cupy"


def test_a_primitive_only_one_backend_implements_is_not_measured(fake_gpu, monkeypatch):
    monkeypatch.setitem(dispatch.TABLE["slogdet"], "numba", None)
    fake_gpu.timings["matvec"] = {"cupy": 2.0, "numba": 1.0}
    assert chosen("slogdet") == "cupy"
    assert chosen("matvec") == "numba"
    assert "slogdet" not in {prim for prim, _ in fake_gpu.calls}


def test_autotune_off_keeps_the_default_order(fake_gpu, monkeypatch):
    monkeypatch.setenv(autotune.AUTOTUNE_ENV, "0")
    fake_gpu.timings["matvec"] = {"cupy": 2.0, "numba": 1.0}
    assert chosen("matvec") == "cupy"
    assert fake_gpu.calls == []


def test_a_named_backend_is_forced_whatever_was_measured(fake_gpu, monkeypatch):
    fake_gpu.timings["matvec"] = {"cupy": 2.0, "numba": 1.0}
    assert chosen("matvec") == "numba"
    assert dispatch.get_backend("cupy").implementations["matvec"][0] == "cupy"


def test_an_unwritable_cache_only_costs_a_measurement(fake_gpu, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(autotune.CACHE_ENV, str(blocker / "sub"))  # a directory under a file
    assert dispatch.gpu_preference()["matvec"] == ("cupy", "numba")


def test_decide_sorts_by_time_and_keeps_ties_and_unmeasured_in_order():
    assert autotune.decide({"cupy": 2.0, "numba": 1.0}, ("cupy", "numba")) == ("numba", "cupy")
    assert autotune.decide({"cupy": 1.0, "numba": 1.0}, ("cupy", "numba")) == ("cupy", "numba")
    assert autotune.decide({"numba": 1.0}, ("cupy", "numba")) == ("numba", "cupy")


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(autotune.CACHE_ENV, str(tmp_path))
    assert autotune.cache_dir() == tmp_path
    monkeypatch.delenv(autotune.CACHE_ENV)
    assert autotune.cache_dir().parts[-2:] == (".cache", "batchjac")


@pytest.mark.parametrize("prim", sorted(dispatch.TABLE))
def test_every_primitive_has_a_workload_its_numpy_implementation_runs(prim):
    fn = dispatch._implementation(prim, "numpy")
    args = autotune.workload(prim, np)
    result = fn(*args)
    assert all(np.all(np.isfinite(r)) for r in (result if isinstance(result, tuple) else (result,)))


def test_an_unknown_primitive_has_no_workload():
    with pytest.raises(ValueError, match=r"prim: no workload for 'transpose'"):
        autotune.workload("transpose", np)


def test_a_failed_measurement_warns_and_keeps_the_default_order(fake_gpu, monkeypatch):
    def broken(prim, backends):
        raise RuntimeError("kernel launch failed")

    monkeypatch.setattr(autotune, "measure", broken)
    with pytest.warns(
        RuntimeWarning, match=r"could not time the GPU backends \(RuntimeError: kernel launch failed\)"
    ):
        assert chosen("matvec") == "cupy"
    assert list(autotune.cache_dir().glob("dispatch-*.json")) == []


# --------------------------------------------------------------------------------------
# Issue 13: a cache of the right JSON shape with wrong inner types is measured over
# --------------------------------------------------------------------------------------

BAD_INNER = {
    "timings_a_list": [["scale_rows", 1.0]],
    "primitive_a_list": {"scale_rows": [1.0, 2.0]},
    "time_a_string": {"scale_rows": {"cupy": "fast", "numba": 2.0}},
    "time_a_bool": {"scale_rows": {"cupy": True, "numba": 2.0}},
    "time_nan": {"scale_rows": {"cupy": float("nan"), "numba": 2.0}},
    "time_negative": {"scale_rows": {"cupy": -1.0, "numba": 2.0}},
    "time_a_dict": {"scale_rows": {"cupy": {"ms": 1.0}, "numba": 2.0}},
    "time_null": {"scale_rows": {"cupy": None, "numba": None}},
}


@pytest.mark.parametrize("name", list(BAD_INNER))
def test_unreadable_entries_of_a_well_formed_cache_are_measured_afresh(name, fake_gpu, tmp_path):
    fake_gpu.timings["scale_rows"] = {"cupy": 3.0, "numba": 1.5}  # what a fresh measurement says
    path = autotune.cache_file(fake_gpu.identity)
    good = {prim: {"cupy": 1.0, "numba": 2.0} for prim in dispatch.TABLE if prim != "scale_rows"}
    timings = BAD_INNER[name] if name == "timings_a_list" else {**good, **BAD_INNER[name]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"identity": fake_gpu.identity, "timings": timings}))
    assert chosen("scale_rows") == "numba"  # no crash; measured, and the measurement decides
    assert ("scale_rows", ("cupy", "numba")) in fake_gpu.calls
    if name != "timings_a_list":  # the readable entries were kept, not measured again
        assert len(fake_gpu.calls) == 1
    stored = json.loads(path.read_text())["timings"]
    assert stored["scale_rows"] == {"cupy": 3.0, "numba": 1.5}  # the cache is repaired


def test_a_cache_that_is_not_utf8_is_measured_over(fake_gpu):
    path = autotune.cache_file(fake_gpu.identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xfe\x00{")
    assert chosen("slogdet") == "cupy"
    assert len(fake_gpu.calls) == len(dispatch.TABLE)
