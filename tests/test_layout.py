"""The layout reads as the architecture: packages import each other as a tree (no cycle, lazy imports included),
no folder holds more than 12 modules and no module passes 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "include" / "mlsys"
MAX_MODULES, MAX_LINES = 12, 400


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every mlsys module a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import name`: name may be a submodule
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "mlsys"}
    return found


def _package(module: str) -> str:
    """A module's node in the package graph: its package, or itself for a top-level module (mlsys.cli)."""
    path = MODULES[module]
    if path.name == "__init__.py" or module.count(".") == 1:
        return module
    return module.rsplit(".", 1)[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph(node) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        for target in _imports(path):
            while target not in MODULES:  # `import mlsys.x.y` of a name that is not a module: its package
                target = target.rsplit(".", 1)[0]
            if node(target) != node(module):
                graph.setdefault(node(module), set()).add(node(target))
    return graph


def test_packages_import_each_other_as_a_tree():
    assert _cycles(_graph(_package)) == []


def test_modules_have_no_import_cycle():
    assert _cycles(_graph(lambda m: m)) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_shipped_model_and_storage_import_no_stage_package():
    graph = _graph(_package)
    stage_packages = {"mlsys.ingest", "mlsys.labeling", "mlsys.validation", "mlsys.training", "mlsys.registry",
                      "mlsys.serving", "mlsys.streaming", "mlsys.bench"}
    for low in ("mlsys.model", "mlsys.storage"):
        reach = {t for t in graph.get(low, ()) if any(t == p or t.startswith(p + ".") for p in stage_packages)}
        assert reach == set(), f"{low} imports {reach}"


def test_folders_and_modules_stay_small():
    folders: dict[Path, int] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    assert {str(p.relative_to(PACKAGE)): n for p, n in folders.items() if n > MAX_MODULES} == {}
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
