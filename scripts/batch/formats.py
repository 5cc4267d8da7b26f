"""Output writers of a batch run: JSON lines, CSV or COCO, written atomically.

The output file is rendered from the journal (scripts/batch/output.py) only when every input has a
row, into a temporary file that then replaces the output: readers see the old output or the new one,
never half of one.

Formats (``--format``, or from the output's suffix):
    jsonl  one JSON object per input: Row.to_json()
    csv    one line per input; the detections as a JSON array in one column
    coco   COCO-style JSON: ``images`` (every input, with ``status`` and ``error``), ``categories``,
           ``annotations`` (detections as COCO results: xywh ``bbox``, ``score``, ``keypoints``)
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from scripts.batch.output import Row

__all__ = [
    "CSV_COLUMNS",
    "SUFFIX_FORMATS",
    "WRITERS",
    "atomic_write",
    "coco_categories",
    "format_for",
    "write_coco",
    "write_csv",
    "write_jsonl",
]

CSV_COLUMNS = (
    "path", "status", "model", "version", "width", "height", "detections_count", "max_score",
    "detections", "error_status", "error_reason", "error_message", "file_mtime", "file_size",
)  # fmt: skip


@contextmanager
def atomic_write(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """Write ``path`` through a temporary sibling that replaces it only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def _file_mode(path: Path) -> int:
    """Keep an existing output's permissions; a new one gets the usual 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_jsonl(rows: Iterable[Row], out: IO[str]) -> None:
    for row in rows:
        out.write(json.dumps(row.to_json(), separators=(",", ":")) + "\n")


def write_csv(rows: Iterable[Row], out: IO[str]) -> None:
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        line: dict[str, Any] = {"path": row.path, "file_mtime": row.mtime, "file_size": row.size}
        if row.result is not None:
            detections = [d.to_json() for d in row.result.detections]
            line.update(
                status="ok",
                model=row.result.model,
                version=row.result.version,
                width=row.result.width,
                height=row.result.height,
                detections_count=len(detections),
                max_score=max((d["score"] for d in detections), default=""),
                detections=json.dumps(detections, separators=(",", ":")),
            )
        else:
            line.update(
                status="error",
                error_status=row.error.status if row.error.status is not None else "",
                error_reason=row.error.reason,
                error_message=row.error.message,
            )
        writer.writerow(line)


def write_coco(rows: Iterable[Row], out: IO[str]) -> None:
    """COCO-style JSON, streamed. ``rows`` is iterated three times: pass a re-iterable."""
    categories = coco_categories(rows)
    out.write('{"info":{"description":"batch_score detections"},\n"categories":')
    out.write(json.dumps([{"id": cid, "name": name} for name, cid in categories.items()]))
    out.write(',\n"images":[')
    for image_id, row in enumerate(rows, start=1):
        image: dict[str, Any] = {"id": image_id, "file_name": row.path, "status": "ok" if row.ok else "error"}
        if row.result is not None:
            image.update(width=row.result.width, height=row.result.height)
        else:
            image["error"] = row.error.to_json()
        out.write(("\n" if image_id == 1 else ",\n") + json.dumps(image, separators=(",", ":")))
    out.write('],\n"annotations":[')
    annotation_id = 0
    for image_id, row in enumerate(rows, start=1):
        for detection in row.result.detections if row.result is not None else ():
            annotation_id += 1
            x1, y1, x2, y2 = detection.box
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotation: dict[str, Any] = {
                "id": annotation_id,
                "image_id": image_id,
                "category_id": categories[detection.label],
                "bbox": [round(x1, 2), round(y1, 2), w, h],
                "area": round(w * h, 2),
                "score": round(detection.score, 5),
                "iscrowd": 0,
            }
            if detection.landmarks is not None:
                annotation["keypoints"] = [
                    v for x, y in detection.landmarks for v in (round(x, 2), round(y, 2), 2)
                ]
                annotation["num_keypoints"] = len(detection.landmarks)
            out.write(("\n" if annotation_id == 1 else ",\n") + json.dumps(annotation, separators=(",", ":")))
    out.write("]}\n")


def coco_categories(rows: Iterable[Row]) -> dict[str, int]:
    """label -> category id: the model's class_id + 1 where it has one, else by sorted label."""
    from_class: dict[str, int] = {}
    labels: set[str] = set()
    for row in rows:
        for detection in row.result.detections if row.result is not None else ():
            labels.add(detection.label)
            if detection.class_id is not None:
                from_class[detection.label] = int(detection.class_id) + 1
    if len(from_class) == len(labels):
        return dict(sorted(from_class.items(), key=lambda item: item[1]))
    return {label: i for i, label in enumerate(sorted(labels), start=1)}


WRITERS: dict[str, Callable[[Iterable[Row], IO[str]], None]] = {
    "jsonl": write_jsonl,
    "csv": write_csv,
    "coco": write_coco,
}
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "coco"}


def format_for(path: Path, explicit: str | None = None) -> str:
    """The output format: ``explicit`` or the one the suffix implies; ValueError with the fix."""
    if explicit:
        if explicit not in WRITERS:
            raise ValueError(f"--format must be one of {', '.join(WRITERS)}, got {explicit!r}")
        return explicit
    try:
        return SUFFIX_FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {path}: name it .jsonl, .csv or .json (COCO), or pass --format"
        ) from None
