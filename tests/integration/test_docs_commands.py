"""Every command the README and docs/ show still exists, so the docs cannot drift from the tools.

For each ``python -m scripts...`` command written in README.md or docs/*.md, the module is run with
``--help`` (the sub-command's help when the command names one) and every long option the doc uses
must be in that help. For each ``make <target>``, the target must exist (``make -n``). Commands
that need no camera and no server also run for real (RUN_FOR_REAL).
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.paths import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON_COMMAND = re.compile(r"python3? -m (scripts(?:\.\w+)*)((?:[^`\n|;&#)]|\\\n)*)")
MAKE_COMMAND = re.compile(r"(?<![\w-])make ([a-z][a-z0-9-]*)")
# Documented commands that need no server and no camera: run as written (module, first argument).
RUN_FOR_REAL = {("scripts.bench.gate", None), ("scripts.bench.capacity", None)}


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(doc name, module, arguments) for every python -m scripts... command in the docs."""
    found = []
    for doc in DOCS:
        for match in PYTHON_COMMAND.finditer(doc.read_text()):
            text = match.group(2).replace("\\\n", " ")
            try:
                args = shlex.split(text)
            except ValueError:  # an unbalanced quote in prose: the options are still words
                args = text.split()
            found.append((doc.name, match.group(1), args))
    return found


def documented_make_targets() -> list[tuple[str, str]]:
    return sorted({(doc.name, m.group(1)) for doc in DOCS for m in MAKE_COMMAND.finditer(doc.read_text())})


def runnable_here(args: list[str]) -> bool:
    """Arguments with no placeholder and no path to a file that only exists after a benchmark run."""
    paths = [a for a in args if "/" in a or a.endswith(".json")]
    return bool(args) and "<" not in " ".join(args) and all((REPO / a).exists() for a in paths)


@functools.cache
def help_text(module: str, subcommand: str | None) -> tuple[int, str]:
    command = [sys.executable, "-m", module, *([subcommand] if subcommand else []), "--help"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def subcommands(help_output: str) -> set[str]:
    """Sub-command names from argparse's ``{a,b,c}`` choice list."""
    match = re.search(r"\{([\w,-]+)\}", help_output)
    return set(match.group(1).split(",")) if match else set()


@pytest.mark.parametrize(("doc", "module", "args"), documented_commands(), ids=lambda v: str(v)[:40])
def test_documented_command_has_its_options(doc: str, module: str, args: list[str]) -> None:
    code, top = help_text(module, None)
    assert code == 0, f"{doc}: `python -m {module} --help` failed:\n{top[-2000:]}"
    subcommand = args[0] if args and args[0] in subcommands(top) else None
    code, text = help_text(module, subcommand) if subcommand else (code, top)
    assert code == 0, f"{doc}: `python -m {module} {subcommand} --help` failed:\n{text[-2000:]}"
    options = {a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2}
    missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text))
    assert not missing, f"{doc}: `python -m {module} {' '.join(args)}` uses {missing}, unknown to the tool"


@pytest.mark.parametrize(("doc", "target"), documented_make_targets())
def test_documented_make_target_exists(doc: str, target: str) -> None:
    result = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "No rule to make target" not in result.stderr, f"{doc}: `make {target}` has no rule"


@pytest.mark.parametrize(
    ("doc", "module", "args"),
    [c for c in documented_commands() if (c[1], None) in RUN_FOR_REAL and runnable_here(c[2])],
    ids=lambda v: str(v)[:40],
)
def test_documented_offline_command_runs(doc: str, module: str, args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    # 0 ok; 1 a measured goal not met (the gate) is still a command that ran as documented.
    assert result.returncode in (0, 1), f"{doc}: python -m {module} {' '.join(args)}\n{result.stderr[-2000:]}"
