"""MTCNN as a :class:`~handlers.pipeline.Detector`: shrink to ``inference_size``, the three-stage
cascade over the whole batch (mixed sizes allowed), then per-request threshold and NMS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers.geometry import shrink_array, shrink_tensor, unshrink
from handlers.mtcnn import MTCNN, Candidates, CascadeConfig, finalize
from handlers.pipeline import Detector
from handlers.schema import Detection
from handlers.settings import DetectorSettings

__all__ = ["MTCNNDetector", "PreparedImage"]

LABEL = "face"


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # (3, h, w) RGB the cascade sees: uint8 (host path) or float 0-255 (tensor path)
    scale: float  # network pixels per original pixel (<= 1)
    width: int  # original size
    height: int


class MTCNNDetector(Detector):
    def __init__(
        self,
        weights: Path | str,
        device: torch.device | str = "cpu",
        cascade: CascadeConfig = CascadeConfig(),
    ) -> None:
        self.device = torch.device(device)
        self.model = MTCNN(cascade)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state, strict=True)
        self.model.to(self.device).eval()

    def preprocess(self, image: np.ndarray | torch.Tensor, settings: DetectorSettings) -> PreparedImage:
        """(H, W, 3) uint8 array, or (3, H, W) uint8 tensor on any device (the tensor-decode path)."""
        if isinstance(image, torch.Tensor):
            _, height, width = image.shape
            # Antialiased bilinear on the tensor's device: the counterpart of shrink_array's area resize.
            shrunk, scale = shrink_tensor(image.unsqueeze(0).float(), settings.inference_size)
            return PreparedImage(shrunk[0], scale, width, height)  # (3, h, w) float, 0-255
        height, width = image.shape[:2]
        image, scale = shrink_array(image, settings.inference_size)
        tensor = torch.tensor(image).permute(2, 0, 1)  # (3, h, w), a copy: decoded arrays may be read-only
        return PreparedImage(tensor, scale, width, height)

    def infer(self, prepared: list[PreparedImage]) -> list[Candidates]:
        return self.model([item.tensor.to(self.device, torch.float32) for item in prepared])

    @torch.inference_mode()
    def postprocess(
        self, raw: Candidates, prepared: PreparedImage, settings: DetectorSettings
    ) -> list[Detection]:
        found = finalize(raw, settings.score_threshold, settings.nms_iou, settings.max_detections)
        if not len(found.scores):
            return []
        # Back to original pixels, clipped to the image.
        boxes = unshrink(found.boxes, prepared.scale, prepared.width, prepared.height).cpu().numpy()
        points = unshrink(found.landmarks, prepared.scale, prepared.width, prepared.height).cpu().numpy()
        scores = found.scores.cpu().numpy()
        return [
            Detection(LABEL, float(s), tuple(b.tolist()), [tuple(p) for p in pts.tolist()])
            for s, b, pts in zip(scores, boxes, points)
        ]
