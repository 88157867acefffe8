"""The package layout: imports point one way, no circles, no oversized modules, no reaching into
another subpackage's private modules. Read from the source with ``ast``, not by importing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "doublebackprop"
PACKAGE = "doublebackprop"

#: what each area may import (besides itself); the top-level modules may import anything
ALLOWED = {
    "common": set(),
    "engine": {"common"},
    "attribution": {"common", "engine"},
    "robustness": {"common", "engine", "attribution"},
    "vision": {"common", "engine", "attribution", "robustness"},
    "msi": {"common", "engine", "attribution", "robustness"},
    "tools": {"common", "engine", "attribution", "robustness", "vision", "msi"},
}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``doublebackprop`` module a file imports, lazily or not (relative ones resolved)."""
    tree = ast.parse(path.read_text())
    me = _module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            found.add(target)
            for alias in node.names:  # ``from pkg import module``
                candidate = f"{target}.{alias.name}"
                if _path_of(candidate) is not None:
                    found.add(candidate)
    return found


def _path_of(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for cand in (SRC / rel.with_suffix(".py"), SRC / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


FILES = sorted(SRC.rglob("*.py"))
GRAPH = {_module_name(f): _imports(f) for f in FILES}


def _area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (SRC / parts[1]).is_dir() else None


def test_imports_point_one_way():
    bad = []
    for module, targets in GRAPH.items():
        area = _area(module)
        if area is None:
            continue  # the top-level API, dispatcher and __main__ may import every area
        assert area in ALLOWED, f"{area} has no place in the layering"
        for target in targets:
            other = _area(target)
            if target == PACKAGE or other is None:
                if target != PACKAGE:  # a top-level module such as doublebackprop.cli
                    bad.append(f"{module} → {target}")
                continue
            if other != area and other not in ALLOWED[area]:
                bad.append(f"{module} → {target}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = {m: {t for t in ts if t in GRAPH and t != m} for m, ts in GRAPH.items()}
    # a package's __init__ re-exporting its children is not a circle with them
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                pytest.fail("import circle: " + " → ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_private_module_of_another_subpackage():
    bad = []
    for module, targets in GRAPH.items():
        home = (
            module.rsplit(".", 1)[0]
            if not (SRC.parent / Path(*module.split("."))).is_dir()
            else module
        )
        for target in targets:
            parts = target.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_")]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])
            if not (home == owner or home.startswith(owner + ".")):
                bad.append(f"{module} → {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines (cap {MAX_LINES})"


def test_every_subpackage_declares_its_public_names():
    for init in SRC.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        names = [
            n
            for n in tree.body
            if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        ]
        assert names, f"{init.relative_to(SRC)} has no __all__"
