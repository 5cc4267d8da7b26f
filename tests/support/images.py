"""Real, public test images (scikit-image and matplotlib sample data) and hostile byte strings."""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image
from skimage import data as skdata
from torchvision.ops import box_iou

# Approximate face boxes (x1, y1, x2, y2) in the public images, from ../shared/WEIGHTS_AND_DATA.md.
ASTRONAUT_FACE = (177, 56, 272, 176)
GRACE_HOPPER_FACE = (177, 106, 353, 327)
CAMERA_FACE = (195, 113, 255, 194)


def encode(array: np.ndarray, fmt: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}) | params)
    return buffer.getvalue()


@lru_cache
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@lru_cache
def grace_hopper_bytes() -> bytes:
    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return handle.read()


def grace_hopper() -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(grace_hopper_bytes())).convert("RGB"))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose data is a few bytes (a decompression bomb probe)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


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
