"""Rows, the resume journal, atomic writes and the JSONL / CSV / COCO writers."""

from __future__ import annotations

import csv
import io
import json

import pytest

from handlers.schema import Detection, DetectionResult
from scripts.batch.formats import (
    WRITERS,
    atomic_write,
    coco_categories,
    format_for,
    write_coco,
    write_csv,
    write_jsonl,
)
from scripts.batch.output import Done, ErrorInfo, Journal, JournalMismatch, Row

FACE = Detection("face", 0.99876, (177.7, 106.53, 353.88, 327.7), [(219.0, 187.5)] * 5)
CAR = Detection("car", 0.8, (0.0, 0.0, 10.0, 20.0), class_id=2)
OK = Row("/in/a.jpg", 1.5, 100, result=DetectionResult("face_detector", "2.0", 512, 600, [FACE]))
NONE = Row("/in/b.jpg", 2.0, 50, result=DetectionResult("face_detector", "2.0", 64, 64, []))
BAD = Row("/in/c.txt", 3.0, 13, error=ErrorInfo(415, "unsupported_format", "not an image"))
GONE = Row("/in/d.jpg", 4.0, 9, error=ErrorInfo(None, "read_error", "No such file", retryable=True))


@pytest.mark.parametrize("row", [OK, NONE, BAD, GONE])
def test_row_round_trips_through_json(row: Row) -> None:
    assert Row.from_json(json.loads(json.dumps(row.to_json()))).to_json() == row.to_json()


@pytest.mark.parametrize(
    ("rows", "statuses"),
    [([], []), ([OK], ["ok"]), ([BAD], ["error"]), ([OK, NONE, BAD, GONE], ["ok", "ok", "error", "error"])],
)
def test_write_jsonl_one_line_per_row(rows: list[Row], statuses: list[str]) -> None:
    out = io.StringIO()
    write_jsonl(rows, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["status"] for line in lines] == statuses
    assert [line["path"] for line in lines] == [r.path for r in rows]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        ([OK], [("ok", "1", "0.99876", "")]),
        ([NONE], [("ok", "0", "", "")]),
        ([BAD, GONE], [("error", "", "", "unsupported_format"), ("error", "", "", "read_error")]),
    ],
)
def test_write_csv_one_line_per_row(rows: list[Row], expected: list[tuple[str, ...]]) -> None:
    out = io.StringIO()
    write_csv(rows, out)
    read = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["status"], r["detections_count"], r["max_score"], r["error_reason"]) for r in read] == expected
    for line, row in zip(read, rows):
        if row.ok:
            assert [Detection.from_json(d) for d in json.loads(line["detections"])] == [
                Detection.from_json(d.to_json()) for d in row.result.detections
            ]


@pytest.mark.parametrize(
    ("rows", "images", "annotations", "categories"),
    [
        ([], 0, 0, []),
        ([OK], 1, 1, ["face"]),
        ([BAD], 1, 0, []),
        ([OK, NONE, BAD, GONE], 4, 1, ["face"]),
    ],
)
def test_write_coco_lists_every_input_as_an_image(rows, images, annotations, categories) -> None:
    out = io.StringIO()
    write_coco(rows, out)
    coco = json.loads(out.getvalue())
    assert len(coco["images"]) == images
    assert [i["file_name"] for i in coco["images"]] == [r.path for r in rows]
    assert len(coco["annotations"]) == annotations
    assert [c["name"] for c in coco["categories"]] == categories
    for image in coco["images"]:
        assert ("error" in image) is (image["status"] == "error")


def test_write_coco_annotation_is_a_coco_result() -> None:
    out = io.StringIO()
    write_coco([BAD, OK], out)
    (annotation,) = json.loads(out.getvalue())["annotations"]
    assert annotation["image_id"] == 2
    assert annotation["bbox"] == [177.7, 106.53, 176.18, 221.17]  # x, y, w, h
    assert annotation["score"] == 0.99876
    assert annotation["keypoints"][:3] == [219.0, 187.5, 2]
    assert annotation["num_keypoints"] == 5


@pytest.mark.parametrize(
    ("detections", "expected"),
    [
        ([], {}),
        ([FACE], {"face": 1}),
        ([CAR], {"car": 3}),  # class_id + 1
        ([CAR, FACE], {"car": 1, "face": 2}),  # mixed: by sorted label
    ],
)
def test_coco_categories(detections: list[Detection], expected: dict[str, int]) -> None:
    rows = [Row("/x", 0, 0, result=DetectionResult("m", "1", 9, 9, detections))]
    assert coco_categories(rows) == expected


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("out.jsonl", None, "jsonl"),
        ("out.NDJSON", None, "jsonl"),
        ("out.csv", None, "csv"),
        ("out.json", None, "coco"),
        ("out.txt", "csv", "csv"),
    ],
)
def test_format_for(name: str, explicit: str | None, expected: str) -> None:
    assert format_for(name, explicit) == expected


@pytest.mark.parametrize(("name", "explicit"), [("out.txt", None), ("out", None), ("out.csv", "xml")])
def test_format_for_rejects_with_the_fix(name: str, explicit: str | None) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        format_for(name, explicit)


def test_journal_resumes_and_last_row_wins(tmp_path) -> None:
    path = tmp_path / ".out.journal"
    journal = Journal(path, {"model": "m", "version": "2.0"})
    assert journal.open() == {}
    for row in (OK, GONE, BAD):
        journal.append(row)
    journal.append(Row(GONE.path, GONE.mtime, GONE.size, result=NONE.result))  # retried, now fine
    journal.close()

    again = Journal(path, {"model": "m", "version": "2.0"})
    done = again.open()
    assert sorted(done) == sorted([OK.path, GONE.path, BAD.path])
    assert done[GONE.path].ok and not done[BAD.path].ok and done[BAD.path].reason == "unsupported_format"
    assert done[OK.path].detections == 1
    assert [r.path for r in again.rows([BAD.path, OK.path])] == [BAD.path, OK.path]
    assert list(again.rows([GONE.path]))[0].result.detections == []
    again.close()


@pytest.mark.parametrize("tail", [b'{"path":"/in/x.jpg","sta', b"garbage\n", b"\n"])
def test_journal_cuts_a_torn_tail(tmp_path, tail: bytes) -> None:
    path = tmp_path / ".out.journal"
    journal = Journal(path, {"model": "m", "version": None})
    journal.open()
    journal.append(OK)
    journal.close()
    good = path.read_bytes()
    path.write_bytes(good + tail)

    again = Journal(path, {"model": "m", "version": None})
    assert list(again.open()) == [OK.path]
    again.append(BAD)
    again.close()
    assert path.read_bytes().startswith(good) and path.read_bytes().count(b"\n") == 3


def test_journal_refuses_rows_of_another_model(tmp_path) -> None:
    path = tmp_path / ".out.journal"
    first = Journal(path, {"model": "m", "version": "1"})
    first.open()
    first.close()
    with pytest.raises(JournalMismatch, match="model 'm'"):
        Journal(path, {"model": "other", "version": "1"}).open()


TILED = {"small_faces": True}
STRICT = {"score_threshold": 0.8}


@pytest.mark.parametrize(
    ("first", "now", "refused"),
    [
        ({}, {}, None),  # the model's defaults both times
        (TILED, TILED, None),
        ({**TILED, **STRICT}, {**STRICT, **TILED}, None),  # order does not matter
        (None, {}, None),  # a journal written before settings were recorded: the defaults
        ({}, TILED, "scored with no setting options.*asks for --small-faces"),
        (TILED, {}, "scored with --small-faces.*asks for no setting options"),
        (TILED, {"small_faces": False}, "asks for --no-small-faces"),
        (STRICT, {"score_threshold": 0.5}, "--score-threshold 0.8.*--score-threshold 0.5"),
    ],
)
def test_journal_refuses_a_run_with_other_settings(tmp_path, first, now, refused) -> None:
    path = tmp_path / ".out.journal"
    if first is None:
        path.write_text(
            json.dumps({"journal": "batch_score", "format": 1, "model": "m", "version": None}) + "\n"
        )
    else:
        journal = Journal(path, {"model": "m", "version": None, "settings": first})
        journal.open()
        journal.append(OK)
        journal.close()
    again = Journal(path, {"model": "m", "version": None, "settings": now})
    if refused is None:
        assert set(again.open()) == ({OK.path} if first is not None else set())
        again.close()
    else:
        with pytest.raises(JournalMismatch, match=refused):
            again.open()


@pytest.mark.parametrize(
    ("asked_first", "rows", "asked_now", "pinned"),
    [
        (None, [], None, None),  # nothing known yet: the server's default
        (None, [], "2.0", "2.0"),
        (None, [BAD], "1.0", "1.0"),  # error rows carry no version
        (None, [OK], None, "2.0"),  # learnt from the answer: a rerun keeps to it
        (None, [OK], "2.0", "2.0"),  # the rerun of a run without --version is accepted
        ("2.0", [], None, "2.0"),
        ("2.0", [OK, NONE], "2.0", "2.0"),
    ],
)
def test_journal_pins_the_version_of_its_rows(tmp_path, asked_first, rows, asked_now, pinned) -> None:
    path = tmp_path / ".out.journal"
    first = Journal(path, {"model": "face_detector", "version": asked_first})
    first.open()
    for row in rows:
        first.append(row)
    first.close()
    again = Journal(path, {"model": "face_detector", "version": asked_now})
    again.open()
    assert again.pin_version(asked_now) == pinned
    again.close()


@pytest.mark.parametrize(("asked_first", "rows"), [("1.0", []), (None, [OK]), ("2.0", [NONE])])
def test_journal_refuses_a_run_of_another_version(tmp_path, asked_first, rows) -> None:
    path = tmp_path / ".out.journal"
    first = Journal(path, {"model": "face_detector", "version": asked_first})
    first.open()
    for row in rows:
        first.append(row)
    first.close()
    again = Journal(path, {"model": "face_detector", "version": "3.0"})
    again.open()
    expected = asked_first or "2.0"
    with pytest.raises(JournalMismatch, match=f"rows of face_detector {expected}.*--version {expected}"):
        again.pin_version("3.0")


def test_journal_refuses_an_answer_of_another_version(tmp_path) -> None:
    """A set-default during a run without --version: rows of two versions never share an output."""
    journal = Journal(tmp_path / ".out.journal", {"model": "face_detector", "version": None})
    journal.open()
    journal.append(OK)  # 2.0 answered: the output is 2.0 from now on
    journal.append(BAD)
    other = Row("/in/e.jpg", 5.0, 10, result=DetectionResult("face_detector", "1.0", 64, 64, []))
    with pytest.raises(JournalMismatch, match="answered with face_detector 1.0.*--version 2.0"):
        journal.append(other)
    assert other.path not in journal.done
    journal.close()


def test_journal_refuses_a_foreign_file(tmp_path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(JournalMismatch, match="not a batch_score journal"):
        Journal(path, {"model": "m", "version": None}).open()


@pytest.mark.parametrize(
    ("done", "mtime", "size", "settled"),
    [
        (Done(0, 1.0, 10, True, None, False, 1), 1.0, 10, True),
        (Done(0, 1.0, 10, False, "decode", False, 0), 1.0, 10, True),  # a bad file stays bad
        (Done(0, 1.0, 10, False, "timeout", True, 0), 1.0, 10, False),  # server trouble: retry
        (Done(0, 1.0, 10, True, None, False, 1), 2.0, 10, False),  # file changed since
        (Done(0, 1.0, 10, True, None, False, 1), 1.0, 11, False),
    ],
)
def test_done_settles(done: Done, mtime: float, size: int, settled: bool) -> None:
    assert done.settles(mtime, size) is settled


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_atomic_write_keeps_the_old_output_when_writing_fails(tmp_path, fmt: str) -> None:
    output = tmp_path / "out"
    output.write_text("previous\n")
    with pytest.raises(RuntimeError), atomic_write(output) as handle:
        WRITERS[fmt]([OK], handle)
        raise RuntimeError("killed while writing")
    assert output.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_atomic_write_replaces_and_keeps_permissions(tmp_path) -> None:
    output = tmp_path / "sub" / "out.jsonl"
    with atomic_write(output) as handle:
        write_jsonl([OK], handle)
    assert output.stat().st_mode & 0o777 == 0o666 & ~_umask()
    output.chmod(0o640)
    with atomic_write(output) as handle:
        write_jsonl([], handle)
    assert output.read_text() == "" and output.stat().st_mode & 0o777 == 0o640


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
