"""What the browser tests check against: which clip frame a sent JPEG (or a screenshot) is, and which
boxes the overlay draws.

The fake camera loops the clip at its own pace, so the page cannot say which clip frame it sent.
The JPEG it sent can: :class:`FrameFinder` compares it, shrunk to grey 80x60, with every frame of
the clip and returns the nearest, with the RMS difference (a few grey levels for a real match, tens
for a wrong one: the faces move ~4 px a frame). A screenshot has the overlay drawn over the picture:
:meth:`FrameFinder.find_picture` compares only the pixels the overlay leaves alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scripts.stream.synthetic import SyntheticClip
from tests.support.images import iou

__all__ = ["THUMB", "FrameFinder", "drawn_boxes", "faces_found", "overlay_mask"]

THUMB = (80, 60)  # width, height of the grey thumbnails frames are compared at


def _thumb(image_bgr: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)  # (60, 80)


@dataclass
class FrameFinder:
    clip: SyntheticClip

    def __post_init__(self) -> None:
        self.thumbs = np.stack([_thumb(frame) for frame in self.clip.frames()])  # (N, 60, 80)

    def find(self, jpeg: bytes) -> tuple[int, float]:
        """(index of the nearest clip frame, RMS grey difference to it) for one sent JPEG."""
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the page sent a body OpenCV cannot decode as an image")
        image = cv2.resize(image, (self.clip.width, self.clip.height), interpolation=cv2.INTER_AREA)
        rms = np.sqrt(((self.thumbs - _thumb(image)) ** 2).mean(axis=(1, 2)))  # (N,)
        index = int(rms.argmin())
        return index, float(rms[index])

    def find_picture(self, image_bgr: np.ndarray, keep: np.ndarray) -> tuple[int, float]:
        """(nearest clip frame, mean absolute grey difference to it) over the ``keep`` pixels of a
        screenshot of the video area, (H, W, 3) and (H, W) bool, at any scale."""
        size = (self.clip.width // 2, self.clip.height // 2)
        grey = cv2.resize(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA)
        kept = cv2.resize(keep.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        diffs = []
        for frame in self.clip.frames():
            reference = cv2.resize(
                cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA
            )
            diffs.append(np.abs(reference.astype(np.float32) - grey.astype(np.float32))[kept].mean())
        index = int(np.argmin(diffs))
        return index, float(diffs[index])


def faces_found(detections: list[dict], known: list[tuple[float, ...]], min_iou: float) -> bool:
    """True when every known face box has a detection at IoU >= ``min_iou``."""
    return all(any(iou(face, d["box"]) >= min_iou for d in detections) for face in known)


def overlay_mask(image_rgb: np.ndarray, color: tuple[int, int, int], tolerance: int = 60) -> np.ndarray:
    """(H, W) bool: pixels within ``tolerance`` of ``color`` on every channel (the overlay's boxes)."""
    return (np.abs(image_rgb.astype(np.int16) - np.array(color, np.int16)) <= tolerance).all(axis=2)


def drawn_boxes(mask: np.ndarray, scale: float = 1.0, min_side: float = 10.0) -> list[list[float]]:
    """Outline boxes drawn in ``mask`` (H, W) bool: the bounding box of each connected group of pixels
    whose sides are at least ``min_side`` screen pixels, in units of ``scale`` screen pixels."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, w, h, _area in stats[1:count]:  # row 0 is the background
        if w >= min_side and h >= min_side:
            boxes.append([x / scale, y / scale, (x + w) / scale, (y + h) / scale])
    return boxes
