"""TorchServe entry point of ``face_detector`` 2.0 (RetinaFace mobile0.25)."""

from __future__ import annotations

from pathlib import Path

import torch

from handlers.config import BACKENDS, RetinaFaceConfig
from handlers.retinaface_detector import RetinaFaceDetector
from handlers.ts_adapter import DetectionHandler

__all__ = ["BACKENDS", "ONNX_FILE", "WEIGHTS_FILE", "RetinaFaceHandler"]

WEIGHTS_FILE = RetinaFaceConfig.weights
ONNX_FILE = RetinaFaceConfig.onnx


class RetinaFaceHandler(DetectionHandler):
    config_type = RetinaFaceConfig

    def build_detector(
        self, model_dir: Path, device: torch.device, config: RetinaFaceConfig
    ) -> RetinaFaceDetector:
        # auto: onnxruntime on CPU when the archive carries the exported graph, eager PyTorch on GPU.
        onnx = model_dir / config.onnx
        use_onnx = device.type == "cpu" and config.backend != "eager" and onnx.exists()
        if config.backend == "onnxruntime" and not use_onnx:
            raise ValueError(f"handler.backend is onnxruntime but {onnx.name} is missing or a GPU serves")
        return RetinaFaceDetector(
            model_dir / config.weights,
            device,
            fp16=config.fp16,
            channels_last=config.channels_last,
            onnx=onnx if use_onnx else None,
            onnx_memory_arena=config.onnx_memory_arena,
        )
