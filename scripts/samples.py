"""Public sample images with known faces, and the helpers that turn arrays into request bodies.

One home for the images the tests, the synthetic stream clip (scripts/stream/synthetic.py), the
drift image sets (scripts/drift/images.py) and the benchmarks send: nothing is downloaded, all come
with scikit-image and matplotlib and are public domain.

    astronaut     skimage.data.astronaut(), RGB 512x512, one face at ASTRONAUT_FACE
    grace_hopper  matplotlib's grace_hopper.jpg, RGB 512 wide x 600 high, one face at GRACE_HOPPER_FACE
    camera        skimage.data.camera() as RGB 512x512 (grey in 3 channels), one small face at CAMERA_FACE
    no faces      skimage coffee, chelsea (a cat) and rocket

Face boxes are (x1, y1, x2, y2) in source pixels, approximate: tests compare detections with them
by IoU, never by equality.

    >>> from scripts.samples import ASTRONAUT_FACE, astronaut, encode
    >>> astronaut().shape, ASTRONAUT_FACE, encode(astronaut())[:2]
    ((512, 512, 3), (177, 56, 272, 176), b'\\xff\\xd8')
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = [
    "ASTRONAUT_FACE",
    "CAMERA_FACE",
    "GRACE_HOPPER_FACE",
    "Box",
    "astronaut",
    "camera",
    "coffee",
    "encode",
    "encode_jpeg",
    "face_samples",
    "grace_hopper",
    "grace_hopper_bytes",
    "no_face_samples",
    "png_claiming",
    "sample_jpeg",
]

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels

ASTRONAUT_FACE: Box = (177, 56, 272, 176)
GRACE_HOPPER_FACE: Box = (177, 106, 353, 327)
CAMERA_FACE: Box = (195, 113, 255, 194)


# Cached: every caller gets the same array, so callers must copy before writing into one.
@lru_cache
def astronaut() -> np.ndarray:
    """RGB uint8 (512, 512, 3)."""
    from skimage import data

    return data.astronaut()


@lru_cache
def grace_hopper_bytes() -> bytes:
    """The JPEG file as shipped with matplotlib."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return handle.read()


def grace_hopper() -> np.ndarray:
    """RGB uint8 (600, 512, 3), decoded afresh on each call."""
    return np.asarray(Image.open(io.BytesIO(grace_hopper_bytes())).convert("RGB"))


def camera() -> np.ndarray:
    """skimage's grey camera man as RGB uint8 (512, 512, 3), the grey value in all three channels."""
    from skimage import data

    return np.repeat(data.camera()[:, :, None], 3, axis=2)


def coffee() -> np.ndarray:
    """RGB uint8 (400, 600, 3), a cup of coffee: a face-free background."""
    from skimage import data

    return data.coffee()


def face_samples() -> list[tuple[np.ndarray, Box]]:
    """(RGB image, face box) of astronaut, grace_hopper and camera, in that order."""
    return [(astronaut(), ASTRONAUT_FACE), (grace_hopper(), GRACE_HOPPER_FACE), (camera(), CAMERA_FACE)]


def no_face_samples() -> list[np.ndarray]:
    """RGB images without a face: coffee, chelsea (a cat), rocket."""
    from skimage import data

    return [data.coffee(), data.chelsea(), data.rocket()]


def encode(array: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    """RGB (H, W, 3) or grey (H, W) uint8 -> file bytes in ``fmt`` (any Pillow format name).

    JPEG defaults to quality 95; ``params`` go to Pillow's ``save`` and override it.
    """
    buffer = io.BytesIO()
    options = ({"quality": 95} if fmt == "JPEG" else {}) | params
    # Pillow needs C-contiguous memory; flips and crops are views with other strides.
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """RGB (H, W, 3) uint8 -> JPEG bytes at ``quality``."""
    return encode(image, "JPEG", quality=quality)


def sample_jpeg(width: int = 640, height: int = 480) -> bytes:
    """The astronaut resized to width x height (area interpolation), JPEG quality 90: the benchmark body."""
    import cv2

    return encode_jpeg(cv2.resize(astronaut(), (width, height), interpolation=cv2.INTER_AREA))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """length (big-endian u32), type, payload, CRC-32 of type + payload: one PNG chunk."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose data is a few bytes (a decompression bomb probe)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    signature = b"\x89PNG\r\n\x1a\n"
    idat = zlib.compress(b"\x00" * 16)
    return signature + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
