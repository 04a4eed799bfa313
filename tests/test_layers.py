"""The architecture's arrows point down: a package never imports one above it, no cycles.

Layers, bottom to top (README, "Architecture"). A module may import its own layer and
any below; every import counts, the lazy ones inside functions too (they still run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "volfs"

LAYERS: list[tuple[str, ...]] = [
    ("volfs.config", "volfs.errors", "volfs.names", "volfs.clock", "volfs.locks"),
    ("volfs.blobs",),
    ("volfs.core",),
    ("volfs.catalog",),
    ("volfs.snapshots",),
    ("volfs.store", "volfs.remote"),  # the composition root: the one place that knows backends
    ("volfs.mount", "volfs.control"),
    ("volfs.maintenance",),
    ("volfs.api",),
    ("volfs.cli", "volfs.__main__", "volfs"),
]


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), index
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """The volfs modules ``path`` imports (``from volfs import x`` names module ``volfs.x``
    when there is one)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "volfs")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "volfs":
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                as_path = ROOT.parent / sub.replace(".", "/")
                if as_path.with_suffix(".py").exists() or (as_path / "__init__.py").exists():
                    out.add(sub)
                else:
                    out.add(node.module)
    return out


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(m for m in imports(MODULES[module]) if layer_of(m) > mine)
    assert not upward, f"{module} (layer {mine}) imports a higher layer: {upward}"


def test_no_import_cycles() -> None:
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    # A package's __init__ is what `import volfs.x.y` runs first: not an edge of its own.
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            if target != "volfs":  # the root package re-exports the API: everyone's parent
                visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_check_finds_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from volfs.api import Volume\n")
    assert layer_of("volfs.core.tree") < max(layer_of(m) for m in imports(bad))
