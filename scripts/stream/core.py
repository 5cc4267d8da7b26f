"""The streaming loop: frames in, bounded requests in flight, results out in frame order.

Frame policies (always an explicit choice; see docs/streaming.md):
- ``every-frame``: every frame is sent, in order. When ``max_in_flight`` requests are pending the
  loop stops reading until the oldest answers, so a slow server slows the reading (right for files).
  A frame whose request failed because the server went away is sent again once it is back.
- ``latest-frame``: a reader thread keeps only the newest frame; each free request slot takes the
  newest frame and older unsent ones are dropped. Latency stays bounded by
  ``max_in_flight`` x server time, whatever the source rate (right for cameras and streams).

Results are handed to the sinks in the order the frames were sent. When the server goes away
(nothing listening, model gone) the loop waits with exponential backoff, pinging until it answers,
and says so; ``give_up_after`` seconds (0 = never) ends the stream with :class:`StreamAborted`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

from handlers.schema import DetectionResult
from scripts.client import ClientError, ModelNotReady, ServerUnavailable
from scripts.latency import LatencyReservoir
from scripts.stream.frames import Backoff, Frame, LatestFrameMailbox
from scripts.stream.transport import EncodeOptions, Transport, encode_frame, scale_result

__all__ = [
    "FrameResult",
    "Policy",
    "StreamAborted",
    "StreamConfig",
    "StreamRunner",
    "StreamStats",
]

log = logging.getLogger("stream")


class Policy(Enum):
    LATEST_FRAME = "latest-frame"
    EVERY_FRAME = "every-frame"


class StreamAborted(RuntimeError):
    """The server stayed away for longer than ``give_up_after``."""


@dataclass
class FrameResult:
    frame: Frame
    result: DetectionResult | None  # in captured-frame pixels; None when the request failed
    error: str | None
    latency_ms: float  # capture -> response received (includes resize, encode, network, queue, model)
    sent_bytes: int


@dataclass
class _Outcome:
    result: DetectionResult | None
    error: ClientError | None
    done_mono: float
    sent_bytes: int


@dataclass
class _Pending:
    frame: Frame
    future: Future


@dataclass
class StreamStats:
    read: int = 0  # frames taken from the source
    sent: int = 0  # frames sent at least once
    dropped: int = 0  # read but never sent (latest-frame only)
    failed: int = 0  # sent but no detections in the end
    processed: int = 0  # detections received
    retries: int = 0  # re-sends of a frame after the server came back (every-frame only)
    reconnects: int = 0  # server outages survived
    max_in_flight: int = 0  # most requests pending at once (never above the configured bound)
    elapsed_s: float = 0.0
    latency: LatencyReservoir = field(default_factory=LatencyReservoir)

    @property
    def fps(self) -> float:
        return self.processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in ("read", "sent", "dropped", "failed", "processed")}
        out |= {"retries": self.retries, "reconnects": self.reconnects, "max_in_flight": self.max_in_flight}
        out |= {"elapsed_s": round(self.elapsed_s, 3), "fps": round(self.fps, 2)}
        out["dropped_share"] = round(self.dropped / self.read, 4) if self.read else 0.0
        # No processed frame, no latency: null in JSON (NaN is not JSON), "no frames processed" below.
        latency = self.latency.percentiles().items()
        out["latency_ms"] = {k: round(v, 1) if self.processed else None for k, v in latency}
        return out

    def summary(self) -> str:
        s, lat = self.to_json(), self.latency.percentiles()
        return (
            f"frames: read {s['read']}, sent {s['sent']}, dropped {s['dropped']} "
            f"({100 * s['dropped_share']:.1f}%), failed {s['failed']}, processed {s['processed']}\n"
            f"throughput: {s['fps']:.1f} fps over {s['elapsed_s']:.1f}s; max in flight {s['max_in_flight']}; "
            f"reconnects {s['reconnects']}, re-sent {s['retries']}\n"
            + (
                f"end-to-end latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}"
                if self.processed
                else "end-to-end latency ms: no frames processed"
            )
        )


@dataclass(frozen=True)
class StreamConfig:
    policy: Policy = Policy.LATEST_FRAME
    max_in_flight: int = 2  # requests pending at once; 1 = strictly sequential
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    give_up_after: float = 0.0  # seconds without a server before StreamAborted; 0 = retry forever
    backoff: tuple[float, float, float] = (0.5, 2.0, 10.0)  # initial s, factor, max s

    def __post_init__(self) -> None:
        if not 1 <= self.max_in_flight <= 64:
            raise ValueError(
                f"max_in_flight must be 1..64 (2-4 keeps a server busy), got {self.max_in_flight}"
            )


class StreamRunner:
    """Run frames through a transport under a policy; call the sinks with each :class:`FrameResult`."""

    def __init__(
        self,
        transport: Transport,
        config: StreamConfig,
        sinks: list[Callable[[FrameResult], None]] | None = None,
    ) -> None:
        self.transport = transport
        self.config = config
        self.sinks = sinks or []
        self.stats = StreamStats()
        self.stop_event = threading.Event()
        self._backoff = Backoff(*config.backoff)
        self._pending: deque[_Pending] = deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._recovered_at = float("-inf")
        self._ever_succeeded = False
        self._mailbox: LatestFrameMailbox | None = None
        self._executor = ThreadPoolExecutor(config.max_in_flight, thread_name_prefix="request")

    def stop(self) -> None:
        """Ask the loop to finish: pending requests are still awaited, no new frame is sent."""
        self.stop_event.set()
        if self._mailbox is not None:
            self._mailbox.wake()

    def run(self, frames: Iterator[Frame]) -> StreamStats:
        start = time.monotonic()
        try:
            if self.config.policy is Policy.EVERY_FRAME:
                self._run_every_frame(frames)
            else:
                self._run_latest_frame(frames)
        finally:
            self.stop_event.set()
            while self._pending:
                self._settle_head(resend=False)
            self._executor.shutdown(wait=True)
            self.stats.elapsed_s = time.monotonic() - start
        return self.stats

    # -- policies -----------------------------------------------------------------------------

    def _run_every_frame(self, frames: Iterator[Frame]) -> None:
        for frame in frames:
            while len(self._pending) >= self.config.max_in_flight:
                self._settle_head()
            if self.stop_event.is_set():
                break
            self.stats.read += 1
            self._submit(frame)
            self._settle_done()
        while self._pending and not self.stop_event.is_set():
            self._settle_head()

    def _run_latest_frame(self, frames: Iterator[Frame]) -> None:
        mailbox = self._mailbox = LatestFrameMailbox(frames).start()
        try:
            while not self.stop_event.is_set():
                self._settle_done()
                if len(self._pending) >= self.config.max_in_flight:
                    self._settle_head()
                    continue
                frame = mailbox.take(timeout=1.0)
                if frame is not None:
                    self._submit(frame)
                elif mailbox.finished:
                    break
        finally:
            self.stop_event.set()
            mailbox.join()
            self.stats.read, self.stats.dropped = mailbox.read, mailbox.dropped
        if mailbox.error is not None:
            raise mailbox.error

    # -- requests -----------------------------------------------------------------------------

    def _submit(self, frame: Frame, resend: bool = False) -> None:
        with self._lock:
            self._in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        future = self._executor.submit(self._request, frame)
        if self._mailbox is not None:
            future.add_done_callback(lambda _: self._mailbox.wake())
        if resend:
            self.stats.retries += 1
            self._pending[0].future = future
        else:
            self.stats.sent += 1
            self._pending.append(_Pending(frame, future))

    def _request(self, frame: Frame) -> _Outcome:
        """Runs on a request thread: resize, encode, send, map back to captured pixels."""
        sent = 0
        try:
            data, (sx, sy) = encode_frame(frame.image, self.config.encode)
            sent = len(data)
            result = scale_result(self.transport.detect(data), sx, sy)
            return _Outcome(result, None, time.monotonic(), sent)
        except ClientError as err:
            return _Outcome(None, err, time.monotonic(), sent)
        except Exception as err:  # noqa: BLE001 - one frame's failure is reported, never kills the stream
            wrapped = ClientError(f"{type(err).__name__}: {err}")
            return _Outcome(None, wrapped, time.monotonic(), sent)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _settle_done(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._settle_head()

    def _settle_head(self, resend: bool = True) -> None:
        """Wait for the oldest request; emit its result (or re-send it once the server is back)."""
        pending = self._pending[0]
        outcome: _Outcome = pending.future.result()
        if outcome.error is not None and resend and self._is_outage(outcome.error):
            if outcome.done_mono > self._recovered_at:  # failed after the last recovery: still down
                self._wait_for_server(outcome.error)
            if self.config.policy is Policy.EVERY_FRAME and not self.stop_event.is_set():
                self._submit(pending.frame, resend=True)
                return
        self._pending.popleft()
        self._emit(pending.frame, outcome)

    def _is_outage(self, error: ClientError) -> bool:
        # An unknown model before anything worked is a mistake in the command line, not an outage.
        return isinstance(error, ServerUnavailable) or (
            isinstance(error, ModelNotReady) and self._ever_succeeded
        )

    def _wait_for_server(self, error: ClientError) -> None:
        lost = time.monotonic()
        log.warning("server unavailable (%s); reconnecting", error)
        while not self.stop_event.is_set():
            waited = time.monotonic() - lost
            if self.config.give_up_after and waited > self.config.give_up_after:
                raise StreamAborted(
                    f"server gone for {waited:.0f}s (give-up after {self.config.give_up_after:.0f}s)"
                )
            delay = self._backoff.next()
            log.warning("retrying the server in %.1fs", delay)
            if self.stop_event.wait(delay):
                return
            try:
                self.transport.ping()
            except ClientError as err:
                log.info("server still unavailable: %s", err)
                continue
            self._recovered_at = time.monotonic()
            self.stats.reconnects += 1
            log.warning("server answers again after %.1fs", self._recovered_at - lost)
            return

    def _emit(self, frame: Frame, outcome: _Outcome) -> None:
        latency_ms = (outcome.done_mono - frame.captured_mono) * 1000.0
        if outcome.error is None:
            self.stats.processed += 1
            self.stats.latency.add(latency_ms)
            self._ever_succeeded = True
            self._backoff.reset()
        else:
            self.stats.failed += 1
            log.warning("frame %d failed: %s", frame.index, outcome.error)
        error = None if outcome.error is None else str(outcome.error)
        item = FrameResult(frame, outcome.result, error, latency_ms, outcome.sent_bytes)
        for sink in self.sinks:
            sink(item)
