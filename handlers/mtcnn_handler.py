"""TorchServe entry point of ``face_detector`` 1.0 (MTCNN)."""

from __future__ import annotations

from pathlib import Path

import torch

from handlers.config import MTCNNConfig
from handlers.mtcnn_detector import MTCNNDetector
from handlers.ts_adapter import DetectionHandler

__all__ = ["WEIGHTS_FILE", "MTCNNHandler"]

WEIGHTS_FILE = MTCNNConfig.weights


class MTCNNHandler(DetectionHandler):
    config_type = MTCNNConfig

    def build_detector(self, model_dir: Path, device: torch.device, config: MTCNNConfig) -> MTCNNDetector:
        return MTCNNDetector(model_dir / config.weights, device, config.cascade())
