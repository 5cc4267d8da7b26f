"""The detection lifecycle shared by every model family and by every way of running it.

    decode -> preprocess -> inference -> postprocess

A :class:`Detector` implements the model-specific hooks; :class:`DetectionPipeline` runs a batch of
requests through them, isolates each request's input errors, and times every stage. The TorchServe
handlers, the in-process batch scorer and the benchmark all call :meth:`DetectionPipeline.process`,
so "served" and "in-process" are the same code.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handlers.errors import InputError
from handlers.image_decode import DecodeLimits, decode_image
from handlers.request_parsing import parse_request
from handlers.schema import Detection, DetectionResult
from handlers.settings import DetectorSettings

log = logging.getLogger(__name__)

REASON_INTERNAL = "internal"


class Detector(ABC):
    """Model-family hooks. ``infer`` sees the whole batch and decides how to group it."""

    @abstractmethod
    def preprocess(self, image: np.ndarray, settings: DetectorSettings) -> Any:
        """RGB uint8 (H, W, 3) -> whatever ``infer`` consumes for this image."""

    @abstractmethod
    def infer(self, prepared: list[Any]) -> list[Any]:
        """Run the network on a batch; one raw output per prepared image, same order."""

    @abstractmethod
    def postprocess(self, raw: Any, prepared: Any, settings: DetectorSettings) -> list[Detection]:
        """Raw output -> detections in original pixels, clipped, sorted by descending score."""

    def synchronize(self) -> None:
        """Wait for queued device work so that stage timings are honest (no-op on CPU)."""


class InternalError(InputError):
    """An unexpected failure confined to one request: reported as that request's 500."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=500, reason=REASON_INTERNAL)


@dataclass
class _Item:
    settings: DetectorSettings | None = None
    image: np.ndarray | None = None
    prepared: Any = None
    outcome: DetectionResult | InputError | None = None
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0


class DetectionPipeline:
    def __init__(
        self,
        detector: Detector,
        model_name: str,
        version: str,
        defaults: DetectorSettings = DetectorSettings(),
        limits: DecodeLimits = DecodeLimits(),
    ) -> None:
        self.detector = detector
        self.model_name = model_name
        self.version = version
        self.defaults = defaults
        self.limits = limits

    def process(self, requests: list[dict[str, Any]]) -> list[DetectionResult | InputError]:
        """One outcome per request, same order: a result, or the error that belongs to it alone."""
        items = [_Item() for _ in requests]
        for item, request in zip(items, requests):
            self._decode_and_prepare(item, request)

        ready = [item for item in items if item.outcome is None]
        if ready:
            start = time.perf_counter()
            raw_outputs = self.detector.infer([item.prepared for item in ready])
            self.detector.synchronize()
            # Every image of the batch waited for the whole forward pass: that is its inference time.
            batch_ms = (time.perf_counter() - start) * 1000.0
            for item, raw in zip(ready, raw_outputs):
                item.timings["inference"] = batch_ms
                self._postprocess(item, raw)
        return [item.outcome for item in items]

    def detect_bytes(self, data: bytes, **overrides: Any) -> DetectionResult:
        """In-process convenience: one image's bytes -> result; raises InputError for bad input."""
        outcome = self.process([{"body": data, **overrides}])[0]
        if isinstance(outcome, InputError):
            raise outcome
        return outcome

    def _decode_and_prepare(self, item: _Item, request: dict[str, Any]) -> None:
        try:
            with _timed(item.timings, "decode"):
                parsed = parse_request(request)
                item.settings = self.defaults.with_overrides(parsed.overrides)
                item.image = decode_image(parsed.image_bytes, self.limits)
            with _timed(item.timings, "preprocess"):
                item.prepared = self.detector.preprocess(item.image, item.settings)
        except InputError as err:
            item.outcome = err
        except Exception as err:  # noqa: BLE001 - one request's bug must not fail the batch
            log.exception("preprocess failed")
            item.outcome = InternalError(f"internal error while preparing the image: {type(err).__name__}")

    def _postprocess(self, item: _Item, raw: Any) -> None:
        try:
            with _timed(item.timings, "postprocess"):
                detections = self.detector.postprocess(raw, item.prepared, item.settings)
            height, width = item.image.shape[:2]
            item.outcome = DetectionResult(
                self.model_name, self.version, width, height, detections, item.timings
            )
        except Exception as err:  # noqa: BLE001
            log.exception("postprocess failed")
            item.outcome = InternalError(f"internal error while postprocessing: {type(err).__name__}")
