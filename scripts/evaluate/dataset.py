"""A face evaluation set with exact ground truth, built reproducibly from images that ship in wheels.

Nothing is downloaded. Faces are real: the three sample photos of scripts/samples.py (astronaut,
Grace Hopper, the camera man; boxes checked by eye) and the 100 LFW faces of
``skimage.data.lfw_subset()`` (25 x 25 grey, tightly cropped: the face box is LFW_FACE of the crop,
the median box the reference detector draws on 20 of them, upscaled to 100 px). Each face is cut
with some context, scaled so that its box is 10-200 px wide (log-uniform: as many small faces as
large ones), optionally flipped and blurred, and pasted at a free spot of a face-free background
(scikit-image textures and photos) at 640x480, 1280x720 or 1920x1080. Whole frames are then
darkened at random (low light) and JPEG-encoded at quality 35-95. Face-free frames of the same
sizes (chelsea the cat, coffee, rocket, textures) measure false positives; the three sample photos
at their own size are the real-photo part.

Written as ``images/*.jpg`` + ``annotations.json`` (COCO detection format, category 1 ``face``;
each image carries ``kind``: composite, face_free or photo). The seed and the slice fix every pixel.

    python -m scripts.evaluate build --slice full          # -> build/eval/faces-full/
    python -m scripts.evaluate build --slice small --out /tmp/faces
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scripts import samples

__all__ = ["LFW_FACE", "RESOLUTIONS", "SLICES", "Slice", "build", "frames"]

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))  # width, height
LFW_FACE = (0.06, 0.0, 0.84, 0.96)  # face box in an LFW crop, as fractions of its side (x1, y1, x2, y2)
FACE_PX = (10, 200)  # pasted face width, log-uniform
CONTEXT = 0.25  # margin cut around a sample photo's face, as a fraction of the box side
BACKGROUNDS = (
    "coffee",
    "rocket",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
    "hubble_deep_field",
    "immunohistochemistry",
    "clock",
    "cell",
)
FACE_FREE = ("chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


@dataclass(frozen=True)
class Slice:
    composites: int  # per resolution
    face_free: int  # per resolution
    resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS
    photos: bool = True


# small: the served test (seconds); full: docs/accuracy.md (a few minutes on 2 CPU cores).
SLICES = {
    "small": Slice(composites=6, face_free=2, resolutions=RESOLUTIONS[:2]),
    "full": Slice(composites=24, face_free=4),
}


@dataclass(frozen=True)
class _Face:
    pixels: np.ndarray  # (h, w, 3) uint8 RGB crop with context
    box: tuple[float, float, float, float]  # the face inside the crop, x1, y1, x2, y2


@lru_cache
def _faces() -> tuple[_Face, ...]:
    from skimage import data

    faces = []
    for image, (x1, y1, x2, y2) in samples.face_samples():
        mx, my = CONTEXT * (x2 - x1), CONTEXT * (y2 - y1)
        cx1, cy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
        cx2, cy2 = min(image.shape[1], int(x2 + mx)), min(image.shape[0], int(y2 + my))
        faces.append(_Face(image[cy1:cy2, cx1:cx2].copy(), (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)))
    lfw = (data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are the faces
    for grey in lfw:
        side = grey.shape[0]
        faces.append(_Face(np.repeat(grey[:, :, None], 3, axis=2), tuple(f * side for f in LFW_FACE)))
    return tuple(faces)


def _rgb(name: str) -> np.ndarray:
    from skimage import data

    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _cover(image: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Scale ``image`` to cover width x height, then cut a random window of that size."""
    scale = max(width / image.shape[1], height / image.shape[0])
    w, h = math.ceil(image.shape[1] * scale), math.ceil(image.shape[0] * scale)
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x0, y0 = rng.integers(0, w - width + 1), rng.integers(0, h - height + 1)
    return resized[y0 : y0 + height, x0 : x0 + width].copy()


def _paste_face(
    canvas: np.ndarray, taken: list[tuple[int, ...]], rng: np.random.Generator
) -> list[float] | None:
    """Paste one random face; its COCO bbox (x, y, w, h) or None when no free spot was found."""
    faces = _faces()
    # Half the faces from the three photos (with context), half from LFW.
    face = faces[rng.integers(0, 3)] if rng.random() < 0.5 else faces[rng.integers(3, len(faces))]
    height, width = canvas.shape[:2]
    target = math.exp(rng.uniform(math.log(FACE_PX[0]), math.log(min(FACE_PX[1], height / 3))))
    fx1, fy1, fx2, fy2 = face.box
    scale = target / (fx2 - fx1)
    h, w = (max(1, round(s * scale)) for s in face.pixels.shape[:2])
    crop = cv2.resize(face.pixels, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    box = [fx1 * scale, fy1 * scale, fx2 * scale, fy2 * scale]
    if rng.random() < 0.5:  # mirror the crop and its box
        crop = crop[:, ::-1]
        box = [w - box[2], box[1], w - box[0], box[3]]
    if rng.random() < 0.3:  # defocus
        crop = cv2.GaussianBlur(np.ascontiguousarray(crop), (0, 0), rng.uniform(0.5, 1.5))
    if w >= width or h >= height:
        return None
    for _ in range(50):  # rejection sampling of a spot that overlaps no earlier crop
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if all(x + w <= a or a + c <= x or y + h <= b or b + d <= y for a, b, c, d in taken):
            canvas[y : y + h, x : x + w] = crop
            taken.append((x, y, w, h))
            return [x + box[0], y + box[1], box[2] - box[0], box[3] - box[1]]
    return None


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> tuple[bytes, int]:
    if rng.random() < 0.25:  # low light: darker and flatter
        gain, gamma = rng.uniform(0.25, 0.6), rng.uniform(1.0, 1.6)
        canvas = (255.0 * gain * (canvas / 255.0) ** gamma).clip(0, 255).astype(np.uint8)
    quality = int(rng.integers(35, 96))
    return samples.encode(canvas, "JPEG", quality=quality), quality


def frames(spec: Slice, seed: int = 0) -> Iterator[tuple[str, bytes, dict[str, Any], list[list[float]]]]:
    """(file name, JPEG bytes, image fields, face boxes x, y, w, h) for every image of the slice."""
    rng = np.random.default_rng(seed)
    for width, height in spec.resolutions:
        for index in range(spec.composites):
            canvas = _cover(_rgb(BACKGROUNDS[rng.integers(0, len(BACKGROUNDS))]), width, height, rng)
            taken: list[tuple[int, ...]] = []
            boxes = [b for _ in range(int(rng.integers(2, 9))) if (b := _paste_face(canvas, taken, rng))]
            data, quality = _finish(canvas, rng)
            fields = {"kind": "composite", "quality": quality}
            yield f"composite-{width}x{height}-{index:03d}.jpg", data, fields, boxes
        for index in range(spec.face_free):
            canvas = _cover(_rgb(FACE_FREE[index % len(FACE_FREE)]), width, height, rng)
            data, quality = _finish(canvas, rng)
            yield f"face_free-{width}x{height}-{index:03d}.jpg", data, {"kind": "face_free"}, []
    if spec.photos:
        names = ("astronaut", "grace_hopper", "camera")
        for name, (image, (x1, y1, x2, y2)) in zip(names, samples.face_samples()):
            yield f"photo-{name}.jpg", samples.encode(image), {"kind": "photo"}, [[x1, y1, x2 - x1, y2 - y1]]


def build(out: Path, spec: Slice, seed: int = 0) -> dict[str, Any]:
    """Write ``out/images/*.jpg`` and ``out/annotations.json``; returns the COCO dict."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "face"}]}
    for image_id, (name, data, fields, boxes) in enumerate(frames(spec, seed), start=1):
        (out / "images" / name).write_bytes(data)
        width, height = _size(data)
        coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height, **fields})
        for box in boxes:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [round(v, 2) for v in box],
                    "area": round(box[2] * box[3], 2),
                    "iscrowd": 0,
                }
            )
    (out / "annotations.json").write_text(json.dumps(coco, indent=1))
    return coco


def _size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size
