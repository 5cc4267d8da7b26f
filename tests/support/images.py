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
]


def iou(a, b) -> float:
    """IoU of two x1, y1, x2, y2 boxes (torchvision.ops.box_iou)."""
    return float(
        box_iou(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))[0, 0]
    )


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
