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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from string import Formatter
from typing import IO

from scripts.batch.formats import WRITERS, atomic_write, format_for
from scripts.batch.output import Journal, JournalMismatch, Row
from scripts.batch.progress import Progress, summary
from scripts.batch.scorers import (
    FatalRunError,
    InProcessScorer,
    ServerScorer,
    find_archive,
    run_inprocess,
    run_server,
    served_archives,
)
from scripts.batch.selection import BOUND_HELP, DATE_BY, DateRange, InputFile, date_range, select_files
from scripts.batch.settings import add_setting_options, settings_from_args
from scripts.cli import Exit, UsageError, add_alias, prog, run_main
from scripts.paths import REPO

__all__ = [
    "build_parser",
    "check_args",
    "check_dated",
    "expand_output",
    "find_archive",
    "main",
    "make_scorer",
    "output_lock",
    "run",
    "score_and_write",
    "served_archives",
    "state_paths",
]

log = logging.getLogger("batch_score")

EXIT_CODES = f"""exit codes (the table every tool here shares: README.md, "Exit codes"):
  {Exit.OK:<4} every selected input has a result row (or nothing was selected)
  {Exit.FAILED_ITEMS:<4} output written, but some inputs have error rows (see their reason)
  {Exit.USAGE:<4} bad arguments or settings, or no dated folder matched: nothing was scored
  {Exit.UNREACHABLE:<4} TorchServe is unreachable or stopped answering: no output; rerun to resume
  {Exit.AUTH:<4} the token was refused and could not be renewed (or the key file is missing)
  {Exit.REFUSED:<4} TorchServe answers but cannot score: model or version not loaded
  {Exit.LOCK_HELD:<4} another run holds the lock of this output: nothing was done
  {Exit.INTERRUPTED:<4} interrupted (SIGINT/SIGTERM): no output; rerun to resume"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("scripts.batch"),
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
    dates.add_argument(
        "--date-by", choices=DATE_BY, default="mtime",
        help="a file's date: its mtime (default), or the dated folder it sits in (2026-11-26/ or "
        "2026/11/26/; exit 2 when no file sits in one)",
    )  # fmt: skip
    dates.add_argument("--ext", help="only these extensions, comma-separated (e.g. jpg,jpeg,png)")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--mode", choices=("server", "inprocess"), default="server",
        help="server: through TorchServe (default); inprocess: run the archive here, no server",
    )  # fmt: skip
    model.add_argument("--model", default="face_detector", help="model name (default: face_detector)")
    model.add_argument(
        "--version",
        help="model version (default: the version of the output's earlier rows, else the server's "
        "default; inprocess: the default version in config.properties' load_models)",
    )
    add_alias(model, "--model-version", "version")
    model.add_argument(
        "--archive", type=Path, help="inprocess: the .mar (default: <store>/<model>-<version>.mar)"
    )
    model.add_argument(
        "--model-store",
        type=Path,
        default=REPO / "model_store",
        help="inprocess: archive folder (default: <repo>/model_store)",
    )
    model.add_argument("--device", default="auto", help="inprocess: auto (default), cpu, cuda or cuda:N")
    model.add_argument(
        "--batch-size", type=int, help="inprocess: images per forward pass (default: batchSize)"
    )
    add_setting_options(parser)
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="server: requests in flight; inprocess: file readers (default: 4)",
    )
    run.add_argument("--url", help="inference address (default: config.properties / TS_INFERENCE_URL)")
    run.add_argument(
        "--management-url",
        help="management address, used to renew tokens (default: config.properties / TS_MANAGEMENT_URL)",
    )
    run.add_argument(
        "--key-file", type=Path,
        help="TorchServe key_file.json (default: TS_KEY_FILE, else <repo>/key_file.json)",
    )  # fmt: skip
    run.add_argument("--timeout", type=float, default=60.0, help="server: seconds per request (default: 60)")
    run.add_argument(
        "--retries", type=int, default=2, help="server: retries of a transient failure (default: 2)"
    )
    run.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                     help="auto: a bar on a terminal, a log line every --log-every s otherwise")  # fmt: skip
    run.add_argument(
        "--log-every", type=float, default=30.0, help="seconds between progress log lines (default: 30)"
    )
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
                f"another run (pid {holder}) holds {path}; not starting", Exit.LOCK_HELD
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield  # the lock goes with the file descriptor, also when the process is killed


def make_scorer(args: argparse.Namespace, stop: threading.Event) -> ServerScorer | InProcessScorer:
    if args.mode == "server":
        from scripts.client import Endpoints, TokenStore

        endpoints = Endpoints.default()
        if args.url:
            endpoints = replace(endpoints, inference=args.url)
        if args.management_url:
            endpoints = replace(endpoints, management=args.management_url)
        tokens = TokenStore(args.key_file, endpoints)
        scorer = ServerScorer(
            endpoints, tokens, args.model, args.version, args.timeout, args.retries, stop, args.settings
        )
        scorer.check()
        return scorer
    from scripts.inprocess import ArchivedModel, ArchiveError

    archive = args.archive or find_archive(args.model_store, args.model, args.version, served_archives())
    try:
        model = ArchivedModel(archive, args.device)
    except (ArchiveError, ValueError) as err:
        raise UsageError(str(err)) from None
    if model.name != args.model or (args.version and model.version != args.version):
        model.close()
        raise UsageError(
            f"{archive} holds {model.name} {model.version}, not {args.model} {args.version or ''}".rstrip()
        )
    return InProcessScorer(model, args.batch_size, args.settings)


def check_args(args: argparse.Namespace) -> None:
    if args.concurrency < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UsageError("--concurrency and --batch-size must be at least 1")
    if args.retries < 0 or args.timeout <= 0:
        raise UsageError("--retries must be >= 0 and --timeout > 0")
    args.settings = settings_from_args(args)  # {} = the model's defaults; UsageError when out of bounds


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
        journal = Journal(
            journal_path, {"model": args.model, "version": args.version, "settings": args.settings}
        )
        try:
            done = journal.open()
            pinned = journal.pin_version(args.version)
        except JournalMismatch as err:
            raise UsageError(str(err)) from None
        if pinned != args.version:
            log.info("no --version: scoring with %s, the version of the rows in %s", pinned, journal_path)
            args.version = pinned
        try:
            skipped: dict[str, int] = {}
            extensions = [e for e in (args.ext or "").split(",") if e.strip()] or None
            found = select_files(args.inputs, dates, args.date_by, extensions, [output], skipped)
            try:
                selected = list(found)  # every selected path must end up with a row: keep the keys
            except FileNotFoundError as err:
                raise UsageError(str(err)) from None
            check_dated(args, dates, selected, skipped)
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
                return Exit.OK
            return score_and_write(args, journal, selected, todo, output, fmt, stop, out)
        finally:
            journal.close()


def check_dated(
    args: argparse.Namespace, dates: DateRange, selected: list[InputFile], skipped: dict[str, int]
) -> None:
    """UsageError when --date-by folder found files but none in a dated folder: the layout does not
    match the option, and an empty output would pass for "no images that day"."""
    if args.date_by != "folder" or not dates.bounded or selected or not skipped.get("undated"):
        return
    if skipped.get("folders outside the range") or skipped.get("outside the range"):
        return  # dated folders exist, just none in this range: an empty day is a valid result
    raise UsageError(
        f"--date-by folder: none of the {skipped['undated']} files under {' '.join(args.inputs)} sits in "
        "a dated folder (.../2026-11-26/ or .../2026/11/26/), so none can be dated; use --date-by mtime "
        "or name the folder that holds the dated folders"
    )


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
        try:
            journal.append(row)
        except JournalMismatch as err:  # rows of another version: never mixed into one output
            raise FatalRunError(str(err), Exit.USAGE) from None
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
        return report(None, err.code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if isinstance(scorer, InProcessScorer):
            scorer.model.close()
    if stop.is_set():
        return report(None, Exit.INTERRUPTED)
    missing = [p for p in paths if p not in journal.done]
    if missing:  # cannot happen unless a scorer lost a row: never write an output that lacks one
        raise RuntimeError(f"{len(missing)} inputs have no row, e.g. {missing[0]}")
    with atomic_write(output, newline="" if fmt == "csv" else None) as handle:
        WRITERS[fmt](journal.rows(paths), handle)
    failed = any(not journal.done[p].ok for p in paths)
    return report(output, Exit.FAILED_ITEMS if failed else Exit.OK)


def _stopper(stop: threading.Event) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # second signal: stop at once
        log.warning("signal %d: finishing the inputs in flight, then stopping", signum)
        stop.set()

    return handler


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: run(args, sys.stdout), parser.prog)


if __name__ == "__main__":
    sys.exit(main())
