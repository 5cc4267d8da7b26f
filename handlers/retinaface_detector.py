"""RetinaFace mobile0.25 as a :class:`~handlers.pipeline.Detector`: letterbox-free resize, padding
to a stride multiple, size-grouped batching, prior decoding and NMS (torchvision.ops).

With ``small_faces`` (setting or per-request option) each frame is also cut into overlapping tiles
at twice the full pass's scale (handlers/tiling.py); a frame's tiles share one forward pass, and
their detections are mapped back and merged with the full frame's by NMS."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import nms

from handlers.geometry import shrink_array, shrink_tensor, unshrink
from handlers.pipeline import Detector
from handlers.retinaface import RetinaFace
from handlers.schema import Detection
from handlers.settings import DetectorSettings
from handlers.tensor_decode import host_staging
from handlers.tiling import TILE_OVERLAP, TILE_SIZE, TILE_ZOOM, cut_by_tile_edge, from_tile, tile_grid

__all__ = [
    "ANCHOR_SIZES",
    "PAD_MULTIPLE",
    "STRIDES",
    "OnnxRuntimeForward",
    "PreparedImage",
    "RetinaFaceDetector",
    "Tiles",
    "anchor_grid",
    "decode_boxes",
    "decode_landmarks",
]

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
MEAN_BGR_CHW = MEAN_BGR.reshape(3, 1, 1)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))  # pixels, per pyramid level
VARIANCES = (0.1, 0.2)  # centre, size
PAD_MULTIPLE = 32  # coarsest stride: every level's grid covers the canvas exactly
PRE_NMS_TOP_K = 5000
TILE_MAX_FACE = 64  # full-pass pixels: wider tile detections are dropped (the full pass finds those)
MAX_FORWARD_BATCH = 32  # tiles (or images) per forward pass at most: bounds activation memory
LABEL = "face"


@dataclass
class Tiles:
    """One frame's tiles for the small-face mode, all of one shape."""

    tensor: torch.Tensor  # (n, 3, Th, Tw) float32, mean-subtracted BGR, zero-padded bottom/right
    grid: list[tuple[int, int, int, int]]  # (x0, y0, x1, y1) per tile in the zoomed frame's pixels
    frame_hw: tuple[int, int]  # zoomed frame size
    zoom: float = TILE_ZOOM  # zoomed frame pixels per full-pass pixel


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # (3, Hc, Wc) float32, mean-subtracted BGR, zero-padded bottom/right
    scale: float  # network pixels per original pixel (<= 1)
    width: int  # original size
    height: int
    tiles: Tiles | None = field(default=None)  # small-face mode only


@lru_cache(maxsize=32)
def anchor_grid(canvas_h: int, canvas_w: int, device: str) -> torch.Tensor:
    """(A, 4) anchors as (cx, cy, w, h) in canvas pixels, in the heads' output order."""
    per_level = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = -(-canvas_h // stride), -(-canvas_w // stride)
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float32) + 0.5) * stride,
            (torch.arange(cols, dtype=torch.float32) + 0.5) * stride,
            indexing="ij",
        )
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(sizes), 2)
        wh = torch.tensor(sizes, dtype=torch.float32).reshape(1, -1, 1).expand(rows * cols, -1, 2)
        per_level.append(torch.cat([centres, wh], dim=-1).reshape(-1, 4))  # 2 anchors per cell
    return torch.cat(per_level).to(device)


def decode_boxes(loc: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(A, 4) offsets -> (A, 4) x1, y1, x2, y2."""
    centre = anchors[:, :2] + loc[:, :2] * VARIANCES[0] * anchors[:, 2:]
    size = anchors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(landm: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(A, 10) offsets -> (A, 5, 2) points."""
    offsets = landm.reshape(-1, 5, 2)
    return anchors[:, None, :2] + offsets * VARIANCES[0] * anchors[:, None, 2:]


def _canvas_size(h: int, w: int) -> tuple[int, int]:
    return -(-h // PAD_MULTIPLE) * PAD_MULTIPLE, -(-w // PAD_MULTIPLE) * PAD_MULTIPLE


def _cut_tiles(frame: torch.Tensor) -> Tiles:
    """(3, H, W) mean-subtracted BGR zoomed frame -> its tiles, stacked and padded to a stride multiple."""
    _, height, width = frame.shape
    grid = tile_grid(height, width, TILE_SIZE, TILE_OVERLAP, PAD_MULTIPLE)
    x0, y0, x1, y1 = grid[0]
    canvas_h, canvas_w = _canvas_size(y1 - y0, x1 - x0)  # every tile has the first one's size
    tiles = frame.new_zeros((len(grid), 3, canvas_h, canvas_w))
    for index, (x0, y0, x1, y1) in enumerate(grid):
        tiles[index, :, : y1 - y0, : x1 - x0] = frame[:, y0:y1, x0:x1]
    return Tiles(tiles, grid, (height, width))


class OnnxRuntimeForward:
    """The exported graph of the same module on onnxruntime's CPU provider: (N, 3, H, W) float32
    in, (loc, conf, landmarks) tensors out, like ``RetinaFace.forward``."""

    def __init__(self, onnx_path: Path | str, threads: int, memory_arena: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # the worker's budget, as for torch
        options.inter_op_num_threads = 1
        # The arena keeps freed blocks for reuse (faster) but holds on to the largest batch seen.
        options.enable_cpu_mem_arena = memory_arena
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"input": batch.contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)


class RetinaFaceDetector(Detector):
    """``fp16`` and pinned host memory apply on CUDA only; ``channels_last`` is a layout choice;
    ``onnx`` (a path) runs the exported graph on onnxruntime instead of eager PyTorch, CPU only
    (measured in model_configs/face_detector-2.0.yaml)."""

    def __init__(
        self,
        weights: Path | str,
        device: torch.device | str = "cpu",
        fp16: bool = False,
        channels_last: bool = False,
        onnx: Path | str | None = None,
        onnx_memory_arena: bool = True,
    ) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = torch.float16 if fp16 and self.cuda else torch.float32
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = RetinaFace()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state, strict=True)
        self.model.to(self.device, dtype=self.dtype, memory_format=self.memory_format).eval()
        self.backend = "eager"
        self.forward = self.model
        if onnx is not None and not self.cuda:
            self.forward = OnnxRuntimeForward(onnx, torch.get_num_threads(), onnx_memory_arena)
            self.backend = "onnxruntime"
            self.memory_format = torch.contiguous_format
        self._mean = torch.tensor(MEAN_BGR, device=self.device).view(3, 1, 1)

    def preprocess(self, image: np.ndarray | torch.Tensor, settings: DetectorSettings) -> PreparedImage:
        if isinstance(image, torch.Tensor):
            return self._preprocess_tensor(image, settings)
        height, width = image.shape[:2]
        original = image
        image, scale = shrink_array(image, settings.inference_size)
        h, w = image.shape[:2]
        canvas_h, canvas_w = _canvas_size(h, w)
        # One pass from (h, w, 3) RGB uint8 to the (3, Hc, Wc) BGR float32 canvas the network takes:
        # 5.5x faster than subtracting in HWC and transposing afterwards (3.6 vs 0.65 ms at 640x480).
        canvas = np.empty((3, canvas_h, canvas_w), dtype=np.float32)
        np.subtract(image.transpose(2, 0, 1)[::-1], MEAN_BGR_CHW, out=canvas[:, :h, :w])
        # Zero after mean subtraction == the convolutions' own zero padding at the first layer.
        canvas[:, h:, :] = 0.0
        canvas[:, :h, w:] = 0.0
        tensor = torch.from_numpy(canvas)  # (3, Hc, Wc), contiguous
        tiles = None
        if settings.small_faces:
            zoomed_w, zoomed_h = round(w * TILE_ZOOM), round(h * TILE_ZOOM)
            # From the original pixels, so that a shrunk frame's tiles get back the detail it lost.
            zoom_from_original = zoomed_w / width
            method = cv2.INTER_AREA if zoom_from_original < 1 else cv2.INTER_LINEAR
            zoomed = cv2.resize(original, (zoomed_w, zoomed_h), interpolation=method)
            frame = torch.from_numpy(zoomed[..., ::-1] - MEAN_BGR).permute(2, 0, 1)  # (3, Hz, Wz)
            tiles = _cut_tiles(frame)
        return PreparedImage(tensor, scale, width, height, tiles)

    def _preprocess_tensor(self, image: torch.Tensor, settings: DetectorSettings) -> PreparedImage:
        """The same steps on a decoded (3, H, W) uint8 tensor, on whatever device holds it."""
        _, height, width = image.shape
        x, scale = shrink_tensor(image.unsqueeze(0).float(), settings.inference_size)  # (1, 3, h, w) RGB
        h, w = x.shape[-2:]
        canvas_h, canvas_w = _canvas_size(h, w)
        mean = self._mean.to(x.device)
        canvas = torch.zeros((3, canvas_h, canvas_w), dtype=torch.float32, device=x.device)
        canvas[:, :h, :w] = x[0].flip(0) - mean  # RGB -> BGR, mean-subtracted
        tiles = None
        if settings.small_faces:
            size = (round(h * TILE_ZOOM), round(w * TILE_ZOOM))
            zoomed = F.interpolate(
                image.unsqueeze(0).float(),
                size=size,
                mode="bilinear",
                antialias=size[1] < width,
                align_corners=False,
            )
            tiles = _cut_tiles(zoomed[0].flip(0) - mean)  # (3, Hz, Wz) BGR, mean-subtracted
        return PreparedImage(canvas, scale, width, height, tiles)

    @torch.inference_mode()
    def infer(self, prepared: list[PreparedImage]) -> list[tuple[torch.Tensor, ...]]:
        # Images of one canvas size share a forward pass; other sizes get their own. No padding to
        # the batch's largest image, so a result never depends on what else was in the batch.
        # Tiles (small-face mode) are further inputs of their own shape: a frame's tiles go together.
        inputs: list[tuple[int, int, torch.Tensor]] = []  # (image index, part: -1 = full frame, (3, H, W))
        for index, item in enumerate(prepared):
            inputs.append((index, -1, item.tensor))
            if item.tiles is not None:
                inputs.extend((index, part, tile) for part, tile in enumerate(item.tiles.tensor))
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for position, (_, _, tensor) in enumerate(inputs):
            groups[tuple(tensor.shape)].append(position)
        full: list[tuple[torch.Tensor, ...]] = [()] * len(prepared)
        tiles: list[dict[int, tuple[torch.Tensor, ...]]] = [{} for _ in prepared]
        for positions in groups.values():
            for start in range(0, len(positions), MAX_FORWARD_BATCH):
                chunk = positions[start : start + MAX_FORWARD_BATCH]
                for position, raw in zip(chunk, self._forward([inputs[p][2] for p in chunk])):
                    index, part, _ = inputs[position]
                    if part < 0:
                        full[index] = raw
                    else:
                        tiles[index][part] = raw
        return [
            raw if not parts else (*raw, [parts[p] for p in range(len(parts))])
            for raw, parts in zip(full, tiles)
        ]

    def _forward(self, tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """Same-shape (3, H, W) inputs -> (loc (A, 4), face score (A,), landmarks (A, 10)) each."""
        batch = tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)  # no copy for one
        if self.cuda and batch.device.type == "cpu":
            batch = host_staging().to_device(batch, self.device)  # async copy from one reused pinned buffer
        batch = batch.to(self.device, dtype=self.dtype, memory_format=self.memory_format)
        loc, conf, landm = (t.float() for t in self.forward(batch))  # (n, A, 4), (n, A, 2), (n, A, 10)
        return [(loc[row], conf[row, :, 1], landm[row]) for row in range(len(tensors))]

    @torch.inference_mode()
    def postprocess(
        self, raw: tuple[torch.Tensor, ...], prepared: PreparedImage, settings: DetectorSettings
    ) -> list[Detection]:
        _, canvas_h, canvas_w = prepared.tensor.shape
        boxes, points, scores = _decode(raw[:3], canvas_h, canvas_w, settings.score_threshold)
        if prepared.tiles is not None and len(raw) > 3:
            found = [(boxes, points, scores)]
            tiles = prepared.tiles
            tile_h, tile_w = tiles.tensor.shape[-2:]
            for tile, tile_raw in zip(tiles.grid, raw[3]):
                t_boxes, t_points, t_scores = _decode(tile_raw, tile_h, tile_w, settings.score_threshold)
                # A cut face is whole in another tile; a large one is the full pass's (seen whole there).
                whole = ~cut_by_tile_edge(t_boxes, tile, *tiles.frame_hw)
                whole &= (t_boxes[:, 2] - t_boxes[:, 0]) < TILE_MAX_FACE * tiles.zoom
                origin = (tile[0], tile[1])
                found.append(
                    (
                        from_tile(t_boxes[whole], origin, tiles.zoom),
                        from_tile(t_points[whole].reshape(-1, 10), origin, tiles.zoom).reshape(-1, 5, 2),
                        t_scores[whole],
                    )
                )
            boxes, points, scores = (torch.cat(parts) for parts in zip(*found))
        if scores.numel() == 0:
            return []
        kept = nms(boxes, scores, settings.nms_iou)[: settings.max_detections]  # sorted by score
        # Back to original pixels, clipped to the image.
        boxes = unshrink(boxes[kept], prepared.scale, prepared.width, prepared.height).cpu().numpy()
        points = unshrink(points[kept], prepared.scale, prepared.width, prepared.height).cpu().numpy()
        scores = scores[kept].cpu().numpy()
        return [
            Detection(LABEL, float(s), tuple(b.tolist()), [tuple(p) for p in pts.tolist()])
            for s, b, pts in zip(scores, boxes, points)
        ]


def _decode(
    raw: tuple[torch.Tensor, ...], canvas_h: int, canvas_w: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One input's heads -> boxes (n, 4), landmarks (n, 5, 2) in its canvas pixels, scores (n,):
    those above ``threshold``, best PRE_NMS_TOP_K first."""
    loc, scores, landm = raw
    keep = scores > threshold
    anchors = anchor_grid(canvas_h, canvas_w, str(loc.device))[keep]
    loc, scores, landm = loc[keep], scores[keep], landm[keep]
    top = scores.argsort(descending=True)[:PRE_NMS_TOP_K]
    return decode_boxes(loc[top], anchors[top]), decode_landmarks(landm[top], anchors[top]), scores[top]
