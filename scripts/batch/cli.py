"""Score a folder (or glob) of images for a date range and write one row per input; made for cron.

    python -m scripts.batch /data/incoming --date-by folder --since yesterday --until yesterday \\
        --output /data/scores/{since:%Y-%m-%d}.jsonl --model face_detector --version 2.0

Safe to rerun: finished rows are journaled next to the output (``.<output name>.journal``), a rerun
scores only what is missing, changed, or failed for a transient reason, and the output is replaced
atomically once every selected input has exactly one row. Two runs on one output are refused (a lock
next to it); scripts/batch/cron.sh adds a global lock and a log. See docs/batch_scoring.md.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from string import Formatter
from typing import IO

from tqdm import tqdm

from scripts.batch.output import (
    WRITERS,
    Journal,
    JournalMismatch,
    Row,
    atomic_write,
    format_for,
)
from scripts.batch.scorers import (
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SERVER_REFUSED,
    EXIT_SOME_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    FatalRunError,
    InProcessScorer,
    ServerScorer,
    run_inprocess,
    run_server,
)
from scripts.batch.selection import BOUND_HELP, DATE_BY, DateRange, InputFile, date_range, select_files
from scripts.paths import REPO

log = logging.getLogger("batch_score")

EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every selected input has a result row (or nothing was selected)
  {EXIT_SOME_FAILED}    output written, but some inputs have error rows (see their reason)
  {EXIT_USAGE}    bad arguments or settings: nothing was scored
  {EXIT_UNREACHABLE}    TorchServe is unreachable or stopped answering: no output; rerun to resume
  {EXIT_SERVER_REFUSED}    TorchServe answers but cannot score: token refused, model/version not loaded
  {EXIT_LOCKED}    another run holds the lock of this output: nothing was done
  {EXIT_INTERRUPTED}  interrupted (SIGINT/SIGTERM): no output; rerun to resume"""


class UsageError(Exception):
    """A problem with the arguments or settings; the message says what to write instead."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.batch",
        description="Score images for a date range; one row per input, resumable, atomic output.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="folders (walked recursively), files or glob patterns")
    parser.add_argument(
        "-o", "--output", required=True,
        help="output file; may hold {since}, {until} (last day of the range), {today}: YYYY-MM-DD",
    )  # fmt: skip
    parser.add_argument("--format", choices=sorted(WRITERS), help="jsonl, csv or coco (default: from suffix)")
    dates = parser.add_argument_group("date range (local time)")
    dates.add_argument("--since", help=f"first day or moment: {BOUND_HELP}")
    dates.add_argument("--until", help="last day (whole day) or moment (exclusive), same forms")
    dates.add_argument("--date-by", choices=DATE_BY, default="mtime", help="file mtime or dated folders")
    dates.add_argument("--ext", help="only these extensions, comma-separated (e.g. jpg,jpeg,png)")
    model = parser.add_argument_group("model")
    model.add_argument("--mode", choices=("server", "inprocess"), default="server")
    model.add_argument("--model", default="face_detector")
    model.add_argument("--version", help="model version (default: the server's default / the only archive)")
    model.add_argument(
        "--archive", type=Path, help="inprocess: the .mar (default: <store>/<model>-<version>.mar)"
    )
    model.add_argument(
        "--model-store", type=Path, default=REPO / "model_store", help="inprocess: archive folder"
    )
    model.add_argument("--device", default="auto", help="inprocess: auto, cpu, cuda or cuda:N")
    model.add_argument(
        "--batch-size", type=int, help="inprocess: images per forward pass (default: batchSize)"
    )
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--concurrency", type=int, default=4, help="server: requests in flight; inprocess: readers"
    )
    run.add_argument("--url", help="inference address (default: config.properties / TS_INFERENCE_URL)")
    run.add_argument("--management-url", help="management address, used to renew tokens")
    run.add_argument("--key-file", type=Path, help="TorchServe key_file.json (default: TS_KEY_FILE or ./)")
    run.add_argument("--timeout", type=float, default=60.0, help="server: seconds per request")
    run.add_argument("--retries", type=int, default=2, help="server: retries of a transient failure")
    run.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                     help="auto: a bar on a terminal, a log line every --log-every s otherwise")  # fmt: skip
    run.add_argument("--log-every", type=float, default=30.0, help="seconds between progress log lines")
    run.add_argument("--list", action="store_true", help="print the selected inputs (+ done/todo) and exit")
    return parser


class _Stamp:
    """A moment for str.format: ``{since}`` is YYYY-MM-DD, ``{since:%Y%m%d-%H%M}`` any strftime."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __format__(self, spec: str) -> str:
        return self.moment.strftime(spec or "%Y-%m-%d")


def expand_output(template: str, dates: DateRange, now: datetime) -> Path:
    """Fill {since}, {until} (the last moment inside the range) and {today} in the output path."""
    if "{" not in template:
        return Path(template)
    until = dates.until - timedelta(microseconds=1) if dates.until else None
    values = {"since": dates.since, "until": until, "today": now}
    names = {field.split(".")[0].split("[")[0] for _, field, _, _ in Formatter().parse(template) if field}
    unknown = sorted(names - set(values))
    if unknown:
        raise UsageError(
            f"output name {template!r} uses {{{unknown[0]}}}; known: {{since}}, {{until}}, {{today}}"
        )
    unset = sorted(name for name in names if values[name] is None)
    if unset:
        raise UsageError(f"output name {template!r} uses {{{unset[0]}}} but --{unset[0]} is not set")
    try:
        return Path(template.format(**{k: _Stamp(v) for k, v in values.items() if v is not None}))
    except (IndexError, ValueError) as err:
        raise UsageError(f"cannot fill the output name {template!r}: {err}") from None


def state_paths(output: Path) -> tuple[Path, Path]:
    """Journal and lock of an output: hidden siblings, so a folder walk never selects them."""
    return output.with_name(f".{output.name}.journal"), output.with_name(f".{output.name}.lock")


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise FatalRunError(
                f"another run (pid {holder}) holds {path}; not starting", EXIT_LOCKED
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # the lock goes with the file descriptor, also when the process is killed


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


def make_scorer(args: argparse.Namespace, stop: threading.Event) -> ServerScorer | InProcessScorer:
    if args.mode == "server":
        from scripts.client import Endpoints, TokenStore

        endpoints = Endpoints.default()
        if args.url:
            endpoints = replace(endpoints, inference=args.url)
        if args.management_url:
            endpoints = replace(endpoints, management=args.management_url)
        tokens = TokenStore(args.key_file, endpoints)
        scorer = ServerScorer(endpoints, tokens, args.model, args.version, args.timeout, args.retries, stop)
        scorer.check()
        return scorer
    from scripts.inprocess import ArchivedModel, ArchiveError

    archive = args.archive or find_archive(args.model_store, args.model, args.version)
    try:
        model = ArchivedModel(archive, args.device)
    except (ArchiveError, ValueError) as err:
        raise UsageError(str(err)) from None
    if model.name != args.model or (args.version and model.version != args.version):
        model.close()
        raise UsageError(
            f"{archive} holds {model.name} {model.version}, not {args.model} {args.version or ''}".rstrip()
        )
    return InProcessScorer(model, args.batch_size)


def find_archive(store: Path, model: str, version: str | None) -> Path:
    if version:
        return store / f"{model}-{version}.mar"
    found = sorted(store.glob(f"{model}-*.mar"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise UsageError(
            f"{len(found)} archives of {model} in {store} ({names}): pass --version or --archive"
        )
    return found[0]


def check_args(args: argparse.Namespace) -> None:
    if args.concurrency < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UsageError("--concurrency and --batch-size must be at least 1")
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout > 0")


def run(args: argparse.Namespace, out: IO[str]) -> int:
    check_args(args)
    try:
        dates = date_range(args.since, args.until)
    except ValueError as err:
        raise UsageError(str(err)) from None
    output = expand_output(args.output, dates, datetime.now()).expanduser().absolute()
    try:
        fmt = format_for(output, args.format)
    except ValueError as err:
        raise UsageError(str(err)) from None
    journal_path, lock_path = state_paths(output)
    stop = threading.Event()
    with output_lock(lock_path):
        journal = Journal(journal_path, {"model": args.model, "version": args.version})
        try:
            done = journal.open()
        except JournalMismatch as err:
            raise UsageError(str(err)) from None
        try:
            skipped: dict[str, int] = {}
            extensions = [e for e in (args.ext or "").split(",") if e.strip()] or None
            found = select_files(args.inputs, dates, args.date_by, extensions, [output], skipped)
            try:
                selected = list(found)  # every selected path must end up with a row: keep the keys
            except FileNotFoundError as err:
                raise UsageError(str(err)) from None
            todo = [f for f in selected if f.path not in done or not done[f.path].settles(f.mtime, f.size)]
            log.info(
                "%d inputs selected (%s), %d to score, output %s",
                len(selected), ", ".join(f"{v} skipped: {k}" for k, v in skipped.items()) or "none skipped",
                len(todo), output,
            )  # fmt: skip
            if args.list:
                pending = {item.path for item in todo}
                for item in selected:
                    print(f"{'todo' if item.path in pending else 'done'}\t{item.path}", file=out)
                return EXIT_OK
            return score_and_write(args, journal, selected, todo, output, fmt, stop, out)
        finally:
            journal.close()


def score_and_write(
    args: argparse.Namespace,
    journal: Journal,
    selected: list[InputFile],
    todo: list[InputFile],
    output: Path,
    fmt: str,
    stop: threading.Event,
    out: IO[str],
) -> int:
    """Score ``todo`` into the journal, then render every selected input's row into ``output``."""
    paths = sorted(item.path for item in selected)
    before = len(selected) - len(todo)
    previous = {sig: signal.signal(sig, _stopper(stop)) for sig in (signal.SIGINT, signal.SIGTERM)}
    scorer = make_scorer(args, stop) if todo else None  # no server contact when all is done
    progress = Progress(len(todo), args.progress, args.log_every)  # times scoring, not model loading

    def on_row(row: Row) -> None:
        journal.append(row)
        progress.update(row)

    def report(written: Path | None, code: int) -> int:
        progress.close()
        elapsed = time.monotonic() - progress.start
        print(summary(paths, journal, before, progress.done, elapsed, written, code), file=out)
        return code

    try:
        if isinstance(scorer, ServerScorer):
            run_server(iter(todo), scorer, args.concurrency, on_row)
        elif isinstance(scorer, InProcessScorer):
            run_inprocess(iter(todo), scorer, args.concurrency, on_row, stop)
    except FatalRunError as err:
        journal.sync()
        log.error("%s", err)
        return report(None, err.exit_code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if isinstance(scorer, InProcessScorer):
            scorer.model.close()
    if stop.is_set():
        return report(None, EXIT_INTERRUPTED)
    missing = [p for p in paths if p not in journal.done]
    if missing:  # cannot happen unless a scorer lost a row: never write an output that lacks one
        raise RuntimeError(f"{len(missing)} inputs have no row, e.g. {missing[0]}")
    with atomic_write(output, newline="" if fmt == "csv" else None) as handle:
        WRITERS[fmt](journal.rows(paths), handle)
    return report(output, EXIT_SOME_FAILED if any(not journal.done[p].ok for p in paths) else EXIT_OK)


def _stopper(stop: threading.Event) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: stop at once
        log.warning("signal %d: finishing the inputs in flight, then stopping", signum)
        stop.set()

    return handler


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stdout)
    except UsageError as err:
        log.error("%s", err)
        return EXIT_USAGE
    except FatalRunError as err:
        log.error("%s", err)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
