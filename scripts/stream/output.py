"""Where stream results go: a window, an annotated video, a JSONL file (any combination).

Each sink is a callable taking one :class:`~scripts.stream.core.FrameResult`, in frame order.
JSON is written only here, at the edge: one line per processed or failed frame,
    {"frame": 12, "captured_at": 1764211200.123, "latency_ms": 84.2, "error": null,
     "detections": [{"label": "face", "score": 0.99, "box": [...], "landmarks": [...]}],
     "timings_ms": {"decode": ..., "preprocess": ..., "inference": ..., "postprocess": ...}}
with boxes in captured-frame pixels (after undoing ``--resize``).

The window (OpenCV's Qt window, so the client venv needs opencv-python, not the headless build)
opens at the frame's size with the first result: boxes with a "label score" tag, five landmarks per face,
and a status band "frame 12  24.9 fps  end-to-end 84 ms". q, Q or Esc quits, as does closing it.
:func:`display_problem` says beforehand why no window can open (headless OpenCV, no X server),
because Qt without a display aborts the whole process instead of raising.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from handlers.schema import Detection
from scripts.stream.core import FrameResult

__all__ = [
    "BOX_COLOR",
    "LABEL_COLOR",
    "LANDMARK_COLORS",
    "QUIT_KEYS",
    "STATUS_BAND",
    "STATUS_FONT",
    "TEXT_COLOR",
    "WINDOW_TITLE",
    "AnnotatedView",
    "FpsMeter",
    "JsonlSink",
    "annotate",
    "display_problem",
    "draw_detections",
    "frame_record",
    "label_origin",
    "put_status",
    "status_line",
    "window_support",
]

BOX_COLOR = (0, 220, 0)  # BGR; box outlines
# "label score" in black on a filled tag of its own colour (the browser page's #ffd400): readable over
# any scene, and apart from the box colour, so outlines stay outlines.
LABEL_COLOR = (0, 212, 255)  # BGR
LABEL_FONT = (cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)  # face, scale, thickness
LABEL_PAD = 3  # px of tag around the text
LANDMARK_COLORS = ((255, 0, 0), (0, 0, 255), (0, 255, 255), (255, 0, 255), (0, 128, 255))  # 5 points, BGR
TEXT_COLOR = (255, 255, 255)  # the status line, on a black band
ERROR_COLOR = (0, 0, 255)
STATUS_BAND = 28  # px: height of the black band the status line is written on (top left)
STATUS_FONT = (cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)  # face, scale, thickness: ~10 px per character
WINDOW_TITLE = "detections"
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # 27: Esc
HEADLESS_HINT = "or add --headless with --video-out video.mp4 and/or --jsonl frames.jsonl"


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


def label_origin(
    box: tuple[int, int, int, int], tag: tuple[int, int], frame: tuple[int, int], keep_clear: int = 0
) -> tuple[int, int]:
    """Top-left corner of a ``tag`` (width, height) for ``box`` (x1, y1, x2, y2) in a ``frame``
    (height, width): just above the box, left-aligned; below it when there is no room above or the
    tag would cover the status band (the top-left ``keep_clear`` px wide, STATUS_BAND high); inside
    its top edge when neither fits. Never on the box's 2 px outline, never off the frame."""
    x1, y1, x2, y2 = box
    width, height = tag
    frame_h, frame_w = frame
    x = min(max(0, x1 - 1), max(0, frame_w - width))
    in_band = x < keep_clear
    if y1 - 2 - height >= 0 and not (in_band and y1 - 2 - height < STATUS_BAND):
        return x, y1 - 2 - height
    if y2 + 2 + height <= frame_h:
        return x, y2 + 2
    return x, y1 + 2


def draw_detections(image: np.ndarray, detections: list[Detection], keep_clear: int = 0) -> None:
    """Boxes, 5 landmarks and "label score" tags drawn in place on a BGR image; tags stay off the
    top-left ``keep_clear`` px of the status band."""
    font, scale, thickness = LABEL_FONT
    for d in detections:
        x1, y1, x2, y2 = (round(v) for v in d.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOR, 2)
        label = f"{d.label} {d.score:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(label, font, scale, thickness)
        tag = (text_w + 2 * LABEL_PAD, text_h + baseline + 2 * LABEL_PAD)
        x, y = label_origin((x1, y1, x2, y2), tag, image.shape[:2], keep_clear)
        cv2.rectangle(image, (x, y), (x + tag[0] - 1, y + tag[1] - 1), LABEL_COLOR, -1)
        origin = (x + LABEL_PAD, y + LABEL_PAD + text_h)
        cv2.putText(image, label, origin, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        for (lx, ly), color in zip(d.landmarks or [], LANDMARK_COLORS):
            cv2.circle(image, (round(lx), round(ly)), 2, color, -1, cv2.LINE_AA)


def status_line(item: FrameResult, fps: float) -> str:
    """``frame 12  24.9 fps  end-to-end 84 ms``: what the status band of the window says."""
    return f"frame {item.frame.index}  {fps:.1f} fps  end-to-end {item.latency_ms:.0f} ms"


def put_status(image: np.ndarray, text: str) -> None:
    """The status line, white, at the top left of a BGR image (in place)."""
    font, scale, thickness = STATUS_FONT
    cv2.putText(image, text, (8, 19), font, scale, TEXT_COLOR, thickness, cv2.LINE_AA)


def annotate(item: FrameResult, fps: float) -> np.ndarray:
    """A copy of the frame with detections, and FPS and end-to-end latency on a black band (top left)
    that keeps them readable over any scene; a failed frame's error goes in red below the band."""
    image = item.frame.image.copy()
    status = status_line(item, fps)
    (width, _), _ = cv2.getTextSize(status, *STATUS_FONT)
    image[:STATUS_BAND, : width + 16] = 0  # under the boxes: a face at the top keeps its outline
    if item.result is not None:
        draw_detections(image, item.result.detections, keep_clear=width + 16)
    put_status(image, status)
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


def window_support() -> bool:
    """Whether this OpenCV build can open windows (opencv-python does, opencv-python-headless not)."""
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    return bool(gui) and gui[0].split(":", 1)[1].strip() != "NONE"


def _x_server_answers(display: str, timeout: float = 2.0) -> bool:
    """Whether an X server listens for ``display`` (``:0``, ``unix:1.0``, ``localhost:10.0``)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return True  # a form not known here (e.g. a launchd path): let the GUI library try it
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        addresses: list[str | tuple[str, int]] = ["\0" + path, path]  # Linux abstract socket, then file
    else:  # ssh -X forwards display N of host to TCP port 6000 + N
        addresses = [(host, 6000 + int(number))]
    for address in addresses:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return True
        except OSError:
            continue
    return False


def display_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why no window can be opened here, or None. On Linux the window needs an X server (Qt's xcb:
    the only platform opencv-python ships): without one Qt aborts the process, so say it first."""
    env = os.environ if environ is None else environ
    if not window_support():
        return (
            "this OpenCV build has no window support (opencv-python-headless): `make venv` installs "
            f"opencv-python (requirements-client.txt) in place of it, {HEADLESS_HINT}"
        )
    if not sys.platform.startswith("linux") or env.get("QT_QPA_PLATFORM"):
        return None
    display = env.get("DISPLAY", "")
    if not display:
        return (
            "no display to open the window on: DISPLAY is not set (run it in a desktop session, or over "
            f"ssh -X), {HEADLESS_HINT}"
        )
    if not _x_server_answers(display):
        return f"no X server answers on DISPLAY={display}: check DISPLAY, {HEADLESS_HINT}"
    return None


class AnnotatedView:
    """Annotates each result once (with a rolling FPS) and hands the image to a video and/or window.

    The window (``display``) opens at the frame's size and can be resized (the picture keeps its
    aspect ratio); q, Q or Esc in it, or closing it, sets ``quit_requested``.
    """

    def __init__(
        self, video_path: Path | None, video_fps: float, display: bool, title: str = WINDOW_TITLE
    ) -> None:
        self.video_path, self.video_fps, self.title = video_path, video_fps, title
        self.display = display
        self._writer: cv2.VideoWriter | None = None
        self._fps = FpsMeter()
        self._opened = False
        self.quit_requested = False
        if display and (problem := display_problem()):
            raise RuntimeError(problem)

    def __call__(self, item: FrameResult) -> None:
        image = annotate(item, self._fps.tick())
        if self.video_path is not None:
            self._write(image)
        if self.display:
            self._show(image)

    def _show(self, image: np.ndarray) -> None:
        if not self._opened:  # with the first result, at the frame's size (Qt's default is 400x300)
            # GUI_NORMAL: no Qt toolbar or status bar, so the window shows the frame and nothing else.
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            height, width = image.shape[:2]
            cv2.resizeWindow(self.title, width, height)
            self._opened = True
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1)  # also lets the GUI paint and handle events
        closed = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        if closed or (key != -1 and key & 0xFF in QUIT_KEYS):
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
        if self._opened:
            with contextlib.suppress(cv2.error):  # already closed by the user
                cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the GUI process the close before the process goes on or exits
