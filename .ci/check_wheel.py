"""Build batchjac's wheel from a copy of this source tree, list it, and check what it must hold.

    python .ci/check_wheel.py [--out DIR]

Checks: every module of the tree is in the wheel (``batchjac/**``, and ``kernels/`` and
``benchmarks/`` under their package names ``batchjac.kernels`` and ``batchjac.benchmarks``),
with the CUDA sources (``*.cu``, ``*.cuh``), ``py.typed`` and the benchmarks' README; the
license file and the SPDX license in the metadata; and nothing else: no tests, no committed
benchmark results, no top-level package but ``batchjac``. The build runs without network
(``--no-build-isolation``: setuptools >= 77 must be installed, as the test extra does) in a
temporary copy, so the tree gets no ``build/`` or ``*.egg-info``. Prints the wheel's path
last; exits 1 naming what is missing or extra.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> its package in the wheel (setup.py maps the two top-level folders).
PACKAGE_FOLDERS = {"batchjac": "batchjac", "kernels": "batchjac/kernels", "benchmarks": "batchjac/benchmarks"}
NOT_COPIED = shutil.ignore_patterns(
    ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", "venv", ".pytest_cache", ".hypothesis"
)


def build_wheel(out: Path) -> Path:
    """The wheel built from a copy of the tree, in ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "batchjac"
        shutil.copytree(ROOT, source, ignore=NOT_COPIED)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out), str(source)],
            check=True,
        )  # fmt: skip
    (wheel,) = out.glob("batchjac-*.whl")
    return wheel


def expected_files() -> set[str]:
    """What the wheel must hold, from the source tree: every Python file of the package
    folders (a folder of modules without ``__init__.py`` is not found as a package, and
    would be missing), the CUDA sources, py.typed and the benchmarks' README."""
    expected = {"batchjac/py.typed", "batchjac/benchmarks/README.md"}
    for folder, package in PACKAGE_FOLDERS.items():
        for pattern in ("*.py", "*.cu", "*.cuh"):
            for path in (ROOT / folder).rglob(pattern):
                relative = path.relative_to(ROOT / folder)
                if "__pycache__" not in relative.parts and relative.parts[0] != "results":
                    expected.add(f"{package}/{relative.as_posix()}")
    return expected


def problems(wheel: Path) -> list[str]:
    """What is wrong with ``wheel``: missing files, files that do not belong, metadata."""
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    found = []
    missing = sorted(expected_files() - names)
    if missing:
        found.append(f"missing: {', '.join(missing)}")
    if not any(n.endswith(".cu") for n in names) or not any(n.endswith(".cuh") for n in names):
        found.append("no CUDA sources (*.cu, *.cuh) in batchjac/kernels/")
    extra = sorted(n for n in names if not n.startswith(("batchjac/", f"{dist_info}/")))
    extra += sorted(n for n in names if n.startswith("batchjac/benchmarks/results/"))
    if extra:
        found.append(f"not part of the package: {', '.join(extra)}")
    if f"{dist_info}/licenses/LICENSE" not in names:
        found.append(f"no license file ({dist_info}/licenses/LICENSE)")
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    for line in ("License-Expression: BSD-3-Clause", "License-File: LICENSE"):
        if line not in metadata.splitlines():
            found.append(f"METADATA lacks {line!r}")
    top_level = f"{dist_info}/top_level.txt"
    if top_level in names and zipfile.ZipFile(wheel).read(top_level).decode().split() != ["batchjac"]:
        found.append("top-level packages other than batchjac")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the wheel, list it, check its contents.")
    parser.add_argument("--out", type=Path, help="folder for the wheel (default: a temporary one)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="batchjac-wheel-"))
    out.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(out)
    print(f"{wheel.name}:")
    for info in zipfile.ZipFile(wheel).infolist():
        print(f"  {info.file_size:>8}  {info.filename}")
    found = problems(wheel)
    for problem in found:
        print(f"wheel: {problem}", file=sys.stderr)
    print(wheel)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
