"""Modules state their public names: ``__all__`` exists where required and names only what is there.

Read with ast, nothing imported: a module's ``__all__`` may list what it defines, what it imports
on purpose (a re-export) or, for a package, its submodules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scripts.paths import REPO

# Every module of the library, the tools and the handlers, but a package's ``python -m`` entry.
REQUIRED = sorted(
    str(path.relative_to(REPO))
    for root in ("scripts", "handlers")
    for path in (REPO / root).rglob("*.py")
    if path.name != "__main__.py"
) + ["tests/support/images.py"]
DECLARING = sorted(
    str(path.relative_to(REPO))
    for root in ("scripts", "handlers", "tests/support")
    for path in (REPO / root).rglob("*.py")
    if "__all__" in path.read_text()
)


def declared(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return None


def defined(tree: ast.Module, path: Path) -> set[str]:
    """Names bound at module level, plus submodules when ``path`` is a package's __init__."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if path.name == "__init__.py":
        names |= {p.stem for p in path.parent.glob("*.py")} | {
            p.name for p in path.parent.iterdir() if (p / "__init__.py").is_file()
        }
    return names


@pytest.mark.parametrize("relative", REQUIRED)
def test_required_modules_declare_public_names(relative):
    assert declared(ast.parse((REPO / relative).read_text())) is not None, f"{relative} has no __all__"


@pytest.mark.parametrize("relative", DECLARING)
def test_public_names_exist_once(relative):
    path = REPO / relative
    tree = ast.parse(path.read_text())
    names = declared(tree)
    if names is None:  # "__all__" only mentioned, e.g. in a docstring
        return
    assert len(names) == len(set(names)), f"{relative}: a name listed twice in __all__"
    missing = set(names) - defined(tree, path)
    assert not missing, f"{relative}: __all__ lists {sorted(missing)}, which it does not define"
