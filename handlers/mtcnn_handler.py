"""TorchServe entry point of ``face_detector`` 1.0 (MTCNN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from handlers.mtcnn import CascadeConfig
from handlers.mtcnn_detector import MTCNNDetector
from handlers.ts_adapter import DetectionHandler

WEIGHTS_FILE = "mtcnn.pt"


class MTCNNHandler(DetectionHandler):
    def build_detector(self, model_dir: Path, device: torch.device, section: dict[str, Any]) -> MTCNNDetector:
        cascade = CascadeConfig.from_section(section)  # fails fast with the fix in the message
        return MTCNNDetector(model_dir / section.get("weights", WEIGHTS_FILE), device, cascade)
