"""Rows of a batch run and the journal that makes runs resumable (writers: scripts/batch/formats.py).

One :class:`Row` per input: a :class:`~handlers.schema.DetectionResult` or an :class:`ErrorInfo`.
While a run goes, every finished row is appended to a *journal* (JSON lines, flushed per row, fsynced
every few rows) next to the output; a killed run loses at most the row being written, and a torn last
line is cut off when the journal is reopened. The output file itself is rendered from the journal
only when every input has a row, into a temporary file that then replaces the output atomically:
readers see the old output or the new one, never half of one.

"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from handlers.schema import DetectionResult
from scripts.batch.settings import settings_flags

__all__ = [
    "JOURNAL_FORMAT",
    "SYNC_EVERY",
    "Done",
    "ErrorInfo",
    "Journal",
    "JournalMismatch",
    "JournalRows",
    "Row",
]

JOURNAL_FORMAT = 1
SYNC_EVERY = 32  # rows between fsyncs of the journal


@dataclass(frozen=True)
class ErrorInfo:
    """Why an input has no result. ``retryable`` errors (server trouble) are tried again on rerun;
    the others (the input itself is bad: decode, unsupported_format, too_large) are final."""

    status: int | None  # HTTP-style status (400, 413, 415, 500, ...); None when nothing answered
    reason: str  # stable label: decode, unsupported_format, too_large, bad_request, internal,
    # read_error, server_error, model_unavailable, timeout
    message: str
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "retryable": self.retryable,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ErrorInfo:
        return cls(obj.get("status"), obj["reason"], obj.get("message", ""), bool(obj.get("retryable")))


@dataclass(frozen=True)
class Row:
    path: str
    mtime: float
    size: int
    result: DetectionResult | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": "ok" if self.ok else "error",
            "file_mtime": self.mtime,
            "file_size": self.size,
            "result": self.result.to_json() if self.result is not None else None,
            "error": self.error.to_json() if self.error is not None else None,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Row:
        result, error = obj.get("result"), obj.get("error")
        return cls(
            obj["path"],
            float(obj["file_mtime"]),
            int(obj["file_size"]),
            DetectionResult.from_json(result) if result else None,
            ErrorInfo.from_json(error) if error else None,
        )


@dataclass(frozen=True)
class Done:
    """What the journal knows about one finished input, without holding its row in memory."""

    offset: int  # byte offset of the row's line in the journal
    mtime: float
    size: int
    ok: bool
    reason: str | None  # error reason when not ok
    retryable: bool
    detections: int

    def settles(self, mtime: float, size: int) -> bool:
        """True when this row stands for the file as it is now and need not be scored again."""
        return self.mtime == mtime and self.size == size and not self.retryable


class JournalMismatch(ValueError):
    """The journal was written by a run with other settings (model, version, detector settings)."""


class Journal:
    """Append-only JSON-lines record of finished rows; the last row for a path wins.

    One output holds rows of one model version. The header records the version asked for (None:
    the server's default); the version of the rows is the one the server answered with, learnt from
    the first result row. :meth:`pin_version` checks a run's ``--version`` against it, and
    :meth:`append` refuses a result of another version (e.g. after a set-default mid-run).
    The header's ``settings`` (per-request detector settings, {} = the model's defaults; absent in
    journals written before settings existed) must equal the run's, or the journal is refused.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.header = {"journal": "batch_score", "format": JOURNAL_FORMAT, "settings": {}, **header}
        self.done: dict[str, Done] = {}
        self.version: str | None = header.get("version")  # of the rows; None until one is known
        self._file: IO[bytes] | None = None
        self._unsynced = 0

    def open(self) -> dict[str, Done]:
        """Read what earlier runs finished (cutting off a torn last line), then open for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        good_end = 0
        if self.path.exists():
            with open(self.path, "rb") as handle:
                for offset, line in _lines_with_offsets(handle):
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        break  # torn line of a killed run: everything after it is cut
                    if offset == 0:
                        self._check_header(obj)
                    else:
                        self._remember(offset, obj)
                    good_end = offset + len(line)
        self._file = open(self.path, "r+b" if good_end else "wb")  # noqa: SIM115 - closed in close()
        self._file.truncate(good_end)
        self._file.seek(good_end)
        if good_end == 0:
            self._write_line(self.header)
        return self.done

    def pin_version(self, requested: str | None) -> str | None:
        """The version this run must score with: ``requested``, or the journal's rows' version when
        none is asked for. JournalMismatch when ``requested`` differs from the rows'."""
        if requested is not None and self.version is not None and requested != self.version:
            raise JournalMismatch(
                f"{self.path} holds rows of {self.header.get('model')} {self.version}, this run asks "
                f"for {requested}: pass --version {self.version} to finish this output, write to "
                "another --output, or delete the journal to start over"
            )
        return requested or self.version

    def append(self, row: Row) -> None:
        if row.result is not None and self.version not in (None, row.result.version):
            raise JournalMismatch(
                f"the model answered with {row.result.model} {row.result.version}, but {self.path} "
                f"holds rows of {self.version} (was the default version changed during the run?): "
                f"rerun with --version {self.version} to finish this output, or write to another --output"
            )
        offset = self._file.tell()
        obj = row.to_json()
        self._write_line(obj)
        self._remember(offset, obj)
        self._unsynced += 1
        if self._unsynced >= SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
            self._unsynced = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def rows(self, paths: list[str]) -> JournalRows:
        """The journal's rows for ``paths`` in that order (each must be done); re-iterable."""
        if self._file is not None:
            self._file.flush()
        return JournalRows(self.path, [self.done[path].offset for path in paths])

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        self._file.flush()  # in the OS page cache: survives a killed process

    def _remember(self, offset: int, obj: dict[str, Any]) -> None:
        error = obj.get("error") or {}
        result = obj.get("result") or {}
        version = result.get("version")
        if version is not None and self.version is None:
            self.version = str(version)
        elif version is not None and str(version) != self.version:
            raise JournalMismatch(
                f"{self.path} holds rows of versions {self.version} and {version} "
                f"({obj['path']}): delete the journal and rerun with --version to start over"
            )
        self.done[obj["path"]] = Done(
            offset,
            float(obj["file_mtime"]),
            int(obj["file_size"]),
            obj.get("status") == "ok",
            error.get("reason"),
            bool(error.get("retryable")),
            len(result.get("detections", [])),
        )

    def _check_header(self, obj: dict[str, Any]) -> None:
        if obj.get("journal") != "batch_score":
            raise JournalMismatch(f"{self.path} is not a batch_score journal; choose another --output")
        if obj.get("model") != self.header.get("model"):
            raise JournalMismatch(
                f"{self.path} holds rows of model {obj.get('model')!r}, this run asks for "
                f"{self.header.get('model')!r}: write to another --output, or delete the journal "
                "to start over"
            )
        recorded, asked = obj.get("settings") or {}, self.header["settings"]
        if recorded != asked:  # rows scored with other thresholds / tiling are not this run's rows
            raise JournalMismatch(
                f"{self.path} holds rows scored with {settings_flags(recorded)}, this run asks for "
                f"{settings_flags(asked)}: pass the same options to finish this output, write to "
                "another --output, or delete the journal to start over"
            )
        # The version asked for when the journal was made; None = the server's default, whose
        # answer then names it (rows). pin_version() compares it with this run's --version.
        self.version = obj.get("version")


class JournalRows:
    """Rows read back from the journal on demand: memory holds offsets, not rows."""

    def __init__(self, path: Path, offsets: list[int]) -> None:
        self.path = path
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self) -> Iterator[Row]:
        with open(self.path, "rb") as handle:
            for offset in self.offsets:
                handle.seek(offset)
                yield Row.from_json(json.loads(handle.readline()))


def _lines_with_offsets(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    offset = 0
    for line in handle:
        if not line.endswith(b"\n"):
            return  # unterminated: the write was cut short
        yield offset, line
        offset += len(line)
