"""The project's import graph runs one way: no cycles among scripts/ and handlers/ modules, and the
handlers (what a TorchServe worker loads) never import the tools in scripts/.

Every ``import`` statement counts, at module level or inside a function (a function-level import
hides a cycle from the interpreter until the function runs; it does not remove it). An edge goes to
the longest dotted prefix that is a project module: ``from scripts.bench import load`` is an edge to
``scripts.bench.load``; ``from scripts.client import Endpoints`` one to ``scripts.client``. Parent
packages are not added as edges: their ``__init__`` files are graphed by their own imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.paths import REPO

__all__ = ["find_cycles", "import_graph", "imported_modules", "project_modules"]

ROOTS = ("scripts", "handlers")


def project_modules(repo: Path = REPO, roots: tuple[str, ...] = ROOTS) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under ``roots``; packages by their __init__."""
    modules = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(repo).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _target(name: str, known: set[str]) -> str | None:
    """The longest dotted prefix of ``name`` that is a project module (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imported_modules(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Project modules that ``source`` (the text of ``module``) imports anywhere in its body."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..pkg import y
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in (_target(name, known) for name in names if name) if t and t != module}
    return found


def import_graph(repo: Path = REPO, roots: tuple[str, ...] = ROOTS) -> dict[str, set[str]]:
    """{module: project modules it imports} for every module under ``roots``."""
    modules = project_modules(repo, roots)
    known = set(modules)
    return {
        name: imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module, as [a, b, ..., a].

    Tarjan's algorithm, iterative (no recursion limit on a deep tree).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return [_cycle_in(graph, set(component)) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A concrete cycle through the smallest-named module of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to ``start``
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    return paths[node] + [start]
                if child in component and child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}; not a strongly connected component")


@pytest.mark.parametrize(
    ("graph", "cycles"),
    [
        ({}, []),
        ({"a": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
        ({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x"}}, [["a", "b", "a"], ["x", "y", "x"]]),
    ],
    ids=["empty", "one module", "chain", "pair", "triangle with a tail", "two cycles"],
)
def test_find_cycles_table(graph, cycles):
    assert sorted(find_cycles(graph)) == cycles


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("", "scripts.a", False, set()),
        ("import os\nimport numpy as np", "scripts.a", False, set()),
        ("from scripts.b import thing", "scripts.a", False, {"scripts.b"}),
        ("def f():\n    from scripts.b import thing", "scripts.a", False, {"scripts.b"}),
        ("from scripts.pkg import c", "scripts.a", False, {"scripts.pkg.c"}),
        ("from scripts.pkg import missing", "scripts.a", False, {"scripts.pkg"}),
        ("import scripts.pkg.c", "scripts.a", False, {"scripts.pkg.c"}),
        ("from . import c", "scripts.pkg", True, {"scripts.pkg.c"}),
        ("from .c import x", "scripts.pkg.d", False, {"scripts.pkg.c"}),
        ("from .. import b", "scripts.pkg.d", False, {"scripts.b"}),
    ],
    ids=[
        "empty",
        "third party",
        "from",
        "function level",
        "submodule",
        "package attribute",
        "dotted import",
        "relative package",
        "relative sibling",
        "relative parent",
    ],
)
def test_imported_modules_table(source, module, is_package, expected):
    known = {"scripts", "scripts.a", "scripts.b", "scripts.pkg", "scripts.pkg.c", "scripts.pkg.d"}
    assert imported_modules(source, module, is_package, known) == expected


def test_graph_sees_the_real_tree():
    graph = import_graph()
    assert {"scripts.client", "scripts.config", "handlers.schema"} <= set(graph)
    assert "scripts.config" in graph["scripts.client"]
    assert "handlers.schema" in graph["scripts.client"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_handlers_import_nothing_from_scripts():
    graph = import_graph()
    wrong = {
        module: sorted(t for t in targets if t.split(".")[0] == "scripts")
        for module, targets in graph.items()
        if module.split(".")[0] == "handlers"
    }
    wrong = {module: targets for module, targets in wrong.items() if targets}
    assert not wrong, f"handlers/ must not import scripts/ (a worker loads handlers alone): {wrong}"
