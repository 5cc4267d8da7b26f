"""Frame sources for the streaming client: camera index, video file, RTSP/HTTP URL or image folder.

Everything is a generator of :class:`Frame`; nothing holds more than one frame except the
:class:`LatestFrameMailbox`, which holds exactly one (the newest) for the latest-frame policy.

Live sources (camera, URL) that stop delivering are reopened with exponential backoff, and the
client says so on stderr; files and folders end at their last frame.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from scripts.paths import iter_images

__all__ = [
    "URL_SCHEMES",
    "Backoff",
    "Frame",
    "LatestFrameMailbox",
    "Source",
    "SourceKind",
    "camera_problem",
    "open_capture",
    "read_frames",
    "source_fps",
]

log = logging.getLogger("stream")

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class SourceKind(Enum):
    CAMERA = "camera"
    URL = "url"
    FILE = "file"
    FOLDER = "folder"

    @property
    def is_live(self) -> bool:
        """Live sources produce frames whether we read them or not: they default to latest-frame."""
        return self in (SourceKind.CAMERA, SourceKind.URL)


@dataclass(frozen=True)
class Source:
    spec: str
    kind: SourceKind

    @classmethod
    def parse(cls, spec: str) -> Source:
        """'0' -> camera 0, 'rtsp://...' -> URL, a directory -> image folder, else a video file."""
        if spec.isdigit():
            return cls(spec, SourceKind.CAMERA)
        if spec.lower().startswith(URL_SCHEMES):
            return cls(spec, SourceKind.URL)
        path = Path(spec)
        if path.is_dir():
            return cls(spec, SourceKind.FOLDER)
        if path.is_file():
            return cls(spec, SourceKind.FILE)
        raise ValueError(
            f"source {spec!r} is not a camera index (e.g. 0), a URL (rtsp://host/stream), "
            "an existing video file or an image folder"
        )


@dataclass
class Frame:
    index: int  # 0-based position in the source (frames skipped by reconnects are not counted)
    image: np.ndarray  # BGR uint8 (H, W, 3), as OpenCV delivers it
    captured_at: float  # wall clock (time.time), for logs and JSONL
    captured_mono: float  # time.monotonic(), for latency


class Backoff:
    """Exponential backoff: initial, initial*factor, ... capped at ``maximum`` seconds."""

    def __init__(self, initial: float = 0.5, factor: float = 2.0, maximum: float = 10.0) -> None:
        if initial <= 0 or factor < 1 or maximum < initial:
            raise ValueError("backoff needs initial > 0, factor >= 1 and maximum >= initial")
        self.initial, self.factor, self.maximum = initial, factor, maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def camera_problem(source: Source, devices: Path = Path("/dev")) -> str | None:
    """Why camera ``source`` cannot be opened, when that is known without opening it; else None.

    On Linux camera N is the V4L2 device /dev/videoN: when it does not exist, say so and list the
    cameras there are, instead of letting OpenCV print its own warnings for each attempt. Elsewhere
    (macOS, Windows) there is no such file to look at: None, and OpenCV is asked.
    """
    if source.kind is not SourceKind.CAMERA or not sys.platform.startswith("linux"):
        return None
    index = int(source.spec)
    if (devices / f"video{index}").exists():
        return None
    present = sorted(int(p.name[5:]) for p in devices.glob("video*") if p.name[5:].isdigit())
    found = ", ".join(f"{n} ({devices / f'video{n}'})" for n in present) or "none"
    return (
        f"camera {index} does not exist: there is no {devices / f'video{index}'} "
        f"(cameras found: {found}); pass another index, a video file or a stream URL"
    )


def open_capture(source: Source) -> cv2.VideoCapture:
    target: int | str = int(source.spec) if source.kind is SourceKind.CAMERA else source.spec
    capture = cv2.VideoCapture(target)
    if source.kind.is_live:
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver's own queue short (if supported)
    return capture


def source_fps(source: Source, default: float = 25.0) -> float:
    """Frames per second the source reports (folders and unknown rates: ``default``)."""
    if source.kind is SourceKind.FOLDER:
        return default
    capture = open_capture(source)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if 0 < fps < 1000 else default


def _folder_images(folder: Path) -> Iterator[np.ndarray]:
    for path in iter_images(folder, recursive=False):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("skipping %s: not a readable image", path)
            continue
        yield image


def _capture_images(
    source: Source, backoff: Backoff, give_up_after: float, stop: threading.Event
) -> Iterator[np.ndarray]:
    """Images from a VideoCapture; live sources are reopened with backoff when they go away."""
    capture = open_capture(source)
    lost_since: float | None = None
    try:
        while not stop.is_set():
            ok, image = capture.read() if capture.isOpened() else (False, None)
            if ok:
                if lost_since is not None:
                    log.warning("source %s is back after %.1fs", source.spec, time.monotonic() - lost_since)
                    lost_since = None
                    backoff.reset()
                yield image
                continue
            if not source.kind.is_live:
                if lost_since is None and not capture.isOpened():
                    raise ValueError(f"cannot open {source.spec}: not a video OpenCV can read")
                return  # end of file
            lost_since = lost_since or time.monotonic()
            if give_up_after and time.monotonic() - lost_since > give_up_after:
                raise ConnectionError(f"source {source.spec} gone for over {give_up_after:.0f}s; giving up")
            delay = backoff.next()
            log.warning("source %s delivers no frames; reconnecting in %.1fs", source.spec, delay)
            capture.release()
            if stop.wait(delay):
                return
            capture = open_capture(source)
    finally:
        capture.release()


def read_frames(
    source: Source,
    pace_fps: float | None = None,
    backoff: Backoff | None = None,
    give_up_after: float = 0.0,
    stop: threading.Event | None = None,
) -> Iterator[Frame]:
    """Frames of ``source`` in order. ``pace_fps`` replays a file or folder at that rate, like a camera.

    ``give_up_after`` (seconds, 0 = never) bounds how long a lost live source is retried.
    """
    stop = stop or threading.Event()
    if source.kind is SourceKind.FOLDER:
        images = _folder_images(Path(source.spec))
    else:
        images = _capture_images(source, backoff or Backoff(), give_up_after, stop)
    start = time.monotonic()
    for index, image in enumerate(images):
        if pace_fps:
            delay = start + index / pace_fps - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
        if stop.is_set():
            return
        yield Frame(index, image, time.time(), time.monotonic())


class LatestFrameMailbox:
    """Reads a frame generator on its own thread and keeps only the newest frame not yet taken.

    A frame replaced before anyone took it is *dropped*; ``dropped`` counts them. The reader never
    blocks on the consumer, so a slow server can never make the queue (and the latency) grow.
    """

    def __init__(self, frames: Iterator[Frame]) -> None:
        self._frames = frames
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._finished = False
        self._woken = False
        self.error: BaseException | None = None
        self.read = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)

    def start(self) -> LatestFrameMailbox:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for frame in self._frames:
                with self._cond:
                    self.read += 1
                    if self._slot is not None:
                        self.dropped += 1
                    self._slot = frame
                    self._cond.notify_all()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self.error = err
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest untaken frame, or None when the source has ended, :meth:`wake` was called
        or ``timeout`` passed."""
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._finished or self._woken, timeout)
            frame, self._slot, self._woken = self._slot, None, False
            return frame

    def wake(self) -> None:
        """Make a waiting :meth:`take` return now (e.g. a response arrived and wants handling)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._finished and self._slot is None

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reader thread; set the ``stop`` event given to read_frames first."""
        self._thread.join(timeout)
