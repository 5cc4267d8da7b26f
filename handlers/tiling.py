"""Overlapping tiles for the small-face mode: grid geometry, mapping back, and the merge rule.

A frame the network sees at ``scale`` is also cut, at ``TILE_ZOOM`` times that scale, into tiles of
one common size that overlap by at least ``overlap`` pixels, so that every face narrower than the
overlap lies whole inside some tile. All tiles of a frame share one shape, so they go through the
network as one batch. A tile detection that touches a tile edge inside the frame is a face cut by
that edge: it is dropped, since the neighbouring tile (or the full-frame pass) sees the face whole.
What is left is merged with the full-frame pass by NMS (torchvision.ops).

    tile_spans(1440, tile=640, overlap=64, multiple=32)  # [(0, 544), (448, 992), (896, 1440)]
    tile_grid(1440, 2560, multiple=32)  # 15 tiles of 576 x 544: a 1280x720 frame at zoom 2
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "TILE_OVERLAP",
    "TILE_SIZE",
    "TILE_ZOOM",
    "cut_by_tile_edge",
    "from_tile",
    "tile_grid",
    "tile_spans",
]

TILE_ZOOM = 2.0  # tiles see the frame at twice the full pass's scale: a 12 px face becomes 24 px,
#                  above the network's smallest anchor (16 px)
TILE_SIZE = 640  # tile side at tile scale, at most: 640 x 640 is the network's usual input
TILE_OVERLAP = 64  # pixels at tile scale (32 at full-pass scale): faces narrower are whole in a tile


def tile_spans(length: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """[start, end) spans of equal size covering ``[0, length)``, neighbours overlapping >= ``overlap``.

    As few tiles as the overlap allows, all of one size (the smallest that still fits, rounded up
    to ``multiple`` but never over ``length``), spread evenly: the first starts at 0, the last ends
    at ``length``. One span when ``length <= tile``.
    """
    if length <= 0 or tile <= overlap or overlap < 0:
        raise ValueError(f"need length > 0 and tile > overlap >= 0, got {length}, {tile}, {overlap}")
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = min(length, -(-size // multiple) * multiple)
    step = (length - size) / (count - 1)
    return [(round(i * step), round(i * step) + size) for i in range(count)]


def tile_grid(
    height: int, width: int, tile: int = TILE_SIZE, overlap: int = TILE_OVERLAP, multiple: int = 1
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of every tile, row by row; every tile has the same size."""
    rows = tile_spans(height, tile, overlap, multiple)
    cols = tile_spans(width, tile, overlap, multiple)
    return [(x0, y0, x1, y1) for y0, y1 in rows for x0, x1 in cols]


def from_tile(xy: torch.Tensor, origin: tuple[int, int], zoom: float) -> torch.Tensor:
    """(..., 2k) x, y pairs in tile pixels -> full-pass pixels: add the tile's origin (x0, y0) at
    tile scale, then divide by ``zoom`` (tile scale / full-pass scale)."""
    offset = torch.tensor(origin, dtype=xy.dtype, device=xy.device).repeat(xy.shape[-1] // 2)
    return (xy + offset) / zoom


def cut_by_tile_edge(
    boxes: torch.Tensor, tile: tuple[int, int, int, int], height: int, width: int, margin: float = 2.0
) -> torch.Tensor:
    """(n,) bool: boxes (n, 4) in tile pixels that reach within ``margin`` of an edge of ``tile``
    that lies inside the frame (height x width, tile scale). Frame edges do not count: a face
    there is cut by the frame itself, and no other tile sees more of it."""
    x0, y0, x1, y1 = tile
    w, h = x1 - x0, y1 - y0
    cut = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    if x0 > 0:
        cut |= boxes[:, 0] <= margin
    if y0 > 0:
        cut |= boxes[:, 1] <= margin
    if x1 < width:
        cut |= boxes[:, 2] >= w - margin
    if y1 < height:
        cut |= boxes[:, 3] >= h - margin
    return cut
