"""The package's shape: floors that import only downwards, no import circle, no module over 400 lines.

Every import counts, the ones inside functions too (a lazy import hides a circle from Python, not
from a reader). docs/ARCHITECTURE.md draws the same floors.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"orbitbench": REPO / "orbitbench", "orbitbench.models": REPO / "models",
            "orbitbench.datamodules": REPO / "datamodules"}  # fmt: skip
MAX_LINES = 400

# Lowest first; a module may import its own floor and those below it. The longest prefix decides.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("orbitbench._env", "orbitbench._moved", "orbitbench.entrants", "orbitbench.errors", "orbitbench.io", "orbitbench.provenance", "orbitbench.stats", "orbitbench.flags",
                "orbitbench.plots")),
    ("data and group actions", ("orbitbench.data", "orbitbench.data_cache", "orbitbench.orbits", "orbitbench.splits")),
    ("models", ("orbitbench.models",)),
    ("theory", ("orbitbench.theory",)),
    ("methods", ("orbitbench.methods",)),
    ("trust", ("orbitbench.trust",)),
    ("datamodules", ("orbitbench.datamodules",)),
    ("run", ("orbitbench.run",)),
    ("experiments", ("orbitbench.experiments",)),
    ("sweep", ("orbitbench.sweep",)),
    ("leaderboard", ("orbitbench.leaderboard",)),
    ("front", ("orbitbench", "orbitbench.cli", "orbitbench.__main__")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            found[".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])] = path
    return found


def _edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules `name` imports anywhere in its file (`from pkg import sub`: the submodule only)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
            out.update(subs | ({node.module} if len(subs) < len(node.names) else set()))
    return {m for m in out if m in modules and m != name}


def _floor(module: str) -> int:
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(FLOORS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is on no floor: add it to FLOORS (and to docs/ARCHITECTURE.md)"
    return max(matches)[1]


def test_no_import_cycle_inside_the_package() -> None:
    modules = _modules()
    graph = {name: _edges(name, path, modules) - {"orbitbench"} for name, path in modules.items()}
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


def test_every_import_runs_down_the_floors() -> None:
    modules = _modules()
    upward = [f"{name} ({FLOORS[_floor(name)][0]}) imports {other} ({FLOORS[_floor(other)][0]})"
              for name, path in sorted(modules.items()) for other in sorted(_edges(name, path, modules) - {"orbitbench"})
              if _floor(other) > _floor(name)]
    assert not upward, "imports that run back up a floor:\n" + "\n".join(upward)


def test_the_walk_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from orbitbench.run import cli\n")
    assert _edges("orbitbench.x", module, {"orbitbench.run": module, "orbitbench.run.cli": module}) == {"orbitbench.run.cli"}


def test_no_module_is_over_400_lines() -> None:
    long = {str(path.relative_to(REPO)): n for path in _modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (one job per module): {long}"
