"""Pure helpers of the batch CLI: output-name templates, state files, archive lookup, arguments."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from scripts.batch.cli import (
    UsageError,
    build_parser,
    check_args,
    expand_output,
    find_archive,
    state_paths,
)
from scripts.batch.selection import date_range

NOW = datetime(2026, 11, 27, 3, 0)


@pytest.mark.parametrize(
    ("template", "since", "until", "expected"),
    [
        ("out.jsonl", None, None, "out.jsonl"),
        ("s/{since}.jsonl", "2026-11-26", "2026-11-26", "s/2026-11-26.jsonl"),
        ("s/{since}_{until}.csv", "2026-11-20", "2026-11-26", "s/2026-11-20_2026-11-26.csv"),
        ("s/{since:%Y%m%d}.json", "2026-11-26", None, "s/20261126.json"),
        ("s/{until:%Y-%m-%dT%H}.json", None, "2026-11-26T08:00", "s/2026-11-26T07.json"),
        ("s/{today}.jsonl", None, None, "s/2026-11-27.jsonl"),
    ],
)
def test_expand_output(template: str, since, until, expected: str) -> None:
    assert expand_output(template, date_range(since, until, now=NOW), NOW) == Path(expected)


@pytest.mark.parametrize(
    ("template", "message"), [("{since}.jsonl", "--since is not set"), ("{nope}.jsonl", "nope")]
)
def test_expand_output_says_what_is_missing(template: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        expand_output(template, date_range(None, None), NOW)


def test_state_files_are_hidden_siblings() -> None:
    journal, lock = state_paths(Path("/data/scores/2026-11-26.jsonl"))
    assert journal == Path("/data/scores/.2026-11-26.jsonl.journal")
    assert lock == Path("/data/scores/.2026-11-26.jsonl.lock")


@pytest.mark.parametrize(
    ("files", "version", "expected"),
    [
        (["m-2.0.mar"], None, "m-2.0.mar"),
        (["m-1.0.mar", "m-2.0.mar"], "1.0", "m-1.0.mar"),
        ([], "3.0", "m-3.0.mar"),  # named explicitly: ArchivedModel says it is missing
    ],
)
def test_find_archive(tmp_path: Path, files: list[str], version, expected: str) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert find_archive(tmp_path, "m", version) == tmp_path / expected


@pytest.mark.parametrize("files", [[], ["m-1.0.mar", "m-2.0.mar"]])
def test_find_archive_needs_a_version_when_ambiguous(tmp_path: Path, files: list[str]) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UsageError, match="--version"):
        find_archive(tmp_path, "m", None)


@pytest.mark.parametrize(
    "argv", [["--concurrency", "0"], ["--batch-size", "0"], ["--retries", "-1"], ["--timeout", "0"]]
)
def test_check_args_rejects(argv: list[str]) -> None:
    args = build_parser().parse_args(["in", "-o", "out.jsonl", *argv])
    with pytest.raises(UsageError):
        check_args(args)
