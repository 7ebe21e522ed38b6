"""The benchmark suite (benchmarks/run.py) at tiny sizes: it runs, its JSON and Markdown carry
every field and one target row per workload (targets presented as development goals), and its
plot gives each runner one colour in every panel. Speed is not asserted."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    """A module of the suite by its file (they are scripts' modules, not a package's)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = _load("harness")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
VERDICTS = ("met", "missed", "not checked")  # in the JSON; the Markdown says "not yet met"


def run_suite(out, *extra):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--device", "cpu", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((out / "suite_cpu.json").read_text()), (out / "suite_cpu.md").read_text()


@pytest.fixture(scope="module")
def without_peers(tmp_path_factory):
    return run_suite(tmp_path_factory.mktemp("suite"), "--no-peers")


def test_json_has_the_machine_ceilings_and_versions(without_peers):
    _, report, _ = without_peers
    assert report["mode"] == "tiny"
    assert {"device", "cpu_model", "cpu_count"} <= set(report["machine"])
    assert report["versions"]["batchjac"] and report["versions"]["numpy"]
    assert report["ceilings"]["copy_bytes_per_s"] > 0
    assert set(report["ceilings"]["matmul_madds_per_s"]) == {"float32", "float64"}
    assert report["skipped_peers"] == {
        "jax": "peers disabled (--no-peers)",
        "torch": "peers disabled (--no-peers)",
    }


def test_every_workload_has_batchjac_and_numpy_results_with_floor_and_error(without_peers):
    _, report, _ = without_peers
    for key in WORKLOADS:
        rows = {r["runner"]: r for r in report["results"] if r["workload"] == key}
        assert set(rows) == {"batchjac", "numpy"}, key
        ours = rows["batchjac"]
        for field in (
            "median_s",
            "floor_s",
            "ratio_to_floor",
            "peak_bytes",
            "peak_method",
            "max_error",
            "batch",
        ):
            assert ours[field] is not None, (key, field)
        assert ours["max_error"] < 1e-3, key
        assert ours["ratio_to_peers"] == {
            "numpy": pytest.approx(ours["median_s"] / rows["numpy"]["median_s"])
        }


def test_targets_give_a_verdict_per_workload_in_json_and_markdown(without_peers):
    _, report, markdown = without_peers
    assert [t["workload"] for t in report["targets"]] == list(WORKLOADS)
    rows = [line for line in markdown.splitlines() if line.startswith("| W")]
    assert [row.split("|")[1].strip() for row in rows] == list(WORKLOADS)
    for target, row in zip(report["targets"], rows):
        assert target["verdict"].startswith(VERDICTS)
        assert row.split("|")[3].strip() == harness.verdict_text(target["verdict"])
        assert row.split("|")[3].strip() != "missed"
        if target["verdict"] == "missed":
            assert target["by_how_much"] and target["why"]


def test_terminal_table_and_outputs(without_peers):
    result, report, _ = without_peers
    assert "bj/peer" in result.stdout and "wrote" in result.stdout
    assert report["plot"] == "suite_cpu.png" or report["plot"].startswith("no plot")


def test_a_sweep_of_chosen_workloads_and_sizes(tmp_path):
    _, report, _ = run_suite(tmp_path, "--no-peers", "--workloads", "W4,w1", "--sizes", "10,20")
    assert sorted({(r["workload"], r["batch"]) for r in report["results"]}) == [
        ("W1", 10), ("W1", 20), ("W4", 10), ("W4", 20)
    ]  # fmt: skip


@pytest.mark.skipif(
    not (importlib.util.find_spec("jax") and importlib.util.find_spec("torch")),
    reason="jax and torch not installed",
)
def test_peers_run_beside_batchjac(tmp_path):
    _, report, _ = run_suite(tmp_path, "--workloads", "W1,W4")
    runners = {(r["workload"], r["runner"]) for r in report["results"] if not r.get("skipped")}
    assert {
        ("W1", "jax.vmap-grad"),
        ("W1", "torch.vmap-grad"),
        ("W4", "jax.jacfwd"),
        ("W4", "torch.jacrev"),
    } <= runners


def test_targets_are_presented_as_development_goals(without_peers):
    result, _, markdown = without_peers
    assert "## Development targets" in markdown and harness.TARGETS_NOTE in markdown
    assert "Development targets. Targets are goals" in result.stdout
    assert not any(line.startswith("W") and ": missed" in line for line in result.stdout.splitlines())


def test_the_report_names_the_command_a_user_runs(without_peers):
    _, report, markdown = without_peers
    assert report["command"].startswith("python -m batchjac bench --tiny")
    assert f"Command: `{report['command']}`" in markdown


def test_each_runner_has_one_colour_in_every_panel():
    rows = [
        {"workload": "W1", "runner": "batchjac"},
        {"workload": "W1", "runner": "jax.vmap-grad"},
        {"workload": "W1", "runner": "torch.vmap-grad"},
        {"workload": "W6", "runner": "batchjac"},
        {"workload": "W6", "runner": "jax.jacfwd"},
        {"workload": "W6", "runner": "torch.jacfwd", "skipped": "out of memory"},
    ]
    colours = harness.runner_colours(rows)
    assert list(colours) == ["batchjac", "jax.vmap-grad", "torch.vmap-grad", "jax.jacfwd"]
    assert len(set(colours.values())) == len(colours)  # no two runners share a colour


def test_the_plot_draws_bars_for_one_batch_and_lines_for_a_sweep(tmp_path):
    pytest.importorskip("matplotlib")
    base = {"floor_kind": "memory", "peak_bytes": None, "max_error": 0.0}
    rows = [
        base | {"workload": "W1", "batch": 64, "runner": name, "median_s": t, "floor_s": 1e-4, "ratio_to_floor": t / 1e-4}
        for name, t in (("batchjac", 2e-3), ("numpy", 1e-3))
    ] + [
        base | {"workload": "W4", "batch": b, "runner": name, "median_s": t * b, "floor_s": 1e-7 * b, "ratio_to_floor": t / 1e-7}
        for b in (100, 1000) for name, t in (("batchjac", 2e-6), ("numpy", 1e-6))
    ]  # fmt: skip
    path = tmp_path / "suite.png"
    assert harness.plot(path, rows, {"W1": "element-wise", "W4": "kinematics"}) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
