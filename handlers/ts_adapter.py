"""TorchServe lifecycle around a :class:`~handlers.pipeline.DetectionPipeline`.

initialize(context): read model-config.yaml's ``handler:`` section, validate it, pick the device,
                     load the weights (weights_only=True) -> one pipeline per worker.
handle(data, context): one outcome per request, same length as ``data``; a bad request gets its own
                     4xx through ``context.set_response_status`` while the rest of the batch succeeds.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from handlers import metrics as handler_metrics
from handlers.errors import InputError
from handlers.features import input_features
from handlers.image_decode import DecodeLimits
from handlers.pipeline import DetectionPipeline, Detector
from handlers.settings import SETTING_NAMES, settings_from_config

log = logging.getLogger(__name__)

# TorchServe forwards no query string for raw-body requests, so raw bodies carry per-request
# settings in headers: X-Score-Threshold, X-Nms-Iou, X-Max-Detections, X-Inference-Size.
SETTING_HEADERS = {"x-" + name.replace("_", "-"): name for name in SETTING_NAMES}


def header_overrides(headers: dict[str, Any]) -> dict[str, Any]:
    """Setting overrides found in one request's headers (names matched case-insensitively)."""
    found = {}
    for key, value in (headers or {}).items():
        name = SETTING_HEADERS.get(str(key).lower())
        if name is not None:
            found[name] = value
    return found


def select_device(gpu_id: int | str | None) -> torch.device:
    """The GPU TorchServe assigned to this worker when CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def configure_threads(section: dict[str, Any]) -> None:
    """``torch_threads`` (0 = torch's default) bounds intra-op threads per worker."""
    threads = int(section.get("torch_threads", 0))
    if threads < 0:
        raise ValueError("model-config.yaml handler.torch_threads must be >= 0 (0 = torch default)")
    if threads:
        torch.set_num_threads(threads)


def tensor_decode_device(device: torch.device, section: dict[str, Any]) -> torch.device | None:
    """nvJPEG batch decoding when a GPU serves this worker and ``gpu_jpeg_decode`` allows it."""
    return device if device.type == "cuda" and section.get("gpu_jpeg_decode", True) else None


class DetectionHandler:
    """Base for the served models: subclasses only say how to build their Detector."""

    def __init__(self) -> None:
        self.initialized = False
        self.pipeline: DetectionPipeline | None = None
        self.metrics: handler_metrics.HandlerMetrics | None = None

    def build_detector(self, model_dir: Path, device: torch.device, section: dict[str, Any]) -> Detector:
        raise NotImplementedError

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        model_dir = Path(props["model_dir"])
        section = dict((context.model_yaml_config or {}).get("handler") or {})
        defaults = settings_from_config(section)  # fails fast with the fix in the message
        limits = DecodeLimits.from_config(section)
        configure_threads(section)
        device = select_device(props.get("gpu_id"))
        manifest = context.manifest.get("model", {})
        self.pipeline = DetectionPipeline(
            self.build_detector(model_dir, device, section),
            model_name=manifest.get("modelName", context.model_name),
            version=str(manifest.get("modelVersion", "")),
            defaults=defaults,
            limits=limits,
            # nvJPEG batch decoding when a GPU serves this worker and the config allows it.
            tensor_decode_device=device
            if device.type == "cuda" and section.get("gpu_jpeg_decode", True)
            else None,
            # Input statistics for monitoring (handlers/metrics.py); off with DETECTION_METRICS=off.
            features=input_features if handler_metrics.enabled() else None,
        )
        self.metrics = handler_metrics.HandlerMetrics.from_context(
            context, self.pipeline.model_name, self.pipeline.version
        )
        if self.metrics is not None:
            self.metrics.worker_started()
        log.info(
            "loaded %s %s on %s (pid %d), defaults %s",
            self.pipeline.model_name,
            self.pipeline.version,
            device,
            os.getpid(),
            defaults,
        )
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        requests = [
            {**header_overrides(context.get_all_request_header(idx)), **item} for idx, item in enumerate(data)
        ]
        responses = []
        rejected = 0
        outcomes = self.pipeline.process(requests)
        for idx, outcome in enumerate(outcomes):
            if isinstance(outcome, InputError):
                rejected += 1
                context.set_response_status(outcome.status, outcome.message, idx)
            # Compact JSON string: TorchServe would otherwise pretty-print dicts with indent=2.
            responses.append(json.dumps(outcome.to_json(), separators=(",", ":")))
            context.set_response_content_type(idx, "application/json")
        # One line per handle() call: shows how dynamic batching behaves under real traffic.
        log.info("batch of %d: %d ok, %d rejected", len(data), len(data) - rejected, rejected)
        if self.metrics is not None:
            self.metrics.record_batch(outcomes)
        return responses
