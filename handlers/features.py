"""Per-request features watched for drift: statistics of the input image and of the detections.

Input features are computed on a small grey copy (longest side at most ``WORK_SIDE`` px) so that
their cost stays small whatever the image size.

    width, height   decoded size in pixels (after EXIF rotation)
    brightness      mean grey level, 0..255
    contrast        standard deviation of the grey levels, 0..~128
    sharpness       variance of the Laplacian of the grey copy (blur lowers it sharply)

Output features, from the detections of one image:

    detections      number of detections kept (after threshold, NMS and max_detections)
    score           score of each detection (one sample per detection)
    box_size        sqrt(box area) / shorter image side, one sample per detection

The same functions serve the handler (metrics and the feature log), the reference profile and the
drift tool, so reference and live values are computed identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from handlers.schema import Detection

__all__ = [
    "GREY_WEIGHTS",
    "INPUT_FEATURES",
    "OUTPUT_FEATURES",
    "PER_DETECTION",
    "WORK_SIDE",
    "grey_thumbnail",
    "image_size",
    "input_features",
    "output_features",
]

WORK_SIDE = 256  # longest side of the grey copy the input statistics are computed on
INPUT_FEATURES = ("width", "height", "brightness", "contrast", "sharpness")
OUTPUT_FEATURES = ("detections", "score", "box_size")
PER_DETECTION = ("score", "box_size")  # one sample per detection instead of one per image
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY


def _factor(height: int, width: int, side: int) -> int:
    """Integer shrink factor that brings the longest side to at most ``side`` (1 = keep)."""
    return max(1, -(-max(height, width) // side))


def grey_thumbnail(image: np.ndarray | torch.Tensor, side: int = WORK_SIDE) -> np.ndarray:
    """RGB or grey uint8 (H, W[, 3]), or an RGB uint8 tensor (3, H, W) on any device -> grey uint8
    numpy array, shrunk by averaging f x f pixel blocks (f integer) to a longest side <= ``side``.
    Block averaging is exact on both paths, so arrays and tensors give the same statistics."""
    if isinstance(image, torch.Tensor):
        return _tensor_grey_thumbnail(image, side)
    height, width = image.shape[:2]
    f = _factor(height, width, side)
    if f > 1:
        image = image[: height // f * f, : width // f * f]
        size = (max(1, width // f), max(1, height // f))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)  # integer factor: block means
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return image


def _tensor_grey_thumbnail(image: torch.Tensor, side: int) -> np.ndarray:
    # Shrink on the tensor's device first so that only the thumbnail crosses to the host.
    height, width = image.shape[-2:]
    f = _factor(int(height), int(width), side)
    pixels = image[:, : height // f * f, : width // f * f].unsqueeze(0).float()  # (1, 3, H', W')
    if f > 1:
        pixels = torch.nn.functional.avg_pool2d(pixels, f)
    pixels = pixels.round()  # the numpy path rounds the shrunk RGB to uint8 too
    weights = torch.tensor(GREY_WEIGHTS, device=pixels.device).view(1, 3, 1, 1)
    grey = (pixels * weights).sum(dim=1)[0].round().clamp(0, 255)
    return grey.to(torch.uint8).cpu().numpy()


def image_size(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """(width, height) of an (H, W[, 3]) array or a (3, H, W) tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return int(image.shape[1]), int(image.shape[0])


def input_features(image: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Statistics of one decoded image: RGB uint8 (H, W, 3) array or (3, H, W) tensor."""
    width, height = image_size(image)
    grey = grey_thumbnail(image)
    mean, std = cv2.meanStdDev(grey)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    return {
        "width": float(width),
        "height": float(height),
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "sharpness": float(laplacian.var()),
    }


def output_features(detections: Sequence[Detection], width: int, height: int) -> dict[str, object]:
    """``detections`` (a count) and the per-detection ``score`` and ``box_size`` lists of one image."""
    short_side = max(1, min(width, height))
    sizes = []
    for det in detections:
        x1, y1, x2, y2 = det.box
        sizes.append(math.sqrt(max(0.0, x2 - x1) * max(0.0, y2 - y1)) / short_side)
    return {
        "detections": float(len(detections)),
        "score": [float(det.score) for det in detections],
        "box_size": sizes,
    }
