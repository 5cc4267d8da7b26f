"""Real, public test images and hostile bodies (scripts/samples.py, re-exported here), box IoU, bad inputs."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from scripts.samples import (
    ASTRONAUT_FACE,
    CAMERA_FACE,
    GRACE_HOPPER_FACE,
    astronaut,
    camera,
    encode,
    grace_hopper,
    grace_hopper_bytes,
    png_claiming,
)

__all__ = [
    "ASTRONAUT_FACE",
    "BAD_INPUTS",
    "CAMERA_FACE",
    "GRACE_HOPPER_FACE",
    "TRUNCATED_JPEG",
    "astronaut",
    "camera",
    "encode",
    "grace_hopper",
    "grace_hopper_bytes",
    "iou",
    "png_claiming",
    "tiny_faces_jpeg",
]


def iou(a, b) -> float:
    """IoU of two x1, y1, x2, y2 boxes (torchvision.ops.box_iou)."""
    return float(
        box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))[0, 0]
    )


def tiny_faces_jpeg(face_px: int = 12, size: tuple[int, int] = (640, 480)) -> bytes:
    """The three sample photos shrunk so each face is ``face_px`` wide, side by side on grey, as a JPEG.

    At 12 px face_detector 2.0 finds none of them in its full-frame pass and all three with
    ``small_faces`` (measured in-process: 0 vs 3 detections, scores 0.91-0.99): a frame on which the
    setting changes the answer.
    """
    from PIL import Image

    from scripts.samples import face_samples

    canvas = np.full((size[1], size[0], 3), 128, np.uint8)  # (H, W, 3)
    x = 20
    for image, box in face_samples():
        scale = face_px / (box[2] - box[0])
        shrunk = (round(image.shape[1] * scale), round(image.shape[0] * scale))  # (W, H)
        small = np.asarray(Image.fromarray(image).resize(shrunk, Image.LANCZOS))
        canvas[100 : 100 + small.shape[0], x : x + small.shape[1]] = small
        x += small.shape[1] + 40
    return encode(canvas)


# Bad inputs every served model must refuse alike: name -> (body, status, words of the message).
TRUNCATED_JPEG = encode(astronaut())[:5000]
BAD_INPUTS = {
    "empty body": (b"", 400, "empty request body"),
    "non-image bytes": (b"this is plainly not an image" * 10, 415, "not a recognised image"),
    "truncated jpeg": (TRUNCATED_JPEG, 400, "cannot decode JPEG"),
    "png claiming 30000x30000": (png_claiming(30000, 30000), 413, "900000000 pixels"),
    "png claiming 12000x9000": (png_claiming(12000, 9000), 413, "12000x9000"),
    "gif": (encode(np.zeros((8, 8, 3), np.uint8), "GIF"), 415, "GIF is not accepted"),
}
