"""TorchServe entry point of ``face_detector`` 2.0 (RetinaFace mobile0.25)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from handlers.retinaface_detector import RetinaFaceDetector
from handlers.ts_adapter import DetectionHandler

WEIGHTS_FILE = "retinaface_mobile0.25.pt"


class RetinaFaceHandler(DetectionHandler):
    def build_detector(
        self, model_dir: Path, device: torch.device, section: dict[str, Any]
    ) -> RetinaFaceDetector:
        return RetinaFaceDetector(
            model_dir / section.get("weights", WEIGHTS_FILE),
            device,
            fp16=bool(section.get("fp16", True)),
            channels_last=bool(section.get("channels_last", False)),
        )
