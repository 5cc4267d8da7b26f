"""TorchServe entry point of ``face_detector`` 2.0 (RetinaFace mobile0.25)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from handlers.retinaface_detector import RetinaFaceDetector
from handlers.ts_adapter import DetectionHandler

WEIGHTS_FILE = "retinaface_mobile0.25.pt"
ONNX_FILE = "retinaface_mobile0.25.onnx"
BACKENDS = ("auto", "eager", "onnxruntime")


class RetinaFaceHandler(DetectionHandler):
    def build_detector(
        self, model_dir: Path, device: torch.device, section: dict[str, Any]
    ) -> RetinaFaceDetector:
        backend = section.get("backend", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"model-config.yaml handler.backend is {backend!r}; write one of {BACKENDS}")
        # auto: onnxruntime on CPU when the archive carries the exported graph, eager PyTorch on GPU.
        onnx = model_dir / section.get("onnx", ONNX_FILE)
        use_onnx = device.type == "cpu" and backend != "eager" and onnx.exists()
        if backend == "onnxruntime" and not use_onnx:
            raise ValueError(f"handler.backend is onnxruntime but {onnx.name} is missing or a GPU serves")
        return RetinaFaceDetector(
            model_dir / section.get("weights", WEIGHTS_FILE),
            device,
            fp16=bool(section.get("fp16", True)),
            channels_last=bool(section.get("channels_last", True)),
            onnx=onnx if use_onnx else None,
            onnx_memory_arena=bool(section.get("onnx_memory_arena", True)),
        )
