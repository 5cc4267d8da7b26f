"""TorchServe lifecycle around a :class:`~handlers.pipeline.DetectionPipeline`.

initialize(context): validate model-config.yaml's whole ``handler:`` section against the family's
                     typed config (handlers/config.py), pick the device, load the weights
                     (weights_only=True) -> one pipeline per worker.
handle(data, context): one outcome per request, same length as ``data``; a bad request gets its own
                     4xx through ``context.set_response_status`` while the rest of the batch succeeds.
                     A device failure is a server fault, never a 4xx: out of memory -> TorchServe's
                     507 for the batch; a broken CUDA context -> the worker exits (status 70) and
                     TorchServe answers 500 and starts a new one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from handlers import metrics as handler_metrics
from handlers.config import HandlerConfig
from handlers.errors import InputError
from handlers.features import input_features
from handlers.pipeline import DetectionPipeline, Detector
from handlers.settings import SETTING_NAMES
from handlers.tensor_decode import is_broken_context, is_device_fault

__all__ = [
    "EXIT_DEVICE_FAULT",
    "SETTING_HEADERS",
    "DetectionHandler",
    "configure_threads",
    "header_overrides",
    "select_device",
    "tensor_decode_device",
]

log = logging.getLogger(__name__)

EXIT_DEVICE_FAULT = 70  # worker exit status after a broken CUDA context (sysexits' EX_SOFTWARE)

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


def configure_threads(threads: int) -> None:
    """``torch_threads`` (0 = torch's default) bounds intra-op threads per worker."""
    if threads:
        torch.set_num_threads(threads)


def tensor_decode_device(device: torch.device, config: HandlerConfig) -> torch.device | None:
    """nvJPEG batch decoding when a GPU serves this worker and the family's config allows it
    (``gpu_jpeg_decode``, RetinaFace's key). Every detector family accepts the tensor path
    (tests/unit/handlers/test_decode_families.py); the others decode on the host by default."""
    return device if device.type == "cuda" and config.tensor_decode else None


class DetectionHandler:
    """Base for the served models: subclasses name their typed config and build their Detector."""

    config_type: type[HandlerConfig] = HandlerConfig

    def __init__(self) -> None:
        self.initialized = False
        self.pipeline: DetectionPipeline | None = None
        self.metrics: handler_metrics.HandlerMetrics | None = None

    def build_detector(self, model_dir: Path, device: torch.device, config: Any) -> Detector:
        """``config`` is an instance of this handler's ``config_type``."""
        raise NotImplementedError

    def initialize(self, context: Any) -> None:
        props = context.system_properties
        model_dir = Path(props["model_dir"])
        # The whole section at once: an unknown key, a wrong type or a value out of bounds stops the
        # worker here with the fix in the message (ConfigError, a ValueError).
        config = self.config_type.from_section((context.model_yaml_config or {}).get("handler"))
        configure_threads(config.torch_threads)
        device = select_device(props.get("gpu_id"))
        manifest = context.manifest.get("model", {})
        self.pipeline = DetectionPipeline(
            self.build_detector(model_dir, device, config),
            model_name=manifest.get("modelName", context.model_name),
            version=str(manifest.get("modelVersion", "")),
            defaults=config.settings(),
            limits=config.decode_limits(),
            tensor_decode_device=tensor_decode_device(device, config),
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
            self.pipeline.defaults,
        )
        self.initialized = True

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        requests = [
            {**header_overrides(context.get_all_request_header(idx)), **item} for idx, item in enumerate(data)
        ]
        responses = []
        rejected = 0
        try:
            outcomes = self.pipeline.process(requests)
        except Exception as err:
            if is_device_fault(err) and is_broken_context(err):
                # Every later call on this CUDA context would fail too: leave, so that TorchServe
                # answers this batch 500 ("Worker died.") and starts a fresh worker.
                log.critical("device failure, worker exits to be restarted: %s", err, exc_info=True)
                logging.shutdown()
                os._exit(EXIT_DEVICE_FAULT)
            # Out of memory and other server faults: TorchServe answers the batch 507 (the message
            # names CUDA / MemoryError) or 503; the worker stays.
            raise
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
