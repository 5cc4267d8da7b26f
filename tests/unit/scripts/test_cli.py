"""scripts/cli.py: the exit-code table every tool shares, the failure line, usage names, date forms."""

from __future__ import annotations

import argparse
from datetime import datetime

import pytest

from scripts import cli
from scripts.cli import Exit, ToolError, UsageError, exit_code, parse_moment, run_main
from scripts.client import AuthError, ClientError, ModelNotReady, RequestRejected, ServerUnavailable
from scripts.paths import REPO

NOW = datetime(2026, 11, 27, 3, 0)


def test_the_table_is_the_documented_one():
    assert {e.name: e.value for e in Exit} == {
        "OK": 0, "FAILED_ITEMS": 1, "USAGE": 2, "UNREACHABLE": 3, "AUTH": 4, "REFUSED": 5,
        "LOCK_HELD": 6, "INTERRUPTED": 130,
    }  # fmt: skip
    readme = (REPO / "README.md").read_text()
    for code in Exit:
        assert f"| {code.value} | `{code.name}` |" in readme, f"README.md's exit-code table lacks {code.name}"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ServerUnavailable("nothing listens"), Exit.UNREACHABLE),
        (AuthError("token rejected"), Exit.AUTH),
        (RequestRejected("405", 405), Exit.REFUSED),
        (ModelNotReady("unknown model", 404), Exit.REFUSED),
        (ClientError("worker died", 500), Exit.REFUSED),
        (UsageError("bad flag"), Exit.USAGE),
        (ToolError("lock held", Exit.LOCK_HELD), Exit.LOCK_HELD),
        (KeyboardInterrupt(), Exit.INTERRUPTED),
        (ValueError("a bug"), None),
    ],
)
def test_exit_code(error, code):
    assert exit_code(error) == code


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (ServerUnavailable("TorchServe is not reachable"), 3, "tool: error: TorchServe is not reachable\n"),
        (AuthError("token rejected"), 4, "tool: error: token rejected\n"),
        (RequestRejected("set-default rejected (404)", 404), 5, "tool: error: set-default rejected (404)\n"),
        (UsageError("--max 2 is below 3"), 2, "tool: error: --max 2 is below 3\n"),
        (ToolError("another run holds x.lock", Exit.LOCK_HELD), 6, "tool: error: another run holds x.lock\n"),
        (KeyboardInterrupt(), 130, "tool: error: interrupted\n"),
    ],
)
def test_run_main_prints_one_line_and_no_traceback(capsys, error, code, line):
    reported = []

    def body():
        raise error

    assert run_main(body, "tool", lambda c, m: reported.append((c, m))) == code
    captured = capsys.readouterr()
    assert captured.err == line and captured.out == "" and "Traceback" not in captured.err
    assert reported == [(code, line.removeprefix("tool: error: ").rstrip("\n"))]


@pytest.mark.parametrize(("returned", "code"), [(None, 0), (0, 0), (Exit.FAILED_ITEMS, 1), (1, 1)])
def test_run_main_passes_the_body_code_through(capsys, returned, code):
    assert run_main(lambda: returned, "tool") == code
    assert capsys.readouterr().err == ""


def test_run_main_lets_a_bug_show():
    def body():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        run_main(body, "tool")


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("", "python -m scripts.tool"),
        ("/usr/bin/pytest", "python -m scripts.tool"),
        (str(REPO / "scripts" / "capacity.py"), "python -m scripts.capacity"),  # an alias names itself
        (str(REPO / "scripts" / "bench" / "capacity.py"), "python -m scripts.bench.capacity"),
        (str(REPO / "scripts" / "batch" / "__main__.py"), "python -m scripts.batch"),
        ("/elsewhere/scripts/x.py", "python -m scripts.tool"),
    ],
)
def test_prog_names_the_module(monkeypatch, argv0, expected):
    monkeypatch.setattr("sys.argv", [argv0])
    assert cli.prog("scripts.tool") == expected


def test_alias_is_accepted_and_hidden():
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", help="model version")
    cli.add_alias(parser, "--model-version", "version")
    assert parser.parse_args(["--model-version", "1.0"]).version == "1.0"
    assert parser.parse_args(["--version", "2.0"]).version == "2.0"
    assert parser.parse_args([]).version is None
    assert "--model-version" not in parser.format_help()


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("1719800000", False, 1719800000.0),  # epoch seconds as such
        ("1719800000.5", True, 1719800000.5),
        ("2026-11-26", False, datetime(2026, 11, 26).timestamp()),
        ("2026-11-26", True, datetime(2026, 11, 27).timestamp()),  # a date names the whole day
        ("2026-11-26T08:00", True, datetime(2026, 11, 26, 8).timestamp()),
        ("yesterday", False, datetime(2026, 11, 26).timestamp()),
        ("today", True, datetime(2026, 11, 28).timestamp()),
        ("-7d", False, datetime(2026, 11, 20).timestamp()),
    ],
)
def test_parse_moment(text, end, expected):
    assert parse_moment(text, end=end, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "soon", "2026-13-01", "7d", "1234"])
def test_parse_moment_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="yesterday"):
        parse_moment(text, end=False, now=NOW)
