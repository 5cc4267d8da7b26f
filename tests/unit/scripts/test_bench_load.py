"""scripts/bench/load.py (the one closed-loop load generator) and the soak's records built on it."""

from __future__ import annotations

import asyncio
import math

import pytest

from scripts.bench.load import (
    Answer,
    Auth,
    LoadGenerator,
    StepResult,
    TokenAuth,
    _token_failure,
    open_session,
)
from scripts.bench.soak import MALFORMED_SAMPLES, SoakReport, malformed_requests
from scripts.config import Endpoints, TokenStore
from scripts.samples import sample_jpeg
from scripts.server import free_ports

TOKEN_ERROR = b'{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."}'


def answer(status: int, body: bytes = b"", latency_ms: float = 10.0, error: str | None = None) -> Answer:
    return Answer(status, body, latency_ms, error)


@pytest.mark.parametrize(
    ("answers", "errors", "samples", "latencies"),
    [
        ([], 0, [], []),
        ([answer(200, latency_ms=5.0)], 0, [], [5.0]),
        ([answer(503), answer(200, latency_ms=7.0)], 1, ["HTTP 503"], [7.0]),
        ([answer(0, b"refused", error="ClientConnectorError")], 1, ["ClientConnectorError"], []),
        ([answer(500)] * 8, 8, ["HTTP 500"] * 5, []),  # the first five failures are described
    ],
    ids=["nothing", "one ok", "one error", "no answer", "many errors"],
)
def test_step_result_records_table(answers, errors, samples, latencies):
    step = StepResult("t", 1, 2.0)
    for item in answers:
        step.record(item)
    assert (step.errors, step.error_samples, step.latencies_ms) == (errors, samples, latencies)
    summary = step.summary()
    assert summary["requests"] == len(answers)
    assert list(summary["latency_ms"]) == ["p50", "p90", "p99"]
    assert summary["throughput_rps"] == round(len(latencies) / 2.0, 2)
    assert math.isnan(summary["latency_ms"]["p50"]) == (not latencies)


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (400, TOKEN_ERROR, True),
        (401, TOKEN_ERROR, True),
        (400, b'{"code": 400, "type": "bad_request", "message": "empty request body"}', False),
        (400, b"InvalidKeyException but not JSON", False),
        (200, TOKEN_ERROR, False),
        (400, b"", False),
    ],
)
def test_token_failure_table(status, payload, expected):
    assert _token_failure(status, payload) is expected


class CountingTokens(TokenStore):
    """A token store whose renewals are counted (no server: the lock is what is under test)."""

    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path / "absent.json", Endpoints.from_properties({}, env={}))
        self.renewals = 0

    def get(self, kind: str) -> str:
        return f"key-{self.renewals}"

    def refresh(self, kind: str) -> str:
        self.renewals += 1
        return self.get(kind)


def test_token_auth_renews_once_per_expiry_in_every_event_loop(tmp_path):
    tokens = CountingTokens(tmp_path)
    auth = TokenAuth(tokens)
    stale = auth()
    assert stale == {"Authorization": "Bearer key-0"}

    async def many_clients_see_the_same_stale_key() -> list[bool]:
        return await asyncio.gather(*(auth.renew(stale) for _ in range(8)))

    assert asyncio.run(many_clients_see_the_same_stale_key()) == [True] * 8
    assert tokens.renewals == 1 and auth() == {"Authorization": "Bearer key-1"}
    stale = auth()
    asyncio.run(many_clients_see_the_same_stale_key())  # a new loop, as each benchmark step has
    assert tokens.renewals == 2


def test_fixed_headers_are_never_renewed():
    auth = Auth({"Authorization": "Bearer fixed"})
    assert auth() == {"Authorization": "Bearer fixed"}
    assert asyncio.run(auth.renew(auth())) is False


def test_closed_loop_without_a_server_records_every_failure():
    url = f"http://127.0.0.1:{free_ports(1)[0]}/predictions/face_detector"  # nothing listens there
    step = StepResult("none", 2, 0.3)

    async def run() -> float:
        async with open_session(2) as session:
            load = LoadGenerator(session, url, b"x", {"Content-Type": "image/jpeg"})
            single = await load.post()
            assert (single.status, single.error) == (0, "ClientConnectorError") and single.text
            return await load.closed_loop(2, 0.3, step.record)

    elapsed = asyncio.run(run())
    assert elapsed >= 0.3 and step.errors > 2 and not step.latencies_ms
    assert set(step.error_samples) == {"ClientConnectorError"}


@pytest.mark.parametrize(
    ("item", "ok", "failed", "sample"),
    [
        (answer(200, b"{}", 12.0), 1, 0, None),
        (answer(503, b"x" * 500), 0, 1, "HTTP 503: " + "x" * 120),
        (
            answer(0, b"Connection reset", error="ServerDisconnectedError"),
            0,
            1,
            "ServerDisconnectedError: Connection reset",
        ),
    ],  # fmt: skip
    ids=["ok", "server error", "no answer"],
)
def test_soak_records_good_answers_table(item, ok, failed, sample):
    report = SoakReport(1.0, 1)
    report.record_good(item)
    assert (report.good_ok, report.good_failed) == (ok, failed)
    assert report.failure_samples == ([sample] if sample else [])
    assert report.latencies_ms == ([12.0] if ok else [])
    assert list(report.to_json()["latency_ms"]) == ["p50", "p99"]


def test_soak_records_malformed_answers():
    report = SoakReport(1.0, 1)
    for status in (400, 413, 415, 499):
        report.record_malformed("bad", answer(status))
    for _ in range(MALFORMED_SAMPLES + 2):
        report.record_malformed("bomb", answer(500, b"Worker died."))
    assert report.malformed_4xx == 4
    assert report.malformed_other == ["bomb: HTTP 500 Worker died."] * MALFORMED_SAMPLES
    assert not report.passed


def test_malformed_requests_are_all_distinct_and_named():
    hostile = malformed_requests(sample_jpeg(160, 120))
    names = [name for name, _, _ in hostile]
    assert len(names) == len(set(names)) == 12
    assert all(isinstance(body, bytes) and content_type for _, body, content_type in hostile)
