"""Reproducible image sets for drift checks, built from public sample images (no download).

    python -m scripts.drift.images reference out/reference --count 120
    python -m scripts.drift.images dark out/dark --count 60 --seed 7

Sets:
    reference  faces (scripts/samples.py: astronaut, grace_hopper, camera) randomly cropped around
               the face, scaled to a longest side of 256-384 px, flipped, with mild brightness jitter
    live       the same recipe (use another ``--seed``): traffic like the reference
    dark       reference recipe, pixels multiplied by 0.35
    blur       reference recipe, Gaussian blur (sigma 3 px)
    small      reference recipe, then shrunk to a longest side of 64-96 px
    noface     the same recipe on images without faces (skimage coffee, chelsea, rocket)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from scripts.samples import Box, encode_jpeg, face_samples, no_face_samples

__all__ = ["SETS", "SHIFTS", "generate", "main"]

SETS = ("reference", "live", "dark", "blur", "small", "noface")


def _no_faces() -> list[tuple[np.ndarray, Box]]:
    """Face-free images, each with a 40 x 40 box at its centre that every crop keeps."""
    centred = []
    for image in no_face_samples():
        cx, cy = image.shape[1] // 2, image.shape[0] // 2
        centred.append((image, (cx - 20, cy - 20, cx + 20, cy + 20)))
    return centred


def _augment(image: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    scale = rng.uniform(0.6, 1.0)
    crop_w, crop_h = max(x2 - x1 + 8, int(width * scale)), max(y2 - y1 + 8, int(height * scale))
    left = int(rng.uniform(max(0, x2 + 4 - crop_w), min(x1 - 4, width - crop_w) + 1))
    top = int(rng.uniform(max(0, y2 + 4 - crop_h), min(y1 - 4, height - crop_h) + 1))
    crop = image[max(0, top) : top + crop_h, max(0, left) : left + crop_w]
    side = rng.uniform(256, 384)
    factor = side / max(crop.shape[:2])
    crop = cv2.resize(
        crop, (round(crop.shape[1] * factor), round(crop.shape[0] * factor)), interpolation=cv2.INTER_AREA
    )
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(crop * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)


def _dark(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (image * 0.35).astype(np.uint8)


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 3.0)


def _small(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = rng.uniform(64, 96) / max(image.shape[:2])
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "dark": _dark,
    "blur": _blur,
    "small": _small,
}


def generate(kind: str, count: int, seed: int = 0) -> Iterator[bytes]:
    """``count`` JPEG images of set ``kind`` (see the module docstring), reproducible from ``seed``."""
    if kind not in SETS:
        raise ValueError(f"unknown image set {kind!r}; choose one of {', '.join(SETS)}")
    rng = np.random.default_rng(seed)
    sources = _no_faces() if kind == "noface" else face_samples()
    for i in range(count):
        image, box = sources[i % len(sources)]
        augmented = _augment(image, box, rng)
        if kind in SHIFTS:
            augmented = SHIFTS[kind](augmented, rng)
        yield encode_jpeg(augmented, quality=int(rng.integers(80, 96)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.drift.images", description="Write a reproducible image set for drift checks."
    )
    parser.add_argument("kind", choices=SETS)
    parser.add_argument("out", type=Path, help="folder for the JPEG files")
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(generate(args.kind, args.count, args.seed)):
        (args.out / f"{args.kind}-{i:04d}.jpg").write_bytes(data)
    print(f"wrote {args.count} {args.kind} images to {args.out}")


if __name__ == "__main__":
    main()
