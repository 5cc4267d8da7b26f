"""Which files a batch run scores: folders walked lazily, globs, and a date range.

A file's date is either its modification time (``mtime``) or the dated folder it sits in
(``folder``): ``.../2026-11-26/x.jpg`` and ``.../2026/11/26/x.jpg`` are dated 26 November 2026.
All times are local (cron runs in local time). Date bounds:

    --since 2026-11-25          from 25 Nov 00:00 (inclusive)
    --until 2026-11-26          to the end of 26 Nov (a date names a whole day)
    --since 2026-11-26T08:00    a time is an instant: since inclusive, until exclusive
    --since yesterday --until yesterday    yesterday, whole day; also ``today`` and ``-3d``

Folder dates have day resolution: a file in a day folder is selected when the whole day lies inside
the range, and folders whose year, month or day lies wholly outside it are not even entered.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scripts.cli import BOUND_HELP, parse_bound

__all__ = [
    "BOUND_HELP",
    "DATE_BY",
    "DateRange",
    "InputFile",
    "date_range",
    "folder_span",
    "parse_bound",
    "select_files",
    "walk",
]

DATE_BY = ("mtime", "folder")
GLOB_CHARS = re.compile(r"[*?\[]")
DAY_FOLDER = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
YEAR_FOLDER = re.compile(r"^(19|20|21)\d{2}$")
TWO_DIGITS = re.compile(r"^\d{2}$")


@dataclass(frozen=True)
class DateRange:
    """Half-open local-time interval [since, until); None is unbounded on that side."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def contains(self, moment: datetime) -> bool:
        return (self.since is None or moment >= self.since) and (self.until is None or moment < self.until)

    def covers(self, start: datetime, end: datetime) -> bool:
        """True when all of [start, end) lies inside the range."""
        return (self.since is None or start >= self.since) and (self.until is None or end <= self.until)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return (self.since is None or end > self.since) and (self.until is None or start < self.until)


@dataclass(frozen=True)
class InputFile:
    path: str  # absolute, not symlink-resolved; the key of the file's row
    mtime: float  # seconds since the epoch
    size: int  # bytes


def date_range(since: str | None, until: str | None, now: datetime | None = None) -> DateRange:
    """--since / --until strings -> DateRange; ValueError when empty or reversed."""
    start = parse_bound(since, end=False, now=now) if since else None
    stop = parse_bound(until, end=True, now=now) if until else None
    if start is not None and stop is not None and stop <= start:
        raise ValueError(f"--until ({until}) must be after --since ({since}): the range selects nothing")
    return DateRange(start, stop)


def _span(year: int, month: int | None = None, day: int | None = None) -> tuple[datetime, datetime] | None:
    try:
        if day is not None:
            start = datetime(year, month, day)
            return start, start + timedelta(days=1)
        if month is not None:
            start = datetime(year, month, 1)
            return start, datetime(year + month // 12, month % 12 + 1, 1)
        return datetime(year, 1, 1), datetime(year + 1, 1, 1)
    except ValueError:  # 2026/13/40 is not a date
        return None


def folder_span(parts: Sequence[str]) -> tuple[datetime, datetime] | None:
    """The time a dated directory path covers, from its deepest date; None when it holds no date.

    ``[..., "2026-11-26"]`` and ``[..., "2026", "11", "26"]`` -> that day; ``[..., "2026", "11"]``
    -> November; ``[..., "2026"]`` -> the year. A year or month counts only at the end of ``parts``
    (a partially dated folder being walked); deeper complete dates win over shallower ones.
    """
    found: tuple[datetime, datetime] | None = None
    count = len(parts)
    for i, part in enumerate(parts):
        if match := DAY_FOLDER.match(part):
            found = _span(*map(int, match.groups())) or found
        elif YEAR_FOLDER.match(part):
            month_ok = i + 1 < count and TWO_DIGITS.match(parts[i + 1])
            day_ok = month_ok and i + 2 < count and TWO_DIGITS.match(parts[i + 2])
            if day_ok:
                found = _span(int(part), int(parts[i + 1]), int(parts[i + 2])) or found
            elif month_ok and i + 2 == count:
                found = _span(int(part), int(parts[i + 1])) or found
            elif i + 1 == count:
                found = _span(int(part)) or found
    return found


def _is_day(span: tuple[datetime, datetime]) -> bool:
    return span[1] - span[0] == timedelta(days=1)


def walk(
    root: Path, prune: Callable[[tuple[str, ...]], bool] = lambda parts: False
) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """Yield (file, directory parts relative to ``root``) depth-first in name order, lazily.

    Hidden entries (``.name``) are skipped, so are directories for which ``prune(parts)`` is true;
    symlinked directories are not entered (no cycles), symlinked files are yielded.
    """
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        directory, parts = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue  # unreadable directory: nothing to score in it
        subdirs = []
        for entry in listing:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                child = (*parts, entry.name)
                if not prune(child):
                    subdirs.append((Path(entry.path), child))
            elif entry.is_file():
                yield Path(entry.path), parts
        stack.extend(reversed(subdirs))  # pop() takes the first name next


def select_files(
    inputs: Iterable[str],
    dates: DateRange = DateRange(),
    date_by: str = "mtime",
    extensions: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    skipped: dict[str, int] | None = None,
) -> Iterator[InputFile]:
    """Files named by ``inputs`` (folders, files or glob patterns) that fall in ``dates``, each once.

    ``extensions`` (case-insensitive, without dot) restricts the names; ``exclude`` lists absolute
    paths never to select (the run's own output). ``skipped`` counts files left out by reason
    (extension, unreadable, undated, outside the range) and the dated folders not entered.
    """
    if date_by not in DATE_BY:
        raise ValueError(f"date_by must be one of {DATE_BY}, got {date_by!r}")
    suffixes = {"." + e.lower().lstrip(".") for e in extensions} if extensions else None
    seen = set(map(os.path.abspath, exclude))
    skipped = {} if skipped is None else skipped

    def prune(parts: tuple[str, ...]) -> bool:
        span = folder_span(parts) if date_by == "folder" and dates.bounded else None
        outside = span is not None and not dates.overlaps(*span)
        if outside:
            _count(skipped, "folders outside the range")
        return outside

    for path, parts in _candidates(inputs, prune):
        key = os.path.abspath(path)
        if key in seen:
            continue
        seen.add(key)
        if suffixes is not None and path.suffix.lower() not in suffixes:
            _count(skipped, "extension")
            continue
        try:
            stat = path.stat()
        except OSError:
            _count(skipped, "unreadable")
            continue
        if dates.bounded:
            if date_by == "mtime":
                if not dates.contains(datetime.fromtimestamp(stat.st_mtime)):
                    _count(skipped, "outside the range")
                    continue
            else:
                span = folder_span(parts)
                if span is None or not _is_day(span):
                    _count(skipped, "undated")
                    continue
                if not dates.covers(*span):
                    _count(skipped, "outside the range")
                    continue
        yield InputFile(key, stat.st_mtime, stat.st_size)


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def _candidates(
    inputs: Iterable[str], prune: Callable[[tuple[str, ...]], bool]
) -> Iterator[tuple[Path, tuple[str, ...]]]:
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            yield from walk(path, prune)
        elif path.is_file():
            yield path, Path(os.path.abspath(path)).parent.parts
        elif GLOB_CHARS.search(spec):
            for match in glob.iglob(os.path.expanduser(spec), recursive=True):
                found = Path(match)
                if found.is_file():
                    yield found, Path(os.path.abspath(found)).parent.parts
        else:
            raise FileNotFoundError(
                f"input {spec!r} is neither a folder, a file nor a glob pattern that exists"
            )
