"""StreamRunner policies, in-flight bound, outages and statistics, with a scripted fake server."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from handlers.schema import Detection, DetectionResult
from scripts.client import ModelNotReady, RequestRejected, ServerUnavailable
from scripts.latency import LatencyReservoir
from scripts.stream.core import (
    FrameResult,
    Policy,
    StreamAborted,
    StreamConfig,
    StreamRunner,
    StreamStats,
)
from scripts.stream.frames import Frame
from scripts.stream.transport import EncodeOptions


class FakeServer:
    """A transport whose answers take ``service_s``; ``down`` makes it refuse like a stopped server."""

    name = "fake"

    def __init__(self, service_s: float = 0.0, reject: set[int] | None = None, missing_model: bool = False):
        self.service_s, self.reject, self.missing_model = service_s, reject or set(), missing_model
        self.down = threading.Event()
        self.lock = threading.Lock()
        self.active = self.peak = self.calls = 0

    def detect(self, image: bytes) -> DetectionResult:
        with self.lock:
            self.calls += 1
            call = self.calls
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if self.down.is_set():
                raise ServerUnavailable("nothing listening")
            if self.missing_model:
                raise ModelNotReady("predict nope: Model not found: nope", 404)
            if call in self.reject:
                raise RequestRejected("bad image", 400)
            time.sleep(self.service_s)
            face = Detection("face", 0.9, (10.0, 10.0, 20.0, 20.0), [(12.0, 12.0)] * 5)
            return DetectionResult("fake", "1", 32, 24, [face])
        finally:
            with self.lock:
                self.active -= 1

    def ping(self) -> str:
        if self.down.is_set():
            raise ServerUnavailable("nothing listening")
        return "Healthy"

    def close(self) -> None:
        pass


def frames(count: int, fps: float | None = None, size: tuple[int, int] = (32, 24)):
    start = time.monotonic()
    for index in range(count):
        if fps:
            time.sleep(max(0.0, start + index / fps - time.monotonic()))
        image = np.full((size[1], size[0], 3), index % 256, np.uint8)
        yield Frame(index, image, time.time(), time.monotonic())


def run(server: FakeServer, policy: Policy, source, **config) -> tuple[StreamStats, list[FrameResult]]:
    results: list[FrameResult] = []
    runner = StreamRunner(server, StreamConfig(policy, **config), [results.append])
    return runner.run(source), results


@pytest.mark.parametrize("count", [0, 1, 25])
@pytest.mark.parametrize("in_flight", [1, 3])
def test_every_frame_sends_every_frame_in_order(count, in_flight):
    server = FakeServer(service_s=0.005)
    stats, results = run(server, Policy.EVERY_FRAME, frames(count), max_in_flight=in_flight)
    assert [r.frame.index for r in results] == list(range(count))
    assert (stats.read, stats.sent, stats.processed, stats.dropped, stats.failed) == (
        count,
        count,
        count,
        0,
        0,
    )
    assert server.peak <= in_flight and stats.max_in_flight <= in_flight


def test_latest_frame_drops_stale_frames_under_a_slow_server_and_bounds_latency():
    server = FakeServer(service_s=0.1)  # 10 fps server, 100 fps source
    stats, results = run(server, Policy.LATEST_FRAME, frames(100, fps=100), max_in_flight=2)
    assert stats.read == 100 and stats.dropped > 50 and stats.sent + stats.dropped == 100
    assert server.peak <= 2 and stats.max_in_flight == 2
    assert max(r.latency_ms for r in results) < 1000 * (3 * 0.1 + 0.15)
    indices = [r.frame.index for r in results]
    assert indices == sorted(indices) and indices[-1] >= 90  # the newest frames get through


def test_latest_frame_with_a_fast_server_drops_nothing():
    stats, _ = run(FakeServer(), Policy.LATEST_FRAME, frames(30, fps=100), max_in_flight=2)
    assert (stats.dropped, stats.processed) == (0, 30)


def test_a_rejected_frame_is_counted_failed_and_the_stream_goes_on():
    stats, results = run(FakeServer(reject={3}), Policy.EVERY_FRAME, frames(6), max_in_flight=1)
    assert (stats.processed, stats.failed) == (5, 1)
    assert results[2].result is None and "bad image" in results[2].error
    assert results[3].result is not None


def test_every_frame_resends_frames_lost_in_an_outage():
    server = FakeServer(service_s=0.01)
    server.down.set()
    threading.Timer(0.5, server.down.clear).start()
    stats, results = run(server, Policy.EVERY_FRAME, frames(10), max_in_flight=2, backoff=(0.05, 2, 0.2))
    assert [r.frame.index for r in results] == list(range(10))
    assert (stats.processed, stats.failed) == (10, 0)
    assert stats.reconnects >= 1 and stats.retries >= 1


def test_latest_frame_skips_frames_lost_in_an_outage_and_recovers():
    server = FakeServer(service_s=0.01)
    threading.Timer(0.3, server.down.set).start()
    threading.Timer(0.8, server.down.clear).start()
    stats, results = run(
        server, Policy.LATEST_FRAME, frames(150, fps=100), max_in_flight=2, backoff=(0.05, 2, 0.1)
    )
    assert stats.reconnects >= 1
    assert results[-1].result is not None and results[-1].frame.index >= 140
    assert stats.processed + stats.failed == stats.sent and stats.dropped > 0


def test_gives_up_when_the_server_stays_away():
    server = FakeServer()
    server.down.set()
    with pytest.raises(StreamAborted, match="give-up after"):
        run(server, Policy.EVERY_FRAME, frames(5), give_up_after=0.3, backoff=(0.05, 2, 0.1))


def test_an_unknown_model_is_not_an_outage():
    stats, results = run(FakeServer(missing_model=True), Policy.EVERY_FRAME, frames(3), max_in_flight=1)
    assert (stats.failed, stats.reconnects) == (3, 0)
    assert "Model not found" in results[0].error


def test_resize_maps_boxes_back_to_captured_pixels():
    server = FakeServer()
    config = {"encode": EncodeOptions(resize=(16, 12))}  # half of 32x24
    _, results = run(server, Policy.EVERY_FRAME, frames(1), **config)
    assert results[0].result.detections[0].box == (20.0, 20.0, 40.0, 40.0)
    assert (results[0].result.width, results[0].result.height) == (64, 48)


def test_stop_finishes_pending_requests():
    server = FakeServer(service_s=0.05)
    results: list[FrameResult] = []
    runner = StreamRunner(server, StreamConfig(Policy.LATEST_FRAME, max_in_flight=2), [results.append])
    threading.Timer(0.3, runner.stop).start()
    stats = runner.run(frames(10_000, fps=100))
    assert stats.read < 10_000 and stats.processed == stats.sent and stats.failed == 0


@pytest.mark.parametrize("max_in_flight", [0, 65])
def test_config_rejects_a_bad_in_flight_bound(max_in_flight):
    with pytest.raises(ValueError, match="max_in_flight must be 1..64"):
        StreamConfig(max_in_flight=max_in_flight)


def test_reservoir_percentiles_exact_then_bounded():
    reservoir = LatencyReservoir(capacity=1000)
    assert np.isnan(reservoir.percentiles()["p50"])
    for value in range(1, 101):
        reservoir.add(float(value))
    assert reservoir.percentiles()["p50"] == pytest.approx(50.5)
    for value in range(100_000):
        reservoir.add(float(value % 100))
    assert len(reservoir.samples) == 1000 and reservoir.count == 100_100
    assert 40 <= reservoir.percentiles()["p50"] <= 60


def test_summary_reads_like_the_issue_asks():
    stats = StreamStats(read=10, sent=8, dropped=2, failed=1, processed=7, elapsed_s=2.0)
    for value in (10.0, 20.0, 30.0):
        stats.latency.add(value)
    text = stats.summary()
    assert "read 10, sent 8, dropped 2 (20.0%), failed 1, processed 7" in text
    assert "3.5 fps" in text and "p50 20.0" in text and "p99" in text
    assert stats.to_json()["dropped_share"] == 0.2
