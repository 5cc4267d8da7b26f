"""File selection for batch runs: date bounds, dated folders, lazy walks, globs (tmp trees)."""

from __future__ import annotations

import os
from datetime import datetime
from types import GeneratorType

import pytest

from scripts.batch.selection import DateRange, date_range, folder_span, parse_bound, select_files, walk

NOW = datetime(2026, 11, 27, 3, 0)


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2026-11-26", False, datetime(2026, 11, 26)),
        ("2026-11-26", True, datetime(2026, 11, 27)),  # a date names the whole day
        ("2026-12-31", True, datetime(2027, 1, 1)),
        ("today", False, datetime(2026, 11, 27)),
        ("Yesterday", False, datetime(2026, 11, 26)),
        ("yesterday", True, datetime(2026, 11, 27)),
        ("-3d", False, datetime(2026, 11, 24)),
        ("-0d", True, datetime(2026, 11, 28)),
        ("2026-11-26T08:30", False, datetime(2026, 11, 26, 8, 30)),
        ("2026-11-26T08:30", True, datetime(2026, 11, 26, 8, 30)),  # a time is an instant
        ("2026-11-26 08:30:15", False, datetime(2026, 11, 26, 8, 30, 15)),
    ],
)
def test_parse_bound(text: str, end: bool, expected: datetime) -> None:
    assert parse_bound(text, end=end, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "26/11/2026", "last week", "3d", "2026-13-01", "-d"])
def test_parse_bound_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="yesterday"):
        parse_bound(text, end=False, now=NOW)


def test_parse_bound_converts_an_offset_to_local_time() -> None:
    moment = parse_bound("2026-11-26T08:00+00:00", end=False)
    assert moment.tzinfo is None
    assert moment == datetime.fromisoformat("2026-11-26T08:00+00:00").astimezone().replace(tzinfo=None)


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, DateRange()),
        ("2026-11-26", None, DateRange(datetime(2026, 11, 26), None)),
        (None, "2026-11-26", DateRange(None, datetime(2026, 11, 27))),
        ("yesterday", "yesterday", DateRange(datetime(2026, 11, 26), datetime(2026, 11, 27))),
    ],
)
def test_date_range(since: str | None, until: str | None, expected: DateRange) -> None:
    assert date_range(since, until, now=NOW) == expected


@pytest.mark.parametrize(
    ("since", "until"), [("2026-11-27", "2026-11-26"), ("2026-11-26T12:00", "2026-11-26T12:00")]
)
def test_date_range_rejects_an_empty_range(since: str, until: str) -> None:
    with pytest.raises(ValueError, match="must be after"):
        date_range(since, until, now=NOW)


DAY_26 = (datetime(2026, 11, 26), datetime(2026, 11, 27))


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((), None),
        (("photos",), None),
        (("2026-11-26",), DAY_26),
        (("cam1", "2026-11-26", "raw"), DAY_26),
        (("2026", "11", "26"), DAY_26),
        (("data", "2026", "11", "26", "cam1"), DAY_26),
        (("2026", "11"), (datetime(2026, 11, 1), datetime(2026, 12, 1))),
        (("2026", "12"), (datetime(2026, 12, 1), datetime(2027, 1, 1))),
        (("2026",), (datetime(2026, 1, 1), datetime(2027, 1, 1))),
        (("2026", "11", "raw"), None),  # a month counts only while walking into it
        (("2026", "13", "40"), None),
        (("2026-02-30",), None),
        (("2025-01-01", "old", "2026", "11", "26"), DAY_26),  # the deepest date wins
        (("1234", "11", "26"), None),  # not a plausible year
    ],
)
def test_folder_span(parts: tuple[str, ...], expected: tuple[datetime, datetime] | None) -> None:
    assert folder_span(parts) == expected


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2026, 11, 25, 23, 59), False),
        (datetime(2026, 11, 26), True),
        (datetime(2026, 11, 26, 23, 59), True),
        (datetime(2026, 11, 27), False),  # until is exclusive
    ],
)
def test_date_range_contains(moment: datetime, inside: bool) -> None:
    assert DateRange(*DAY_26).contains(moment) is inside


def _touch(path, when: datetime | None = None, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if when is not None:
        os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.fixture
def tree(tmp_path):
    """Dated folders of both layouts, undated files with chosen mtimes, hidden entries."""
    root = tmp_path / "in"
    _touch(root / "2026-11-25" / "a.jpg", datetime(2026, 11, 27, 1))
    _touch(root / "2026-11-26" / "b.jpg", datetime(2026, 11, 27, 1))
    _touch(root / "2026" / "11" / "26" / "c.png", datetime(2026, 11, 27, 1))
    _touch(root / "2026" / "11" / "27" / "d.JPG", datetime(2026, 11, 27, 1))
    _touch(root / "2025" / "12" / "31" / "e.jpg", datetime(2026, 11, 27, 1))
    _touch(root / "loose" / "f.jpg", datetime(2026, 11, 26, 12))
    _touch(root / "loose" / "g.txt", datetime(2026, 11, 25, 12))
    _touch(root / ".hidden" / "h.jpg", datetime(2026, 11, 26, 12))
    _touch(root / "loose" / ".i.jpg", datetime(2026, 11, 26, 12))
    (root / "empty").mkdir()
    return root


def _names(files) -> list[str]:
    return sorted(os.path.basename(f.path) for f in files)


@pytest.mark.parametrize(
    ("date_by", "since", "until", "expected"),
    [
        ("mtime", None, None, ["a.jpg", "b.jpg", "c.png", "d.JPG", "e.jpg", "f.jpg", "g.txt"]),
        ("mtime", "2026-11-26", "2026-11-26", ["f.jpg"]),
        ("mtime", "2026-11-25", "2026-11-26", ["f.jpg", "g.txt"]),
        ("mtime", "2026-11-27", None, ["a.jpg", "b.jpg", "c.png", "d.JPG", "e.jpg"]),
        ("mtime", "2026-11-26T13:00", "2026-11-27T00:30", []),
        ("folder", "2026-11-26", "2026-11-26", ["b.jpg", "c.png"]),
        ("folder", "2026-11-25", "2026-11-27", ["a.jpg", "b.jpg", "c.png", "d.JPG"]),
        ("folder", None, "2025-12-31", ["e.jpg"]),
        ("folder", "2026-11-26T12:00", "2026-11-27", ["d.JPG"]),  # day resolution: the 26th is cut
        ("folder", "2026-11-26T00:00", "2026-11-26T23:00", []),
        ("folder", None, None, ["a.jpg", "b.jpg", "c.png", "d.JPG", "e.jpg", "f.jpg", "g.txt"]),
    ],
)
def test_select_files_by_date(tree, date_by: str, since, until, expected: list[str]) -> None:
    assert _names(select_files([str(tree)], date_range(since, until), date_by)) == expected


def test_select_files_counts_undated_files_in_folder_mode(tree) -> None:
    skipped: dict[str, int] = {}
    list(select_files([str(tree)], date_range("2026-11-26", None), "folder", skipped=skipped))
    assert skipped == {"undated": 2, "folders outside the range": 2}  # 2025/, 2026-11-25/


def test_select_files_counts_files_outside_the_range(tree) -> None:
    skipped: dict[str, int] = {}
    list(select_files([str(tree)], date_range("2026-11-26", "2026-11-26"), "mtime", skipped=skipped))
    assert skipped == {"outside the range": 6}


def test_folder_mode_does_not_enter_folders_outside_the_range(tree) -> None:
    entered = []

    def prune(parts: tuple[str, ...]) -> bool:
        entered.append(parts)
        span = folder_span(parts)
        return span is not None and not DateRange(*DAY_26).overlaps(*span)

    files = [p.name for p, _ in walk(tree, prune)]
    assert "e.jpg" not in files and "a.jpg" not in files
    assert ("2025", "12") not in entered  # 2025 was pruned as a whole


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        (None, ["f.jpg", "g.txt"]),
        (["jpg"], ["f.jpg"]),
        ([".JPG", "png"], ["f.jpg"]),
        (["webp"], []),
    ],
)
def test_select_files_by_extension(tree, extensions, expected) -> None:
    assert _names(select_files([str(tree / "loose")], extensions=extensions)) == expected


def test_select_files_globs_files_and_dedup(tree) -> None:
    inputs = [str(tree / "2026*" / "**" / "*.*"), str(tree / "2026-11-25"), str(tree / "loose" / "f.jpg")]
    assert _names(select_files(inputs)) == ["a.jpg", "b.jpg", "c.png", "d.JPG", "f.jpg"]


def test_select_files_glob_uses_the_dated_folders_of_the_path(tree) -> None:
    found = select_files([str(tree / "**" / "*.*")], date_range("2026-11-26", "2026-11-26"), "folder")
    assert _names(found) == ["b.jpg", "c.png"]


def test_select_files_excludes_the_output(tree) -> None:
    output = tree / "loose" / "out.jsonl"
    _touch(output)
    assert _names(select_files([str(tree / "loose")], exclude=[str(output)])) == ["f.jpg", "g.txt"]


@pytest.mark.parametrize("inputs", [[], ["{empty}"], ["{empty}/*.jpg"], ["{empty}/**/*"]])
def test_select_files_empty_inputs(tree, inputs: list[str]) -> None:
    assert list(select_files([i.format(empty=tree / "empty") for i in inputs])) == []


def test_select_files_rejects_a_missing_input(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        list(select_files([str(tmp_path / "nope")]))


def test_select_files_is_lazy(tree) -> None:
    files = select_files([str(tree)])
    assert isinstance(files, GeneratorType)
    assert next(files).path.endswith("e.jpg")  # name order: 2025/ comes before 2026-11-25/
