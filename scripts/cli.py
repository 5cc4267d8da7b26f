"""One convention for every command-line tool here: exit codes, usage errors, failure messages.

Every tool (``manage``, ``batch``, ``stream``, ``drift``, ``bench.capacity``, ``bench.gate``) ends with
one of the :class:`Exit` codes below (the same table is in README.md, "Exit codes"), and a failure is
one line on stderr, ``<tool>: error: <what happened and what to do>``, never a traceback:

    code  name          meaning
    0     OK            done; every input has a result
    1     FAILED_ITEMS  the run finished, but some of it failed: inputs with error rows (batch), frames
                        that failed (stream), a comparison under its pass mark (manage compare /
                        promote), a regression (bench gate), drift found (drift report --fail-on-drift)
    2     USAGE         bad arguments, settings or input files; nothing was done
    3     UNREACHABLE   no server (or camera) answers; rerun when it is back
    4     AUTH          the token was rejected and could not be renewed, or the key file is missing
    5     REFUSED       the server answers but refuses: unknown model or version, model API off, ...
    6     LOCK_HELD     another run holds the lock (batch output, cron wrapper); nothing was done
    130   INTERRUPTED   stopped by Ctrl-C / SIGTERM; rerun to resume where a tool can

    from scripts.cli import Exit, UsageError, run_main

    def main(argv=None) -> int:
        args = build_parser().parse_args(argv)     # argparse itself exits 2 (USAGE) on bad flags
        return run_main(lambda: work(args), "python -m scripts.mytool")
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from enum import IntEnum
from pathlib import Path

from scripts.client import AuthError, ClientError, ModelNotReady, RequestRejected, ServerUnavailable
from scripts.paths import REPO

__all__ = [
    "BOUND_HELP",
    "Exit",
    "MOMENT_HELP",
    "ToolError",
    "UsageError",
    "add_alias",
    "exit_code",
    "moment_type",
    "parse_bound",
    "parse_moment",
    "prog",
    "run_main",
]


class Exit(IntEnum):
    """Exit codes shared by every tool (table in the module docstring and in README.md)."""

    OK = 0
    FAILED_ITEMS = 1
    USAGE = 2
    UNREACHABLE = 3
    AUTH = 4
    REFUSED = 5
    LOCK_HELD = 6
    INTERRUPTED = 130


class ToolError(Exception):
    """Ends a tool with ``code``; the message is the one line the user sees."""

    code: Exit = Exit.USAGE

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(ToolError):
    """Arguments, settings or input files the tool cannot work with; the message says what to write."""

    code = Exit.USAGE


def exit_code(err: BaseException) -> Exit | None:
    """The exit code a failure maps to; None for an unexpected exception (a bug: let it show)."""
    if isinstance(err, ToolError):
        return err.code
    if isinstance(err, KeyboardInterrupt):
        return Exit.INTERRUPTED
    if isinstance(err, ServerUnavailable):
        return Exit.UNREACHABLE
    if isinstance(err, AuthError):
        return Exit.AUTH
    if isinstance(err, (RequestRejected, ModelNotReady, ClientError)):
        # The server answered and would not do it: a 4xx, an unknown model or version, a 5xx.
        return Exit.REFUSED
    return None


def run_main(
    body: Callable[[], int | None],
    name: str,
    report: Callable[[Exit, str], None] | None = None,
) -> int:
    """Run a tool's work and turn its known failures into an exit code and one line on stderr.

    ``body`` returns an exit code (None = OK). ``report`` is also called with (code, message) on a
    failure, e.g. to print a JSON error for ``--json``. Unexpected exceptions propagate.
    """
    try:
        code = body()
    except (ToolError, ClientError, KeyboardInterrupt) as err:
        code = exit_code(err)
        message = str(err) or "interrupted"
        if report is not None:
            report(code, message)
        print(f"{name}: error: {message}", file=sys.stderr)
        return int(code)
    return int(Exit.OK if code is None else code)


def prog(module: str) -> str:
    """``python -m <module>`` for usage lines; an alias module run with -m names itself instead."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.suffix == ".py" and script.is_absolute():
        try:
            parts = script.relative_to(REPO).with_suffix("").parts
        except ValueError:
            parts = ()
        if parts and parts[0] == "scripts":
            parts = parts[:-1] if parts[-1] == "__main__" else parts
            return "python -m " + ".".join(parts)
    return f"python -m {module}"


def add_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, dest: str, **kw) -> None:
    """An old spelling of an option, still accepted but not shown in --help."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


# -- dates: the forms --since / --until take in every tool ----------------------------------------

RELATIVE_DAYS = re.compile(r"^-(\d+)d$")
EPOCH = re.compile(r"^\d{9,}(\.\d*)?$")  # seconds since 1970: 9+ digits (from 1973 on)
BOUND_HELP = "a date (2026-11-26), a time (2026-11-26T08:00), today, yesterday or -Nd (N days ago)"
MOMENT_HELP = f"{BOUND_HELP}, or epoch seconds"


def parse_bound(text: str, *, end: bool, now: datetime | None = None) -> datetime:
    """One --since (``end=False``) or --until (``end=True``) value -> local naive datetime.

    A bare date names a whole day: as a start it is that day's 00:00, as an end the next day's 00:00.
    """
    value = text.strip().lower()
    today = (now or datetime.now()).date()
    day: date | None = None
    if value == "today":
        day = today
    elif value == "yesterday":
        day = today - timedelta(days=1)
    elif match := RELATIVE_DAYS.match(value):
        day = today - timedelta(days=int(match.group(1)))
    else:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.strip())
            except ValueError:
                raise ValueError(f"cannot read date {text!r}: write {BOUND_HELP}") from None
            if moment.tzinfo is not None:  # an explicit offset: convert to local time
                moment = moment.astimezone().replace(tzinfo=None)
            return moment
    start = datetime.combine(day, time())
    return start + timedelta(days=1) if end else start


def parse_moment(text: str, *, end: bool, now: datetime | None = None) -> float:
    """--since / --until of the tools that work in epoch seconds (drift): the forms of
    :func:`parse_bound` (the ones batch takes), or epoch seconds as such (``1719800000``)."""
    value = text.strip()
    if EPOCH.match(value):
        return float(value)
    try:
        return parse_bound(value, end=end, now=now).timestamp()
    except ValueError:
        raise ValueError(f"cannot read date {text!r}: write {MOMENT_HELP}") from None


def moment_type(*, end: bool) -> Callable[[str], float]:
    """argparse ``type=`` of a --since (``end=False``) / --until (``end=True``) in epoch seconds."""

    def parse(text: str) -> float:
        try:
            return parse_moment(text, end=end)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse
