"""The streaming client against a real TorchServe: real faces moving along known paths.

The clip is 640x480 at 25 fps (scripts/stream/synthetic.py): the astronaut and Grace Hopper cross a
face-free scene in opposite directions, so every frame has two faces at exact positions. It lasts
4 s (100 frames), not 10: the faces travel the same whole path either way (positions are a function
of the share of the clip played), and on the 2 shared CPU cores of the test machines one frame costs
the server 70-400 ms, so a 250-frame clip made each full pass take 1.5-2 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from handlers.schema import DetectionResult
from scripts.packaging.grpc_stubs import ensure as ensure_grpc_stubs
from scripts.paths import REPO
from scripts.server import start, wait_ready
from scripts.stream.core import FrameResult, Policy, StreamConfig, StreamRunner
from scripts.stream.frames import Source, read_frames
from scripts.stream.output import JsonlSink
from scripts.stream.synthetic import SyntheticClip
from scripts.stream.transport import EncodeOptions, ModelOptions, make_transport
from tests.support.images import iou
from tests.support.servers import STARTUP_TIMEOUT_S, launch, shutdown

CLIP = SyntheticClip(seconds=4.0, fps=25.0, width=640, height=480)
# Latest-frame runs cost server time per second of source, not per frame: they get the full 10 s.
LIVE_CLIP = SyntheticClip(seconds=10.0, fps=25.0, width=640, height=480)
MIN_IOU = 0.5
MIN_HIT_SHARE = 0.95
_results: dict[str, list[FrameResult]] = {}  # transport -> every-frame results on the clip


class CountingTransport:
    """Wraps a transport to check, from the outside, how many requests are really in flight."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.service_s: list[float] = []

    def detect(self, image: bytes) -> DetectionResult:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        start = time.monotonic()
        try:
            return self.inner.detect(image)
        finally:
            with self.lock:
                self.active -= 1
                self.service_s.append(time.monotonic() - start)

    def ping(self) -> str:
        return self.inner.ping()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_grpc_stubs()
    return CLIP.write(tmp_path_factory.mktemp("clip") / "faces.avi")


@pytest.fixture(scope="module")
def live_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_grpc_stubs()
    return LIVE_CLIP.write(tmp_path_factory.mktemp("clip") / "faces-10s.avi")


def stream(server, clip: Path, transport: str, config: StreamConfig, pace=None, settings=None, **kw):
    inner = make_transport(transport, server.endpoints, server.tokens, ModelOptions(settings=settings))
    counting = CountingTransport(inner)
    results: list[FrameResult] = []
    runner = StreamRunner(counting, config, [results.append, *kw.get("sinks", [])])
    frames = read_frames(Source.parse(str(clip)), pace_fps=pace, stop=runner.stop_event)
    try:
        stats = runner.run(frames)
    finally:
        counting.close()
    return stats, results, counting


def hit_share(results: list[FrameResult], clip: SyntheticClip = CLIP) -> float:
    """Share of processed frames where every true face is matched by a detection at IoU >= 0.5."""
    processed = [r for r in results if r.result is not None]
    hits = sum(
        all(
            any(iou(d.box, face) >= MIN_IOU for d in r.result.detections)
            for face in clip.faces(r.frame.index % clip.frame_count)
        )
        for r in processed
    )
    return hits / len(processed)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_every_frame_sends_every_frame_in_order_and_finds_the_faces(server, clip_path, tmp_path, transport):
    jsonl = JsonlSink(tmp_path / "frames.jsonl")
    config = StreamConfig(Policy.EVERY_FRAME, max_in_flight=3)
    stats, results, counting = stream(server, clip_path, transport, config, sinks=[jsonl])
    jsonl.close()
    _results[transport] = results

    assert (stats.read, stats.sent, stats.processed) == (CLIP.frame_count,) * 3
    assert (stats.dropped, stats.failed) == (0, 0)
    assert [r.frame.index for r in results] == list(range(CLIP.frame_count))
    assert counting.peak <= 3 and stats.max_in_flight <= 3
    assert hit_share(results) >= MIN_HIT_SHARE
    # No false faces on the coffee cup: at most the two real ones per frame.
    assert max(len(r.result.detections) for r in results) <= 2

    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(CLIP.frame_count))
    first = lines[0]
    assert set(first) == {"frame", "captured_at", "latency_ms", "error", "detections", "timings_ms"}
    assert first["error"] is None and first["latency_ms"] > 0 and len(first["detections"]) == 2
    assert len(first["detections"][0]["landmarks"]) == 5


def test_rest_and_grpc_give_the_same_detections(server, clip_path):
    for transport in ("rest", "grpc"):
        if transport not in _results:
            stream_stats = stream(server, clip_path, transport, StreamConfig(Policy.EVERY_FRAME))
            _results[transport] = stream_stats[1]
    rest, grpc = _results["rest"], _results["grpc"]
    assert len(rest) == len(grpc) == CLIP.frame_count
    for a, b in zip(rest, grpc):
        assert a.frame.index == b.frame.index
        assert len(a.result.detections) == len(b.result.detections), f"frame {a.frame.index}"
        for da, db in zip(a.result.detections, b.result.detections):
            assert np.allclose(da.box, db.box, atol=0.05), f"frame {a.frame.index}"
            assert np.allclose(da.landmarks, db.landmarks, atol=0.05)
            assert abs(da.score - db.score) <= 1e-4


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_latest_frame_with_a_slow_server_drops_frames_and_keeps_latency_bounded(
    server, live_clip_path, transport
):
    # Slow the server down without touching it: frames upscaled to 1280x960 and inferred at full
    # size cost it about 4x a 640x480 frame, well over the 40 ms a 25 fps source allows per frame.
    config = StreamConfig(Policy.LATEST_FRAME, max_in_flight=2, encode=EncodeOptions((1280, 960), 90))
    stats, results, counting = stream(
        server, live_clip_path, transport, config, pace=LIVE_CLIP.fps, settings={"inference_size": 1280}
    )
    service_p50 = float(np.median(counting.service_s))
    assert service_p50 > 2 / LIVE_CLIP.fps, f"server not slow enough to test dropping ({service_p50:.3f}s)"

    assert stats.read == LIVE_CLIP.frame_count
    assert stats.dropped > 0 and stats.sent + stats.dropped == stats.read
    assert stats.failed == 0 and stats.processed == stats.sent >= 6
    assert counting.peak <= 2 and stats.max_in_flight <= 2
    latencies = [r.latency_ms for r in results]
    # Bounded: a frame waits at most for the request ahead of it plus its own, whatever the clip
    # length. A queue (every frame kept) would instead grow by ~(service - 40 ms) per frame read.
    bound_ms = 1000 * (config.max_in_flight + 1) * max(counting.service_s) + 250
    assert max(latencies) <= bound_ms
    third = len(latencies) // 3
    assert np.mean(latencies[-third:]) <= np.mean(latencies[:third]) + 2000 * service_p50
    assert [r.frame.index for r in results] == sorted(r.frame.index for r in results)
    assert hit_share(results, LIVE_CLIP) >= MIN_HIT_SHARE


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    """A private instance this module may stop and start again (the shared one must stay up)."""
    instance = launch(tmp_path_factory.mktemp("ts-stream"))
    yield instance
    shutdown(instance)


def restart_when(instance, results: list, after_frames: int, restarted: threading.Event) -> None:
    """Stop ``instance`` once ``after_frames`` results arrived; start it again on the same ports."""
    deadline = time.monotonic() + 300
    while len(results) < after_frames and time.monotonic() < deadline:
        time.sleep(0.05)
    shutdown(instance)
    time.sleep(1.0)
    try:
        instance.process = start(instance.run_dir / "config.properties", instance.run_dir, foreground=True)
        wait_ready(instance.management(), instance.models, STARTUP_TIMEOUT_S, instance.process)
    finally:
        restarted.set()


def camera(clip_path: Path, fps: float, stop: threading.Event, max_s: float = 180.0):
    """A live source made of the clip on a loop, paced like a camera, until ``stop``."""
    index, start_time = 0, time.monotonic()
    while not stop.is_set() and time.monotonic() - start_time < max_s:
        for frame in read_frames(Source.parse(str(clip_path)), pace_fps=fps, stop=stop):
            frame.index = index
            index += 1
            yield frame


@pytest.mark.parametrize(
    ("transport", "policy"), [("rest", Policy.EVERY_FRAME), ("grpc", Policy.LATEST_FRAME)]
)
def test_server_restarted_mid_stream_client_recovers(own_server, clip_path, transport, policy):
    after_frames, wanted_after_restart = 10, 10
    results: list[FrameResult] = []
    restarted = threading.Event()
    restarter = threading.Thread(target=restart_when, args=(own_server, results, after_frames, restarted))
    config = StreamConfig(policy, max_in_flight=2, give_up_after=120, backoff=(0.25, 2.0, 2.0))
    inner = make_transport(transport, own_server.endpoints, own_server.tokens, ModelOptions())
    ok_after_restart: list[int] = []

    def stop_once_recovered(item: FrameResult) -> None:
        if restarted.is_set() and item.result is not None:
            ok_after_restart.append(item.frame.index)
            if len(ok_after_restart) >= wanted_after_restart and policy is Policy.LATEST_FRAME:
                runner.stop()

    runner = StreamRunner(inner, config, [results.append, stop_once_recovered])
    if policy is Policy.EVERY_FRAME:  # the clip once: every frame must come back, in order
        frames = read_frames(Source.parse(str(clip_path)), pace_fps=CLIP.fps, stop=runner.stop_event)
    else:  # a camera that keeps going while the server is away
        frames = camera(clip_path, CLIP.fps, runner.stop_event)
    restarter.start()
    try:
        stats = runner.run(frames)
    finally:
        restarter.join()
        inner.close()

    assert stats.reconnects >= 1
    assert ok_after_restart, "no frame processed after the restart"
    if policy is Policy.EVERY_FRAME:  # frames that failed during the outage were sent again
        assert stats.failed == 0 and stats.processed == CLIP.frame_count and stats.retries >= 1
        assert [r.frame.index for r in results] == list(range(CLIP.frame_count))
    else:  # stale frames are not worth re-sending: failed or dropped while the server was away
        assert len(ok_after_restart) >= wanted_after_restart and stats.dropped > 0
    assert hit_share(results) >= MIN_HIT_SHARE


def test_cli_headless_writes_video_jsonl_and_summary(server, clip_path, tmp_path):
    env = dict(os.environ)
    env |= {
        "TS_INFERENCE_URL": server.endpoints.inference,
        "TS_MANAGEMENT_URL": server.endpoints.management,
        "TS_GRPC_ADDRESS": server.endpoints.grpc_inference,
        "TS_KEY_FILE": str(server.tokens.key_file),
    }
    out = tmp_path / "annotated.avi"
    cmd = [sys.executable, "-m", "scripts.stream", str(clip_path), "--transport", "grpc", "--headless",
           "--max-frames", "30", "--resize", "480", "--jpeg-quality", "85", "--score-threshold", "0.6",
           "--output", str(out), "--jsonl", str(tmp_path / "f.jsonl"),
           "--summary-json", str(tmp_path / "s.json")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "frames: read 30, sent 30, dropped 0 (0.0%), failed 0, processed 30" in proc.stderr
    assert "p50" in proc.stderr and "p99" in proc.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["processed"] == 30 and summary["latency_ms"]["p99"] > 0
    lines = [json.loads(x) for x in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(30))
    # Sent at 480x360, reported in captured 640x480 pixels.
    boxes = [d["box"] for d in lines[0]["detections"]]
    assert all(any(iou(b, face) >= MIN_IOU for b in boxes) for face in CLIP.faces(0))
    assert all(d["score"] >= 0.6 for x in lines for d in x["detections"])
    video = cv2.VideoCapture(str(out))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (640, 480)
    video.release()


def test_cli_unknown_model_fails_fast_with_a_readable_error(server, clip_path):
    env = dict(os.environ) | {
        "TS_INFERENCE_URL": server.endpoints.inference,
        "TS_KEY_FILE": str(server.tokens.key_file),
    }
    cmd = [
        sys.executable,
        "-m",
        "scripts.stream",
        str(clip_path),
        "--headless",
        "--model",
        "nope",
        "--max-frames",
        "3",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "failed 3" in proc.stderr
