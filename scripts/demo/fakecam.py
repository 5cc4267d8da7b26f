"""The synthetic moving-faces clip (scripts/stream/synthetic.py) as a Y4M file for Chromium's fake camera.

Chromium plays ``--use-file-for-fake-video-capture=<file>.y4m`` as the camera, in a loop, at the
file's frame rate. Y4M is a text header and raw planar YUV 4:2:0 frames (I420: Y plane, then U and V
at half resolution), exactly what ``cv2.COLOR_BGR2YUV_I420`` produces, so no encoder is needed.
The file is big (640x480: 460,800 bytes a frame, 55 MB for 4 s at 30 fps); keep clips short.

    python -m scripts.demo.fakecam build/demo/faces.y4m --seconds 4 --fps 30
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import cv2

from scripts.stream.synthetic import SyntheticClip

__all__ = ["DEMO_CLIP", "main", "write_y4m"]

# The clip the browser tests and scripts/demo/measure.py play: 640x480 at 30 fps, like a webcam;
# 4 s = 120 frames, so the faces move ~4 px a frame and every frame is told apart by its content.
DEMO_CLIP = SyntheticClip(seconds=4.0, fps=30.0, width=640, height=480)


def write_y4m(clip: SyntheticClip, path: Path) -> Path:
    """Write every frame of ``clip`` to ``path`` as Y4M 4:2:0 (width and height must be even)."""
    if clip.width % 2 or clip.height % 2:
        raise ValueError(f"Y4M 4:2:0 needs an even width and height, got {clip.width}x{clip.height}")
    rate = Fraction(clip.fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        size, frame_rate = f"W{clip.width} H{clip.height}", f"F{rate.numerator}:{rate.denominator}"
        out.write(f"YUV4MPEG2 {size} {frame_rate} Ip A1:1 C420jpeg\n".encode())  # progressive, square pixels
        for image in clip.frames():
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())  # (H * 3/2, W) uint8
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.demo.fakecam", description="Write the synthetic moving-faces clip as Y4M."
    )
    parser.add_argument("out", type=Path, help="the .y4m file to write")
    parser.add_argument("--seconds", type=float, default=DEMO_CLIP.seconds)
    parser.add_argument("--fps", type=float, default=DEMO_CLIP.fps)
    args = parser.parse_args(argv)
    clip = SyntheticClip(args.seconds, args.fps, DEMO_CLIP.width, DEMO_CLIP.height)
    print(f"wrote {write_y4m(clip, args.out)}: {clip.frame_count} frames {clip.width}x{clip.height}")


if __name__ == "__main__":
    main()
