"""Closed-loop async HTTP load: ``concurrency`` clients on keep-alive connections, each sending the
next request as soon as the previous answer arrives, for a fixed duration after a warm-up.

The one load generator of the tools here: the benchmark steps (:func:`run_step`) and the soak
(scripts/bench/soak.py, which adds its hostile client on top of :class:`LoadGenerator`) both use it.
Authentication is pluggable: :class:`Auth` sends fixed headers (Flask, LitServe, a key that will
not expire during the run); :class:`TokenAuth` sends TorchServe's inference key and renews it
through the :class:`~scripts.config.TokenStore` when an answer says it expired.

    >>> from scripts.bench.load import run_step
    >>> run_step("flask", "http://127.0.0.1:5000/predict", jpeg, {"Content-Type": "image/jpeg"},
    ...          concurrency=4, duration_s=10, warmup_s=2).summary()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from scripts.config import TOKEN_FAILURE_STATUSES, TokenStore, is_token_failure
from scripts.latency import percentiles

__all__ = ["Answer", "Auth", "LoadGenerator", "StepResult", "TokenAuth", "open_session", "run_step"]

ERROR_SAMPLES = 5  # failed answers described in a step's summary


@dataclass
class Answer:
    """One request's outcome as the load generator saw it."""

    status: int  # HTTP status; 0 when no answer came (connection refused or reset, timeout)
    body: bytes  # the response body; without an answer, the error message
    latency_ms: float  # send -> whole body received, a token renewal and its retry included
    error: str | None = None  # exception type name when no answer came

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Auth:
    """Fixed headers on every request; nothing to renew (a rejected key's answer stands)."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = dict(headers or {})

    def __call__(self) -> dict[str, str]:
        return self.headers

    async def renew(self, stale: dict[str, str]) -> bool:
        """Make new headers after ``stale`` ones were refused; True when a retry is worth it."""
        return False


class TokenAuth(Auth):
    """TorchServe's bearer key of ``kind``, renewed once per expiry (whichever client sees it first)."""

    def __init__(self, tokens: TokenStore, kind: str = "inference") -> None:
        super().__init__()
        self.tokens = tokens
        self.kind = kind
        self.key = tokens.get(kind)
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def __call__(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def renew(self, stale: dict[str, str]) -> bool:
        async with self._loop_lock():
            if self() == stale:  # another client may have renewed it already
                self.key = await asyncio.to_thread(self.tokens.refresh, self.kind)
        return True

    def _loop_lock(self) -> asyncio.Lock:
        # One lock per event loop: each benchmark step runs its own loop (asyncio.run).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]


def _token_failure(status: int, payload: bytes) -> bool:
    if status not in TOKEN_FAILURE_STATUSES:
        return False
    try:
        return is_token_failure(status, json.loads(payload))
    except ValueError:
        return False


def open_session(connections: int, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    """A keep-alive session holding at most ``connections`` connections (call inside the event loop)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


class LoadGenerator:
    """POSTs to one URL over one session: single requests (:meth:`post`) or closed loops."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: dict[str, str],
        auth: Auth | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.body = body
        self.headers = headers
        self.auth = auth or Auth()

    async def post(self, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        """One request (default: the generator's body and headers); retried once after a token renewal."""
        data = self.body if body is None else body
        request_headers = {**self.headers, **(headers or {})}
        start = time.perf_counter()
        try:
            for attempt in range(2):
                sent = self.auth()
                merged = {**request_headers, **sent}
                async with self.session.post(self.url, data=data, headers=merged) as reply:
                    payload = await reply.read()
                if attempt == 0 and _token_failure(reply.status, payload) and await self.auth.renew(sent):
                    continue
                break
        except (TimeoutError, aiohttp.ClientError) as err:
            elapsed = (time.perf_counter() - start) * 1000.0
            return Answer(0, str(err).encode(), elapsed, type(err).__name__)
        return Answer(reply.status, payload, (time.perf_counter() - start) * 1000.0)

    async def closed_loop(
        self, clients: int, seconds: float, record: Callable[[Answer], None] | None = None
    ) -> float:
        """``clients`` loops, each posting again as soon as its answer arrives, for ``seconds``.

        Every answer goes to ``record`` (None: a warm-up, nothing kept). Returns the real length
        of the window in seconds: requests in flight at the deadline still finish inside it.
        """
        started = time.perf_counter()
        stop_at = started + seconds

        async def client() -> None:
            while time.perf_counter() < stop_at:
                answer = await self.post()
                if record is not None:
                    record(answer)

        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started


@dataclass
class StepResult:
    target: str
    concurrency: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    def record(self, answer: Answer) -> None:
        """HTTP 200 counts with its latency; anything else is an error (the first few described)."""
        if answer.status == 200:
            self.latencies_ms.append(answer.latency_ms)
            return
        self.errors += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(answer.error or f"HTTP {answer.status}")

    def summary(self) -> dict:
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 2),
            "requests": self.requests,
            "errors": self.errors,
            "throughput_rps": round(len(self.latencies_ms) / self.duration_s, 2),
            "latency_ms": percentiles(self.latencies_ms, (50, 90, 99), digits=1),
        }


async def _run(target, url, body, headers, concurrency, duration_s, warmup_s, auth) -> StepResult:
    result = StepResult(target, concurrency, duration_s)
    async with open_session(concurrency) as session:
        load = LoadGenerator(session, url, body, headers, auth)
        await load.closed_loop(concurrency, warmup_s)
        result.duration_s = await load.closed_loop(concurrency, duration_s, result.record)
    return result


def run_step(
    target: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    auth: Auth | None = None,
) -> StepResult:
    """Warm up for ``warmup_s``, then measure ``duration_s`` of closed-loop load at ``concurrency``."""
    return asyncio.run(_run(target, url, body, headers, concurrency, duration_s, warmup_s, auth))
