"""The floors of the house: imports run one way, from higher floors to lower ones.

core <- kernels (GPU code) <- backends <- structured <- exact, numerical <- engine <- transforms
<- checking <- integrations <- api <- the package's __init__ and command line.

Every import in every module (at module level or inside a function) is checked: a module
may import from a lower floor or from its own package, never from a higher floor nor from a
sibling of its floor (exact and numerical do not know each other). Module-level imports
must not form a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "batchjac.core": 0,
    "batchjac.kernels": 1,
    "batchjac.backends": 2,
    "batchjac.structured": 3,
    "batchjac.exact": 4,
    "batchjac.numerical": 4,
    "batchjac.engine": 5,
    "batchjac.transforms": 6,
    "batchjac.checking": 7,
    "batchjac.integrations": 8,
    "batchjac.api": 9,
    "batchjac.__main__": 10,
    "batchjac": 10,
}


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] == "kernels":
        parts = ["batchjac", "kernels", *parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _floor(module: str) -> tuple[str, int]:
    """The floor package a module belongs to and its level (the longest prefix listed)."""
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return best, FLOORS[best]


def _modules():
    files = sorted((ROOT / "batchjac").rglob("*.py")) + sorted((ROOT / "kernels").glob("*.py"))
    return {_module_name(p): p for p in files if "__pycache__" not in p.parts}


MODULES = _modules()


def _imports(path: Path, module: str):
    """``(imported module, line, at module level)`` for every batchjac import of a file;
    ``from package import submodule`` counts as importing the submodule."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "batchjac" or name.startswith("batchjac."):
                found.append((name, node.lineno, id(node) in top))
    return found


def _resolve(name: str) -> str | None:
    """The module an imported name lives in (``batchjac.exact.ops.sum`` -> ``batchjac.exact.ops``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_down_the_floors(module):
    own, level = _floor(module)
    wrong = []
    for name, line, _ in _imports(MODULES[module], module):
        target = _resolve(name)
        if target is None or target == "batchjac" and module != "batchjac":
            if name == "batchjac" and module != "batchjac.__main__":
                wrong.append(f"line {line}: imports the top-level package")
            continue
        floor, target_level = _floor(target)
        if floor == own:
            continue
        if target_level > level or (target_level == level and floor != own):
            wrong.append(f"line {line}: {module} ({own}, floor {level}) imports {target} ({floor}, floor {target_level})")
    assert not wrong, "\n".join(wrong)


def test_module_level_imports_form_no_cycle():
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _, top in _imports(path, module):
            target = _resolve(name)
            if top and target and target != module and target != "batchjac":
                graph[module].add(target)
    state: dict = {}
    stack: list = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_has_a_floor():
    for module in MODULES:
        assert any(module == p or module.startswith(p + ".") for p in FLOORS), module
