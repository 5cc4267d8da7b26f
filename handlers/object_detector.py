"""torchvision detectors (handlers/object_models.py) as a :class:`~handlers.pipeline.Detector`.

preprocess  RGB uint8 -> float in [0, 1], resized exactly as torchvision's GeneralizedRCNNTransform
            does (bilinear; short side -> ``min_size``, long side capped at ``inference_size``;
            ssdlite320: a fixed 320x320 square), then normalised with the family's mean/std.
infer       images of one network size and one set of thresholds share a forward pass; every
            other image gets its own, so padding to a common canvas never couples the results of
            two requests: an image's detections do not depend on what else was in the batch.
postprocess the model's own class-wise NMS output, boxes scaled back to original pixels and clipped.

Per-request settings map onto the model's own post-processing: ``score_threshold`` -> score_thresh,
``nms_iou`` -> nms_thresh (per class, torchvision's batched_nms), ``max_detections`` ->
detections_per_img. With ``inference_size`` equal to torchvision's max_size (1333) the results are
those of the stock torchvision model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from handlers.geometry import to_original
from handlers.object_models import ObjectModelConfig, load_model
from handlers.pipeline import Detector
from handlers.schema import Detection
from handlers.settings import DetectorSettings

__all__ = ["PreparedImage", "PrescaledTransform", "TorchvisionDetector"]


class PrescaledTransform(GeneralizedRCNNTransform):
    """The family's transform minus resize and normalisation (done per image in preprocess):
    only padding to a stride multiple and batching remain."""

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
        return image, target


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # (3, h, w) float32, normalised, at network scale (where the image was decoded)
    width: int  # original size
    height: int
    settings: DetectorSettings  # the thresholds the model applies inside its forward pass

    def group_key(self) -> tuple:
        s = self.settings
        return (*self.tensor.shape, str(self.tensor.device), s.score_threshold, s.nms_iou, s.max_detections)


class TorchvisionDetector(Detector):
    def __init__(
        self, config: ObjectModelConfig, weights: Path | str, device: torch.device | str = "cpu"
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = load_model(config, weights, self.device)
        stock = self.model.transform
        self.mean = torch.tensor(stock.image_mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.tensor(stock.image_std, dtype=torch.float32).reshape(3, 1, 1)
        self.fixed_size = stock.fixed_size  # (w, h) for SSD, None for the others
        self.model.transform = PrescaledTransform(
            stock.min_size, stock.max_size, stock.image_mean, stock.image_std,
            size_divisible=stock.size_divisible, fixed_size=stock.fixed_size,
        )  # fmt: skip
        # Faster R-CNN keeps its post-processing thresholds in roi_heads, the one-stage families on
        # the model itself; the attribute names are the same.
        self.thresholds = getattr(self.model, "roi_heads", self.model)

    def network_size(self, height: int, width: int, inference_size: int) -> tuple[int, int]:
        """(h, w) the network sees, computed as GeneralizedRCNNTransform does (floor of h * scale)."""
        if self.fixed_size is not None:
            return self.fixed_size[1], self.fixed_size[0]
        scale = min(self.config.min_size / min(height, width), inference_size / max(height, width))
        return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))

    @torch.inference_mode()
    def preprocess(self, image: np.ndarray | torch.Tensor, settings: DetectorSettings) -> PreparedImage:
        """(H, W, 3) uint8 array, or (3, H, W) uint8 tensor on any device (the tensor-decode path):
        the same arithmetic on whichever device holds the image."""
        if isinstance(image, torch.Tensor):
            tensor = image.float().div_(255.0)  # (3, H, W), [0, 1]
        else:
            tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).div_(255.0)
        height, width = tensor.shape[1:]
        size = self.network_size(height, width, settings.inference_size)
        if size != (height, width):
            tensor = F.interpolate(tensor[None], size=size, mode="bilinear", align_corners=False)[0]
        tensor = (tensor - self.mean.to(tensor.device)) / self.std.to(tensor.device)
        return PreparedImage(tensor.contiguous(), width, height, settings)

    @torch.inference_mode()
    def infer(self, prepared: list[PreparedImage]) -> list[dict[str, torch.Tensor]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, item in enumerate(prepared):
            groups[item.group_key()].append(index)
        outputs: list[dict[str, torch.Tensor]] = [{}] * len(prepared)
        for indices in groups.values():
            settings = prepared[indices[0]].settings
            self.thresholds.score_thresh = settings.score_threshold
            self.thresholds.nms_thresh = settings.nms_iou
            self.thresholds.detections_per_img = settings.max_detections
            images = [prepared[i].tensor.to(self.device, non_blocking=True) for i in indices]
            for index, output in zip(indices, self.model(images)):
                outputs[index] = output
        return outputs

    @torch.inference_mode()
    def postprocess(
        self, raw: dict[str, torch.Tensor], prepared: PreparedImage, settings: DetectorSettings
    ) -> list[Detection]:
        scores = raw["scores"].float().cpu()
        order = scores.argsort(descending=True, stable=True)[: settings.max_detections]
        # Network pixels -> original pixels, with the ratios torchvision's resize_boxes uses, clipped.
        network_hw = tuple(prepared.tensor.shape[1:])
        boxes = to_original(raw["boxes"].float().cpu()[order], network_hw, prepared.width, prepared.height)
        labels = self.config.labels
        return [
            Detection(
                labels[class_id] if 0 <= class_id < len(labels) else f"class_{class_id}",
                score,
                tuple(box),
                class_id=class_id,
            )  # fmt: skip
            for score, box, class_id in zip(
                scores[order].tolist(), boxes.tolist(), raw["labels"].cpu()[order].tolist()
            )
        ]
