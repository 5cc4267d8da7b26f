"""The two ways a batch run scores files, behind one loop that feeds finished rows back in order of
completion: through TorchServe (``ServerScorer``, parallel requests with scripts/client.py) or
in-process (``InProcessScorer``, batches through an archive's own pipeline, scripts/inprocess.py).

A failure that concerns one input becomes that input's error row. A failure that would hit every
input (nothing answers, the token is refused, the model or version is not loaded) stops the run
with :class:`FatalRunError` and its exit code instead of writing thousands of error rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from itertools import islice
from pathlib import Path
from typing import Any

from handlers.errors import InputError
from scripts.batch.output import ErrorInfo, Row
from scripts.batch.selection import InputFile
from scripts.batch.settings import request_values
from scripts.cli import Exit, ToolError, UsageError
from scripts.client import (
    AuthError,
    ClientError,
    DetectionClient,
    Endpoints,
    ModelNotReady,
    RequestRejected,
    ServerUnavailable,
    TokenStore,
)
from scripts.config import DEFAULT_CONFIG, read_properties

__all__ = [
    "Cancelled",
    "FatalRunError",
    "InProcessScorer",
    "ServerScorer",
    "batched",
    "find_archive",
    "read_input",
    "run_inprocess",
    "run_server",
    "served_archives",
]

log = logging.getLogger("batch_score")

BACKOFF_S = (0.5, 2.0, 5.0)  # waits before the 1st, 2nd, 3rd retry of a transient failure
RETRYABLE_4XX = (408, 429)


class FatalRunError(ToolError):
    """Stops the whole run with ``code`` (an :class:`~scripts.cli.Exit`): no row is written for the
    input that hit it."""


class Cancelled(Exception):
    """The run is stopping; this input gets no row now and is scored by the next run."""


def read_input(item: InputFile) -> bytes | ErrorInfo:
    try:
        return Path(item.path).read_bytes()
    except OSError as err:
        return ErrorInfo(None, "read_error", f"cannot read the file: {err.strerror or err}", retryable=True)


def error_from_input_error(err: InputError) -> ErrorInfo:
    return ErrorInfo(err.status, err.reason, err.message, retryable=err.status >= 500)


class ServerScorer:
    """One input per request through DetectionClient (one HTTP session per thread); ``settings``
    (scripts/batch/settings.py) travel with every request as X-<Setting> headers."""

    def __init__(
        self,
        endpoints: Endpoints,
        tokens: TokenStore,
        model: str,
        version: str | None,
        timeout: float = 60.0,
        retries: int = 2,
        stop: threading.Event | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.endpoints, self.tokens = endpoints, tokens
        self.settings = request_values(settings or {})  # {"small_faces": "true", ...}
        self.model, self.version = model, version
        self.timeout, self.retries = timeout, retries
        self.stop = stop or threading.Event()
        self._local = threading.local()

    def client(self) -> DetectionClient:
        if not hasattr(self._local, "client"):
            self._local.client = DetectionClient(self.endpoints, self.tokens, timeout=self.timeout)
        return self._local.client

    def check(self) -> None:
        """Fail fast before any work: the server answers and takes our token."""
        try:
            self.client().ping()
        except ServerUnavailable as err:
            raise FatalRunError(str(err), Exit.UNREACHABLE) from None
        except AuthError as err:
            raise FatalRunError(f"token refused: {err}", Exit.AUTH) from None
        except ClientError as err:
            raise FatalRunError(f"server refuses the run: {err}", Exit.REFUSED) from None

    def score(self, item: InputFile) -> Row:
        data = read_input(item)
        if isinstance(data, ErrorInfo):
            return Row(item.path, item.mtime, item.size, error=data)
        error: ErrorInfo | None = None
        for attempt in range(self.retries + 1):
            if self.stop.is_set():
                raise Cancelled
            if attempt:
                time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1])
            try:
                result = self.client().detect(data, self.model, self.version, **self.settings)
                return Row(item.path, item.mtime, item.size, result=result)
            except AuthError as err:
                raise FatalRunError(f"token refused: {err}", Exit.AUTH) from None
            except RequestRejected as err:
                error = self._rejected(err)
                if not error.retryable:
                    break
            except ModelNotReady as err:
                if err.status == 404:
                    target = self.model + (f" version {self.version}" if self.version else "")
                    raise FatalRunError(f"{target} is not loaded: {err}", Exit.REFUSED) from None
                error = ErrorInfo(err.status, "model_unavailable", str(err), retryable=True)
            except ServerUnavailable as err:
                error = ErrorInfo(None, "timeout", str(err), retryable=True)
            except ClientError as err:  # 5xx: worker died, out of memory, internal error
                error = self._server_error(err)
        if error.reason == "timeout" and not self._answers():
            raise FatalRunError(f"server stopped answering: {error.message}", Exit.UNREACHABLE)
        return Row(item.path, item.mtime, item.size, error=error)

    def _answers(self) -> bool:
        try:
            self.client().ping()
            return True
        except ClientError:
            return False

    @staticmethod
    def _rejected(err: RequestRejected) -> ErrorInfo:
        body = err.body if isinstance(err.body, dict) else {}
        if "type" in body and "message" in body:  # the handler's own error body
            return ErrorInfo(err.status, body["type"], body["message"], retryable=err.status in RETRYABLE_4XX)
        reason = "too_large" if err.status == 413 else "bad_request"
        return ErrorInfo(err.status, reason, str(err), retryable=err.status in RETRYABLE_4XX)

    @staticmethod
    def _server_error(err: ClientError) -> ErrorInfo:
        body = err.body if isinstance(err.body, dict) else {}
        reason = "internal" if body.get("type") == "internal" else "server_error"  # handler's vs server's
        return ErrorInfo(err.status, reason, str(body.get("message") or err), retryable=True)


def served_archives(config: Path = DEFAULT_CONFIG) -> list[str]:
    """Archive names in ``load_models`` of config.properties, in order: the first one of a model is
    the version TorchServe serves by default."""
    props = read_properties(config) if config.exists() else {}
    return [name.strip() for name in props.get("load_models", "").split(",") if name.strip()]


def find_archive(store: Path, model: str, version: str | None, load_models: Sequence[str] = ()) -> Path:
    """The archive an in-process run loads: ``<model>-<version>.mar``; without a version the only
    archive of ``model`` in ``store``, else the first of them listed in ``load_models`` (the
    server's default version)."""
    if version:
        return store / f"{model}-{version}.mar"
    found = sorted(store.glob(f"{model}-*.mar"))
    if len(found) == 1:
        return found[0]
    default = next((store / name for name in load_models if store / name in found), None)
    if default is not None:
        log.info("no --version: using %s, the default version (first in load_models)", default.name)
        return default
    names = ", ".join(p.name for p in found) or "none"
    listed = " and none is listed in load_models of config.properties" if found else ""
    raise UsageError(
        f"{len(found)} archives of {model} in {store} ({names}){listed}: pass --version or --archive"
    )


class InProcessScorer:
    """Batches through an :class:`~scripts.inprocess.ArchivedModel` in this process; ``settings`` are
    added to every request dict, as a worker gets them from a request's headers."""

    def __init__(
        self, model: Any, batch_size: int | None = None, settings: dict[str, Any] | None = None
    ) -> None:
        self.model = model
        self.batch_size = batch_size or model.batch_size
        self.settings = dict(settings or {})

    def score_batch(self, items: list[InputFile], payloads: list[bytes | ErrorInfo]) -> list[Row]:
        rows: list[Row | None] = [None] * len(items)
        requests, positions = [], []
        for index, (item, data) in enumerate(zip(items, payloads)):
            if isinstance(data, ErrorInfo):
                rows[index] = Row(item.path, item.mtime, item.size, error=data)
            else:
                requests.append({"body": data, **self.settings})
                positions.append(index)
        for index, outcome in zip(positions, self.model.process(requests) if requests else []):
            item = items[index]
            if isinstance(outcome, InputError):
                rows[index] = Row(item.path, item.mtime, item.size, error=error_from_input_error(outcome))
            else:
                rows[index] = Row(item.path, item.mtime, item.size, result=outcome)
        return rows


def batched(items: Iterable[InputFile], size: int) -> Iterator[list[InputFile]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def run_server(
    todo: Iterable[InputFile], scorer: ServerScorer, concurrency: int, on_row: Callable[[Row], None]
) -> None:
    """Score with ``concurrency`` requests in flight; ``on_row`` runs in this thread, per finished row.

    At most 2 x concurrency inputs are queued ahead, so ``todo`` is consumed lazily. A fatal error
    stops submitting, lets the requests in flight finish (their rows are kept) and is raised last.
    """
    fatal: list[FatalRunError] = []

    def drain(finished: Iterable[Future]) -> None:
        for future in finished:
            try:
                on_row(future.result())
            except Cancelled:
                pass
            except FatalRunError as err:
                scorer.stop.set()
                fatal.append(err)

    with ThreadPoolExecutor(concurrency, thread_name_prefix="score") as pool:
        pending: set[Future] = set()
        for item in todo:
            if scorer.stop.is_set():
                break
            pending.add(pool.submit(scorer.score, item))
            if len(pending) >= 2 * concurrency:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                drain(finished)
        drain(_as_completed(pending))
    if fatal:
        raise fatal[0]


def _as_completed(pending: set[Future]) -> Iterator[Future]:
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from finished


def run_inprocess(
    todo: Iterable[InputFile],
    scorer: InProcessScorer,
    readers: int,
    on_row: Callable[[Row], None],
    stop: threading.Event,
) -> None:
    """Score batch after batch in this thread while ``readers`` threads read the next batch's files."""
    with ThreadPoolExecutor(max(1, readers), thread_name_prefix="read") as pool:
        batches = batched(todo, scorer.batch_size)
        current = next(batches, None)
        reading = [pool.submit(read_input, item) for item in current or []]
        while current is not None and not stop.is_set():
            payloads = [future.result() for future in reading]
            upcoming = next(batches, None)
            reading = [pool.submit(read_input, item) for item in upcoming or []]
            for row in scorer.score_batch(current, payloads):
                on_row(row)
            current = upcoming
