"""The command line, run as a user would: ``python -m batchjac ...`` in a subprocess, from a
folder outside the repository, checking its output and exit status."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

import batchjac as bj

ROOT = Path(__file__).resolve().parents[2]
# What `bench` writes: the PNG needs matplotlib (the bench extra), which the tests do not.
SUITE_FILES = ["suite_cpu.json", "suite_cpu.md"] + (
    ["suite_cpu.png"] if importlib.util.find_spec("matplotlib") else []
)


def run(*args, cwd, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "batchjac", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env={**os.environ, **(env or {})},
    )  # fmt: skip


def installed(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def test_version_prints_the_package_version(tmp_path):
    result = run("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"batchjac {bj.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc|\.dev)?\d*", bj.__version__)


def test_info_lists_every_optional_piece_with_its_installed_version(tmp_path):
    result = run("info", cwd=tmp_path, env={"BATCHJAC_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"batchjac {bj.__version__} on Python ")
    for name in ("numpy", "numba", "platformdirs", "numba-cuda", "jax", "torch", "dask"):
        expected = installed(name) or "not installed"
        assert any(line.split() == [name, *expected.split()] for line in lines), (name, expected)
    cupy = next(line.split(None, 1)[1] for line in lines if line.split()[:1] == ["cupy"])
    cupy_builds = [
        d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].startswith("cupy")
    ]
    if cupy_builds:
        assert all(f"{installed(name)} ({name})" in cupy for name in cupy_builds)
    else:
        assert cupy == "not installed"
    cuda = lines.index("CUDA:")
    assert [line.split()[0] for line in lines[cuda + 1 : cuda + 3]] == ["driver", "runtime"]
    assert "  numpy  (cpu) available" in lines
    for section in ("backends:", "devices:"):
        assert section in lines
    assert f"cache: {tmp_path / 'cache'}" in lines


@pytest.mark.parametrize("batch", [1, 8])
def test_demo_checks_its_jacobian_against_a_numerical_reference(tmp_path, batch):
    result = run("demo", "--batch", str(batch), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"shape     ({batch}, 10, 64)" in result.stdout
    error = float(result.stdout.split("max error")[1].split()[0])
    assert error < 1e-4


@pytest.mark.parametrize(
    "args, argument, value",
    [
        (("demo", "--batch", "0"), "--batch", "'0'"),
        (("demo", "--batch", "-5"), "--batch", "'-5'"),
        (("demo", "--batch", "abc"), "--batch", "'abc'"),
        (("demo", "--batch", "2.5"), "--batch", "'2.5'"),
        (("bench", "--sizes", "abc"), "--sizes", "'abc'"),
        (("bench", "--sizes", "100,0"), "--sizes", "'100,0'"),
        (("bench", "--repeats", "0"), "--repeats", "'0'"),
        (("bench", "--workloads", "W1,W9"), "workload", "W9"),
    ],
)
def test_a_bad_value_gives_one_line_naming_it_and_exit_status_2(tmp_path, args, argument, value):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert argument in result.stderr and value in result.stderr
    assert result.stderr.startswith(f"python -m batchjac {args[0]}: error: ")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_unknown_command_or_benchmark_is_refused_in_one_line(tmp_path):
    result = run("frobnicate", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'frobnicate'" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run("bench", "no-such-benchmark", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "unknown benchmark 'no-such-benchmark'" in result.stderr
    assert "chain" in result.stderr and "numerical" in result.stderr


def help_text(*args, cwd):
    result = run(*args, "--help", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_texts_are_complete_and_speak_to_users(tmp_path):
    main = help_text(cwd=tmp_path)
    for command in ("info", "demo", "bench", "--version"):
        assert command in main
    demo = help_text("demo", cwd=tmp_path)
    assert re.search(r"--batch B\s+the number of inputs", demo)
    bench = help_text("bench", cwd=tmp_path)
    assert bench.startswith("usage: python -m batchjac bench")
    for option in ("--tiny", "--quick", "--full", "--workloads", "--sizes", "--repeats", "--out", "--no-peers",
                   "--device", "--profile"):  # fmt: skip
        assert re.search(rf"^  {option}\b.*\S\s+\S", bench, flags=re.M), option  # each has a help text
    assert "default: ./batchjac-bench/" in " ".join(bench.split())
    for text in (main, demo, bench):
        assert not re.search(r"\bissue\b|README|see the code", text, flags=re.I)
    description = bench.split("\n\n")[1]
    assert description.rstrip().endswith(".")  # not cut off after its first line
    for key in ("W1", "W2", "W3", "W4", "W5", "W6"):
        assert re.search(rf"^  {key}  \S", bench, flags=re.M)


def digests(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def suite_files_written_since(start):
    """Files named like the suite's outputs, changed under the repository since ``start``."""
    return [
        p
        for p in ROOT.rglob("suite_*")
        if ".git" not in p.parts and p.is_file() and p.stat().st_mtime >= start
    ]


@pytest.mark.parametrize("out", [None, "tmp"])
def test_bench_tiny_writes_under_out_or_the_current_folder_and_nothing_in_the_repository(tmp_path, out):
    committed = digests(ROOT / "benchmarks" / "results")
    start = time.time()
    result = run("bench", "--tiny", "--no-peers", *(["--out", out] if out else []), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = tmp_path / (out or "batchjac-bench")
    assert sorted(p.name for p in folder.iterdir()) == SUITE_FILES
    assert f"wrote {folder.resolve() / 'suite_cpu.json'}" in result.stdout
    assert digests(ROOT / "benchmarks" / "results") == committed
    assert suite_files_written_since(start) == []
    assert not (ROOT / "batchjac-bench").exists()
