"""The package's internal import graph (module-level imports, TYPE_CHECKING blocks included) has no circle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"orbitbench": REPO / "orbitbench", "orbitbench.models": REPO / "models",
            "orbitbench.datamodules": REPO / "datamodules"}  # fmt: skip


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            found[".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = path
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules `name` imports outside function bodies (`from pkg import sub`: the submodule only)."""
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                out.update(subs | ({node.module} if len(subs) < len(node.names) else set()))
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text()).body)
    return {m for m in out if m in modules and m != name}


def test_no_import_cycle_inside_the_package() -> None:
    modules = _modules()
    graph = {name: _edges(name, path, modules) for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path[path.index(nxt):], nxt])
            if nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    assert {"orbitbench.run.module", "orbitbench.methods._base", "orbitbench.models._registry"} <= set(graph)
