"""TorchServe entry point of ``object_detector``: a torchvision detector chosen at build time
(scripts/packaging/build_object_detector.py records it in model-config.yaml's ``handler:`` section)."""

from __future__ import annotations

from pathlib import Path

import torch

from handlers.config import ObjectDetectorConfig
from handlers.object_detector import TorchvisionDetector
from handlers.ts_adapter import DetectionHandler

__all__ = ["WEIGHTS_FILE", "ObjectDetectorHandler"]

WEIGHTS_FILE = ObjectDetectorConfig.weights


class ObjectDetectorHandler(DetectionHandler):
    config_type = ObjectDetectorConfig

    def build_detector(
        self, model_dir: Path, device: torch.device, config: ObjectDetectorConfig
    ) -> TorchvisionDetector:
        return TorchvisionDetector(config.model(), model_dir / config.weights, device)
