"""TorchServe lifecycle around a :class:`~handlers.pipeline.DetectionPipeline`.

initialize(context): validate model-config.yaml's whole ``handler:`` section against the family's
                     typed config (handlers/config.py), pick the device, load the weights
                     (weights_only=True) -> one pipeline per worker.
handle(data, context): one outcome per request, same length as ``data``; a bad request gets its own
                     4xx through ``context.set_response_status`` while the rest of the batch succeeds.
                     A device failure is a server fault, never a 4xx: out of memory -> TorchServe's
                     507 for the batch; a broken CUDA context -> the worker exits (status 70) and
                     TorchServe answers 500 and starts a new one.

Under TorchServe's KServe envelope (``service_envelope=kserve``, the kserve container target) the
envelope hands ``handle`` the ``instances`` list of ONE request instead of one dict per request, and
wraps what it returns as ``{"predictions": [...]}``: there the handler answers one object per instance
(results and per-instance error objects alike), reads headers and sets the status of request 0 only
(the one real request), and answers 4xx only when no instance succeeded (docs/deployment.md, KServe).
"""

from __future__ import annotations

import json
import logging
import os
import sys
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

try:  # only to recognise the caller; the handlers run without TorchServe in tests and in-process
    from ts.torch_handler.request_envelope.kserve import KServeEnvelope
except ImportError:  # pragma: no cover - TorchServe is installed wherever a worker runs
    KServeEnvelope = None

__all__ = [
    "EXIT_DEVICE_FAULT",
    "SETTING_HEADERS",
    "DetectionHandler",
    "configure_threads",
    "drop_per_request_notice",
    "called_by_kserve_envelope",
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


def called_by_kserve_envelope(depth: int = 2) -> bool:
    """Whether the function calling this one was called by TorchServe's KServe envelope (``depth``:
    frames up from here to that caller, 2 from ``handle``). TorchServe tells a handler nothing about
    the envelope: it wraps the handler's ``handle`` in ``KServeEnvelope(handle).handle``
    (ts/model_loader.py), whose frame is then the caller."""
    if KServeEnvelope is None:
        return False
    caller = sys._getframe(depth)
    return isinstance(caller.f_locals.get("self"), KServeEnvelope)


def select_device(gpu_id: int | str | None) -> torch.device:
    """The GPU TorchServe assigned to this worker when CUDA is usable, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


def _not_a_receipt_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Backend received inference at")


def drop_per_request_notice() -> None:
    """TorchServe's worker logs "Backend received inference at: <time>" on its root logger for every
    batch; the frontend reads it from stdout only to drop it (monitoring/log4j2.xml). Drop it here
    instead: one write and one frontend wake-up less per request. Idempotent."""
    root = logging.getLogger()
    if _not_a_receipt_notice not in root.filters:
        root.addFilter(_not_a_receipt_notice)


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
        drop_per_request_notice()
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

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str] | list[dict[str, Any]]:
        if called_by_kserve_envelope():
            return self.handle_instances(data, context)
        requests = [
            {**header_overrides(context.get_all_request_header(idx)), **item} for idx, item in enumerate(data)
        ]
        outcomes = self._process(requests)
        responses = []
        for idx, outcome in enumerate(outcomes):
            if isinstance(outcome, InputError):
                context.set_response_status(outcome.status, outcome.message, idx)
            # Compact JSON string: TorchServe would otherwise pretty-print dicts with indent=2.
            responses.append(json.dumps(outcome.to_json(), separators=(",", ":")))
            context.set_response_content_type(idx, "application/json")
        self._log_and_record(outcomes)
        return responses

    def handle_instances(self, instances: Any, context: Any) -> list[dict[str, Any]]:
        """KServe v1: ``instances`` (N items) of the one request at index 0 -> N objects, same order.

        An instance is what a request dict is on the bare API, e.g. ``{"data": {"image": "<base64>",
        "score_threshold": 0.8}}``; the request's setting headers apply to every instance, an
        instance's own fields win. One bad instance gets its error object in its place and the rest
        succeed (status 200); only when none succeeds does the request get the first error's status.
        """
        if not isinstance(instances, list) or not instances:
            error = InputError(
                'KServe v1 body needs "instances": a non-empty list like [{"data": {"image": "<base64>"}}]'
            )
            context.set_response_status(error.status, error.message, 0)
            return [error.to_json()]
        shared = header_overrides(context.get_all_request_header(0))  # the one real request
        outcomes: list[Any] = [None] * len(instances)
        requests, positions = [], []
        for pos, instance in enumerate(instances):
            if isinstance(instance, dict):
                requests.append({**shared, **instance})
                positions.append(pos)
            else:
                outcomes[pos] = InputError(
                    f"instance {pos} is a {type(instance).__name__}; each instance is an object like "
                    '{"data": {"image": "<base64>"}}'
                )
        for pos, outcome in zip(positions, self._process(requests) if requests else []):
            outcomes[pos] = outcome
        errors = [o for o in outcomes if isinstance(o, InputError)]
        if len(errors) == len(outcomes):
            context.set_response_status(errors[0].status, errors[0].message, 0)
        context.set_response_content_type(0, "application/json")
        self._log_and_record(outcomes)
        # Objects, not JSON strings: the envelope puts them in {"predictions": [...]} and TorchServe
        # serialises that whole response once.
        return [outcome.to_json() for outcome in outcomes]

    def _process(self, requests: list[dict[str, Any]]) -> list[Any]:
        """The pipeline's outcomes; a device fault is handled here (module docstring)."""
        try:
            return self.pipeline.process(requests)
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

    def _log_and_record(self, outcomes: list[Any]) -> None:
        rejected = sum(isinstance(o, InputError) for o in outcomes)
        # One line per handle() call: shows how dynamic batching behaves under real traffic.
        log.info("batch of %d: %d ok, %d rejected", len(outcomes), len(outcomes) - rejected, rejected)
        if self.metrics is not None:
            self.metrics.record_batch(outcomes)
