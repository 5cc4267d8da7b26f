"""TorchServe entry point of ``object_detector``: a torchvision detector chosen at build time
(scripts/packaging/build_object_detector.py records it in model-config.yaml's ``handler:`` section)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from handlers.object_detector import TorchvisionDetector
from handlers.object_models import ObjectModelConfig
from handlers.ts_adapter import DetectionHandler

WEIGHTS_FILE = "object_detector.pt"


class ObjectDetectorHandler(DetectionHandler):
    def build_detector(
        self, model_dir: Path, device: torch.device, section: dict[str, Any]
    ) -> TorchvisionDetector:
        config = ObjectModelConfig.from_section(section)  # fails fast with the fix in the message
        return TorchvisionDetector(config, model_dir / section.get("weights", WEIGHTS_FILE), device)
