"""The command line: ``python -m batchjac info | demo | bench``, run as a user would."""

import subprocess
import sys


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "batchjac", *args], capture_output=True, text=True, timeout=300
    )


def test_info_lists_backends_and_versions():
    result = run("info")
    assert result.returncode == 0, result.stderr
    for text in ("batchjac", "numpy", "backends:", "devices:", "cupy", "numba"):
        assert text in result.stdout


def test_demo_checks_its_jacobian_against_a_numerical_reference():
    result = run("demo", "--batch", "32")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shape     (32, 10, 64)" in result.stdout
    error = float(result.stdout.split("max error")[1].split()[0])
    assert error < 1e-4


def test_bench_with_an_unknown_name_lists_the_benchmarks():
    result = run("bench", "no-such-benchmark")
    assert result.returncode == 2
    assert "choose a benchmark" in result.stderr and "chain" in result.stderr


def test_unknown_command_is_refused():
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
