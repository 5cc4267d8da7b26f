"""A synthetic clip with exact ground truth: real faces moving along known paths over a face-free scene.

Faces: the astronaut and Grace Hopper (scripts/samples.py, public domain), cropped with context
around their known face boxes and pasted at known positions. Background: ``coffee()`` (no face).
Used by the stream tests and the benchmark in docs/streaming.md.

    python -m scripts.stream.synthetic build/faces.avi --seconds 10 --fps 25
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from scripts.samples import ASTRONAUT_FACE, GRACE_HOPPER_FACE, astronaut, coffee, grace_hopper

__all__ = ["CONTEXT", "Box", "Sprite", "SyntheticClip", "main"]

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (sub-pixel after scaling)
CONTEXT = 0.35  # margin around the face kept in the sprite, as a share of the face size


@dataclass(frozen=True)
class Sprite:
    image: np.ndarray  # BGR crop with context around the face
    face: Box  # face box inside the crop


def _sprite(image_rgb: np.ndarray, face: Box, scale: float) -> Sprite:
    x1, y1, x2, y2 = face
    mx, my = (x2 - x1) * CONTEXT, (y2 - y1) * CONTEXT
    h, w = image_rgb.shape[:2]
    cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    cx2, cy2 = min(w, int(x2 + mx)), min(h, int(y2 + my))
    crop = cv2.cvtColor(np.ascontiguousarray(image_rgb[cy1:cy2, cx1:cx2]), cv2.COLOR_RGB2BGR)
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return Sprite(crop, ((x1 - cx1) * scale, (y1 - cy1) * scale, (x2 - cx1) * scale, (y2 - cy1) * scale))


@dataclass(frozen=True)
class SyntheticClip:
    seconds: float = 10.0
    fps: float = 25.0
    width: int = 640
    height: int = 480

    @property
    def frame_count(self) -> int:
        return round(self.seconds * self.fps)

    @cached_property
    def background(self) -> np.ndarray:
        return cv2.resize(cv2.cvtColor(coffee(), cv2.COLOR_RGB2BGR), (self.width, self.height))

    @cached_property
    def sprites(self) -> tuple[Sprite, Sprite]:
        scale = self.height / 480
        return (
            _sprite(astronaut(), ASTRONAUT_FACE, 0.8 * scale),
            _sprite(grace_hopper(), GRACE_HOPPER_FACE, 0.45 * scale),
        )

    def positions(self, index: int) -> list[tuple[int, int]]:
        """Top-left corner of each sprite in frame ``index``: A goes left->right in the top half,
        B right->left in the bottom half, both bobbing on a sine."""
        t = index / max(1, self.frame_count - 1)  # 0..1 over the clip
        out = []
        for k, sprite in enumerate(self.sprites):
            sh, sw = sprite.image.shape[:2]
            span = self.width - sw - 20
            x = 10 + (t if k == 0 else 1 - t) * span
            band_top = 0 if k == 0 else self.height // 2
            slack = max(0, self.height // 2 - sh)
            y = band_top + slack * (0.5 + 0.5 * math.sin(2 * math.pi * (2 * t + k / 2)))
            out.append((round(x), round(y)))
        return out

    def faces(self, index: int) -> list[Box]:
        """Ground-truth face boxes in frame ``index``."""
        return [
            (x + s.face[0], y + s.face[1], x + s.face[2], y + s.face[3])
            for s, (x, y) in zip(self.sprites, self.positions(index))
        ]

    def frame(self, index: int) -> np.ndarray:
        image = self.background.copy()
        for sprite, (x, y) in zip(self.sprites, self.positions(index)):
            sh, sw = sprite.image.shape[:2]
            image[y : y + sh, x : x + sw] = sprite.image
        return image

    def frames(self) -> Iterator[np.ndarray]:
        for index in range(self.frame_count):
            yield self.frame(index)

    def write(self, path: Path, quality: int = 95) -> Path:
        """Motion-JPEG .avi (near-lossless, readable by every OpenCV build) or .mp4 (mp4v)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
        writer = cv2.VideoWriter(str(path), fourcc, self.fps, (self.width, self.height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path}")
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
        try:
            for image in self.frames():
                writer.write(image)
        finally:
            writer.release()
        return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic moving-faces clip.")
    parser.add_argument("out", type=Path, help=".avi (Motion JPEG) or .mp4")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", default="640x480", help="WxH")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = SyntheticClip(args.seconds, args.fps, width, height)
    print(f"wrote {clip.write(args.out)}: {clip.frame_count} frames {width}x{height} at {args.fps} fps")


if __name__ == "__main__":
    main()
