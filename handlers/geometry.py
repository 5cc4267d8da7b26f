"""Box and landmark geometry shared by the detectors: shrink an image to the inference size, map
network coordinates back to the original image, clip them to it.

Coordinates are ``(..., 2k)`` arrays of x, y pairs: boxes ``(n, 4)`` as x1, y1, x2, y2, landmarks
``(n, 5, 2)``. Every function takes a numpy array or a torch tensor and returns the same kind, with
the arithmetic the detectors always used (divide by the scale, clamp at 0, then at the image size),
so results are bit-for-bit those of the code these functions replaced.
"""

from __future__ import annotations

from typing import TypeVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "clip_to_image",
    "shrink_array",
    "shrink_scale",
    "shrink_tensor",
    "shrunk_size",
    "to_original",
    "unshrink",
]

Coords = TypeVar("Coords", np.ndarray, torch.Tensor)


def shrink_scale(height: int, width: int, inference_size: int) -> float:
    """Network pixels per original pixel: the longest side goes down to ``inference_size``; images
    that already fit are never enlarged (scale 1.0)."""
    return min(1.0, inference_size / max(height, width))


def shrunk_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) after scaling by ``scale``, rounded, never a zero side (a 1 x 10000 strip stays 1 high)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_array(image: np.ndarray, inference_size: int) -> tuple[np.ndarray, float]:
    """(H, W, C) uint8 -> (h, w, C) with area interpolation (no aliasing when shrinking), and the
    scale; the input itself when it already fits."""
    height, width = image.shape[:2]
    scale = shrink_scale(height, width, inference_size)
    if scale < 1.0:
        h, w = shrunk_size(height, width, scale)
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)  # cv2 takes (width, height)
    return image, scale


def shrink_tensor(image: torch.Tensor, inference_size: int) -> tuple[torch.Tensor, float]:
    """(N, C, H, W) float -> (N, C, h, w), antialiased bilinear (the tensor counterpart of
    :func:`shrink_array`, on whatever device holds the image), and the scale."""
    height, width = image.shape[-2:]
    scale = shrink_scale(height, width, inference_size)
    if scale < 1.0:
        size = shrunk_size(height, width, scale)
        image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return image, scale


def _pairs(xy: Coords) -> Coords:
    """(..., 2k) -> (..., k, 2); spelled out so that empty inputs (0, 4) reshape too."""
    if xy.shape[-1] % 2:
        raise ValueError(f"coordinates come in x, y pairs: last dimension {xy.shape[-1]} is odd")
    return xy.reshape(*xy.shape[:-1], xy.shape[-1] // 2, 2)


def clip_to_image(xy: Coords, width: int, height: int) -> Coords:
    """(..., 2k) x, y pairs clipped to [0, width] x [0, height]; same shape and kind back."""
    pairs = _pairs(xy)
    if isinstance(xy, torch.Tensor):
        limits = torch.tensor([width, height], dtype=xy.dtype, device=xy.device)
        return torch.minimum(pairs.clamp(min=0), limits).reshape(xy.shape)
    limits = np.array([width, height], dtype=xy.dtype)
    return np.minimum(np.maximum(pairs, 0), limits).reshape(xy.shape)


def unshrink(xy: Coords, scale: float, width: int, height: int) -> Coords:
    """Coordinates in a shrunk image (see :func:`shrink_scale`) -> original pixels, clipped."""
    return clip_to_image(xy / scale, width, height)


def to_original(xy: Coords, network_hw: tuple[int, int], width: int, height: int) -> Coords:
    """Coordinates at network size ``(h, w)`` -> original pixels, clipped. Each axis is multiplied
    by original / network computed in float32, as torchvision's ``resize_boxes`` does, so that a
    detector resized per axis returns what the stock torchvision model returns."""
    net_h, net_w = network_hw
    if isinstance(xy, torch.Tensor):
        ratio = torch.tensor(width, dtype=torch.float32) / torch.tensor(net_w, dtype=torch.float32)
        ratio_h = torch.tensor(height, dtype=torch.float32) / torch.tensor(net_h, dtype=torch.float32)
        factors = torch.stack([ratio, ratio_h]).to(xy.device)
    else:
        factors = np.array([width, height], dtype=np.float32) / np.array([net_w, net_h], dtype=np.float32)
    return clip_to_image((_pairs(xy) * factors).reshape(xy.shape), width, height)
