"""Where stream results go: a window, an annotated video, a JSONL file (any combination).

Each sink is a callable taking one :class:`~scripts.stream.core.FrameResult`, in frame order.
JSON is written only here, at the edge: one line per processed or failed frame,
    {"frame": 12, "captured_at": 1764211200.123, "latency_ms": 84.2, "error": null,
     "detections": [{"label": "face", "score": 0.99, "box": [...], "landmarks": [...]}],
     "timings_ms": {"decode": ..., "preprocess": ..., "inference": ..., "postprocess": ...}}
with boxes in captured-frame pixels (after undoing ``--resize``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from handlers.schema import Detection
from scripts.stream.core import FrameResult

BOX_COLOR = (0, 220, 0)  # BGR
LANDMARK_COLORS = ((255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 128, 255))
TEXT_COLOR = (255, 255, 255)
ERROR_COLOR = (0, 0, 255)


class FpsMeter:
    """Frames per second over the last ``window`` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        span = now - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


def draw_detections(image: np.ndarray, detections: list[Detection]) -> None:
    """Boxes, 5 landmarks and scores drawn in place on a BGR image."""
    for d in detections:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOR, 2)
        label = f"{d.label} {d.score:.2f}"
        cv2.putText(
            image, label, (x1, max(12, y1 - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, BOX_COLOR, 1, cv2.LINE_AA
        )
        for (x, y), color in zip(d.landmarks or [], LANDMARK_COLORS):
            cv2.circle(image, (round(x), round(y)), 2, color, -1, cv2.LINE_AA)


def annotate(item: FrameResult, fps: float) -> np.ndarray:
    """A copy of the frame with detections, FPS and end-to-end latency drawn on it."""
    image = item.frame.image.copy()
    if item.result is not None:
        draw_detections(image, item.result.detections)
    status = f"frame {item.frame.index}  {fps:.1f} fps  latency {item.latency_ms:.0f} ms"
    cv2.putText(image, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, TEXT_COLOR, 1, cv2.LINE_AA)
    if item.error:
        cv2.putText(
            image, item.error[:80], (8, 42), cv2.FONT_HERSHEY_SIMPLEX, 0.45, ERROR_COLOR, 1, cv2.LINE_AA
        )
    return image


def frame_record(item: FrameResult) -> dict:
    result = item.result
    return {
        "frame": item.frame.index,
        "captured_at": round(item.frame.captured_at, 6),
        "latency_ms": round(item.latency_ms, 2),
        "error": item.error,
        "detections": [d.to_json() for d in result.detections] if result else [],
        "timings_ms": result.to_json()["timings_ms"] if result else {},
    }


class JsonlSink:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("w", buffering=1)  # line-buffered: tail -f friendly

    def __call__(self, item: FrameResult) -> None:
        self._file.write(json.dumps(frame_record(item), separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


class AnnotatedView:
    """Annotates each result once (with a rolling FPS) and hands the image to a video and/or window."""

    def __init__(self, video_path: Path | None, video_fps: float, display: bool, title: str = "detections"):
        self.video_path, self.video_fps, self.title = video_path, video_fps, title
        self.display = display
        self._writer: cv2.VideoWriter | None = None
        self._fps = FpsMeter()
        self.quit_requested = False
        if display:
            try:
                cv2.namedWindow(title, cv2.WINDOW_NORMAL)
            except cv2.error:
                raise RuntimeError(
                    "this OpenCV build has no window support (opencv-python-headless): add --headless "
                    "with --output video.mp4 and/or --jsonl frames.jsonl, or install opencv-python"
                ) from None

    def __call__(self, item: FrameResult) -> None:
        image = annotate(item, self._fps.tick())
        if self.video_path is not None:
            self._write(image)
        if self.display:
            cv2.imshow(self.title, image)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):  # q or Esc
                self.quit_requested = True

    def _write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.video_path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.video_path.suffix.lower() == ".avi" else "mp4v"))
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.video_path), fourcc, self.video_fps, (width, height))
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {self.video_path}; use a .mp4 or .avi name")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        if self.display:
            cv2.destroyWindow(self.title)
