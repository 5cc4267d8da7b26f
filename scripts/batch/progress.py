"""What a batch run tells while it goes and when it ends: a progress bar on a terminal or periodic
log lines (cron), and the end-of-run summary."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from scripts.batch.output import Journal, Row

__all__ = ["Progress", "summary"]

log = logging.getLogger("batch_score")


class Progress:
    """A tqdm bar (rate, ETA) on a terminal; a log line every ``every_s`` seconds otherwise."""

    def __init__(self, total: int, mode: str, every_s: float) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.total, self.mode, self.every_s = total, mode, every_s
        self.done = self.errors = 0
        self.start = self.last_log = time.monotonic()
        self.bar = tqdm(total=total, unit="img", smoothing=0.1, dynamic_ncols=True) if mode == "bar" else None

    def update(self, row: Row) -> None:
        self.done += 1
        self.errors += not row.ok
        if self.bar is not None:
            self.bar.update(1)
            if not row.ok:
                self.bar.set_postfix(errors=self.errors, refresh=False)
        elif self.mode == "log" and time.monotonic() - self.last_log >= self.every_s:
            self.log_line()

    def log_line(self) -> None:
        self.last_log = time.monotonic()
        elapsed = self.last_log - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = tqdm.format_interval((self.total - self.done) / rate) if rate else "?"
        log.info(
            "progress %d/%d (%.0f%%) %.2f img/s ETA %s, %d errors",
            self.done, self.total, 100.0 * self.done / max(self.total, 1), rate, eta, self.errors,
        )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "log" and self.total:
            self.log_line()


def summary(
    paths: list[str],
    journal: Journal,
    before: int,
    scored: int,
    elapsed: float,
    output: Path | None,
    code: int,
) -> str:
    """The end-of-run report; ``before`` inputs were done by earlier runs, ``scored`` by this one."""
    rows = [journal.done[p] for p in paths if p in journal.done]
    errors = Counter(d.reason for d in rows if not d.ok)
    rate = f"{scored / elapsed:.2f} img/s" if elapsed > 0 and scored else "-"
    lines = [
        "batch_score summary",
        f"  selected inputs : {len(paths)}",
        f"  done before     : {before}",
        f"  scored now      : {scored} in {elapsed:.1f} s ({rate})",
        f"  results         : {sum(d.ok for d in rows)} ({sum(d.detections for d in rows)} detections)",
        f"  errors          : {sum(errors.values())}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(errors.items()))})" if errors else ""),
        f"  output          : {output if output else 'not written (run incomplete; rerun to resume)'}",
        f"  exit code       : {code}",
    ]
    return "\n".join(lines)
