"""The built wheel: what it holds (``.ci/check_wheel.py``, which CI runs too), and the command
line run from it as from an installed package, away from the source tree."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_check_wheel():
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / ".ci" / "check_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_wheel = _load_check_wheel()


def _setuptools_builds_the_wheel():
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except metadata.PackageNotFoundError:
        return False
    return major >= 77


pytestmark = pytest.mark.skipif(
    not _setuptools_builds_the_wheel(),
    reason="building the wheel offline needs setuptools >= 77 (pip install -e '.[test]')",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "check_wheel.py"), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return Path(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    """The wheel unpacked as an installation would lay it out (a site-packages folder)."""
    folder = tmp_path_factory.mktemp("site")
    zipfile.ZipFile(wheel).extractall(folder)
    return folder


def run_installed(site, *args, cwd):
    """``python -m batchjac ARGS`` with batchjac imported from ``site`` (PYTHONPATH comes
    before an editable install of the source tree), from ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def test_the_wheel_holds_kernels_py_typed_license_benchmarks_and_every_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert check_wheel.problems(wheel) == []
    assert {
        "batchjac/py.typed",
        "batchjac/kernels/structured.cu",
        "batchjac/kernels/batchjac_math.cuh",
    } <= names
    assert {
        "batchjac/benchmarks/run.py",
        "batchjac/benchmarks/harness.py",
        "batchjac/benchmarks/README.md",
    } <= names
    for init in (ROOT / "batchjac").rglob("__init__.py"):  # discovery: every subpackage, as it is added
        assert f"{init.relative_to(ROOT).as_posix()}" in names
    assert not any(name.startswith(("tests/", "batchjac/benchmarks/results/")) for name in names)


def test_the_check_reports_a_wheel_without_py_typed_or_kernels(wheel, tmp_path):
    doctored = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(doctored, "w") as target:
        for item in source.infolist():
            if item.filename not in ("batchjac/py.typed", "batchjac/kernels/structured.cu"):
                target.writestr(item, source.read(item))
    found = check_wheel.problems(doctored)
    assert found and "batchjac/py.typed" in found[0] and "batchjac/kernels/structured.cu" in found[0]


def test_the_installed_package_runs_every_command_outside_the_repository(site, tmp_path):
    where = run_installed(site, "-c", "import batchjac; print(batchjac.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).parent == site / "batchjac", where.stderr
    version = run_installed(site, "-m", "batchjac", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("batchjac ")
    info = run_installed(site, "-m", "batchjac", "info", cwd=tmp_path)
    assert info.returncode == 0 and "backends:" in info.stdout, info.stderr
    demo = run_installed(site, "-m", "batchjac", "demo", "--batch", "8", cwd=tmp_path)
    assert demo.returncode == 0 and "shape     (8, 10, 64)" in demo.stdout, demo.stderr
    bench = run_installed(site, "-m", "batchjac", "bench", "--tiny", "--no-peers", cwd=tmp_path)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    written = sorted(p.name for p in (tmp_path / "batchjac-bench").iterdir())
    assert written == ["suite_cpu.json", "suite_cpu.md"] + (
        ["suite_cpu.png"] if importlib.util.find_spec("matplotlib") else []
    )
    assert not (site / "batchjac" / "benchmarks" / "results").exists()


def test_without_the_benchmark_scripts_bench_says_in_one_line_how_to_get_them(site, tmp_path):
    bare = tmp_path / "site"
    shutil.copytree(
        site, bare, ignore=lambda folder, names: ["benchmarks"] if folder.endswith("batchjac") else []
    )
    result = run_installed(bare, "-m", "batchjac", "bench", "--tiny", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        len(result.stderr.splitlines()) == 1
        and "git clone https://github.com/batchjac/batchjac" in result.stderr
    )
