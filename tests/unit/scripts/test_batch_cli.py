"""Pure helpers of the batch CLI: output-name templates, state files, archive lookup, arguments."""

from __future__ import annotations

import fcntl
from datetime import datetime
from pathlib import Path

import pytest

from scripts.batch.cli import (
    build_parser,
    check_args,
    check_dated,
    expand_output,
    find_archive,
    main,
    served_archives,
    state_paths,
)
from scripts.batch.selection import date_range
from scripts.cli import Exit, UsageError

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


@pytest.mark.parametrize(
    ("files", "load_models", "expected"),
    [
        (["m-1.0.mar", "m-2.0.mar"], ["m-2.0.mar", "m-1.0.mar"], "m-2.0.mar"),  # the server's default
        (["m-1.0.mar", "m-2.0.mar"], ["other-1.0.mar", "m-1.0.mar"], "m-1.0.mar"),
        (["m-1.0.mar"], ["m-2.0.mar"], "m-1.0.mar"),  # the only archive wins
    ],
)
def test_find_archive_defaults_to_the_default_version(tmp_path: Path, files, load_models, expected) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    assert find_archive(tmp_path, "m", None, load_models) == tmp_path / expected


def test_find_archive_with_the_shipped_config_picks_the_first_of_load_models(tmp_path: Path) -> None:
    for name in ("face_detector-1.0.mar", "face_detector-2.0.mar"):
        (tmp_path / name).write_bytes(b"")
    first = next(n for n in served_archives() if n.startswith("face_detector-"))
    assert find_archive(tmp_path, "face_detector", None, served_archives()) == tmp_path / first


def test_model_version_is_an_old_spelling_of_version() -> None:
    args = build_parser().parse_args(["in", "-o", "out.jsonl", "--model-version", "1.0"])
    assert args.version == "1.0"
    assert "--model-version" not in build_parser().format_help()


def _undated_tree(root: Path) -> Path:
    for rel in ("misc/a.jpg", "misc/b.jpg", "c.jpg"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def test_date_by_folder_on_undated_folders_is_a_usage_error(tmp_path: Path, capsys) -> None:
    root = _undated_tree(tmp_path / "in")
    output = tmp_path / "out.jsonl"
    argv = [
        str(root),
        "-o",
        str(output),
        "--date-by",
        "folder",
        "--since",
        "yesterday",
        "--until",
        "yesterday",
    ]
    assert main(argv) == Exit.USAGE
    err = capsys.readouterr().err
    assert "none of the 3 files" in err and "dated folder" in err and "--date-by mtime" in err
    assert not output.exists()


def test_date_by_folder_with_dated_folders_outside_the_range_is_an_empty_day(tmp_path: Path, capsys) -> None:
    root = _undated_tree(tmp_path / "in")
    (root / "2026-11-20").mkdir()
    (root / "2026-11-20" / "d.jpg").write_bytes(b"x")
    output = tmp_path / "out.jsonl"
    argv = [
        str(root),
        "-o",
        str(output),
        "--date-by",
        "folder",
        "--since",
        "2026-11-26",
        "--until",
        "2026-11-26",
    ]
    assert main(argv) == Exit.OK and output.read_text() == ""


def test_check_dated_only_judges_bounded_folder_runs() -> None:
    args = build_parser().parse_args(["in", "-o", "o.jsonl"])
    check_dated(args, date_range("2026-11-26", None), [], {"undated": 3})  # mtime: not concerned
    args.date_by = "folder"
    check_dated(args, date_range(None, None), [], {"undated": 3})  # unbounded: every file is selected
    with pytest.raises(UsageError, match="dated folder"):
        check_dated(args, date_range("2026-11-26", None), [], {"undated": 3})


def test_a_held_output_lock_is_exit_lock_held(tmp_path: Path, capsys) -> None:
    output = tmp_path / "out.jsonl"
    _, lock = state_paths(output)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([str(tmp_path), "-o", str(output), "--list"]) == Exit.LOCK_HELD
    assert "holds" in capsys.readouterr().err
