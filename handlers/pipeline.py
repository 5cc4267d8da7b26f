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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from handlers.errors import InputError
from handlers.image_decode import DecodeLimits, decode_probed, probe_image
from handlers.request_parsing import parse_request
from handlers.schema import Detection, DetectionResult
from handlers.settings import DetectorSettings
from handlers.tensor_decode import EXIF_ORIENTATION, HostStaging, decode_jpegs, host_staging, is_device_fault

__all__ = ["REASON_INTERNAL", "DetectionPipeline", "Detector", "InternalError"]

log = logging.getLogger(__name__)

REASON_INTERNAL = "internal"


class Detector(ABC):
    """Model-family hooks. ``infer`` sees the whole batch and decides how to group it.

    ``device`` is where the network runs; a detector sets it in its constructor (CPU otherwise).
    """

    device: torch.device = torch.device("cpu")

    @abstractmethod
    def preprocess(self, image: np.ndarray | torch.Tensor, settings: DetectorSettings) -> Any:
        """RGB uint8 -> whatever ``infer`` consumes for this image. ``image`` is a numpy (H, W, 3)
        array, or a (3, H, W) uint8 tensor on ``tensor_decode_device`` when the pipeline decodes with
        torchvision: then every image of the batch arrives that way, host-decoded ones included.
        Every family takes both (tests/unit/handlers/test_decode_families.py)."""

    @abstractmethod
    def infer(self, prepared: list[Any]) -> list[Any]:
        """Run the network on a batch; one raw output per prepared image, same order."""

    @abstractmethod
    def postprocess(self, raw: Any, prepared: Any, settings: DetectorSettings) -> list[Detection]:
        """Raw output -> detections in original pixels, clipped, sorted by descending score."""

    def synchronize(self) -> None:
        """Wait for queued device work so that stage timings are honest: CUDA kernels run
        asynchronously, and without this the forward pass would look instant and its time would be
        charged to postprocess (the first ``.cpu()``). No-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class InternalError(InputError):
    """An unexpected failure confined to one request: reported as that request's 500."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=500, reason=REASON_INTERNAL)


@dataclass
class _Item:
    settings: DetectorSettings | None = None
    payload: bytes = b""
    probed: Image.Image | None = None  # header parsed and checked, pixels not decoded yet
    image: np.ndarray | torch.Tensor | None = None
    size: tuple[int, int] = (0, 0)  # width, height as a viewer sees the image
    prepared: Any = None
    outcome: DetectionResult | InputError | None = None
    timings: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] | None = None  # input statistics, when the pipeline has a features hook


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * 1000.0


class DetectionPipeline:
    """A detector plus everything around it: request parsing, safe decoding, per-request settings,
    per-item errors and per-stage timings. The public entry of this package:

        detector = RetinaFaceDetector("build/retinaface_mobile0.25.pt")  # handlers.retinaface_detector
        pipeline = DetectionPipeline(detector, "face_detector", "2.0")
        result = pipeline.detect_bytes(Path("photo.jpg").read_bytes(), score_threshold=0.6)

    :meth:`process` takes a batch of TorchServe-style requests (``{"body": bytes}`` plus settings)
    and returns one :class:`DetectionResult` or :class:`InputError` per request, in order.
    """

    def __init__(
        self,
        detector: Detector,
        model_name: str,
        version: str,
        defaults: DetectorSettings = DetectorSettings(),
        limits: DecodeLimits = DecodeLimits(),
        tensor_decode_device: torch.device | str | None = None,
        features: Callable[[np.ndarray | torch.Tensor], dict[str, float]] | None = None,
    ) -> None:
        self.detector = detector
        self.model_name = model_name
        self.version = version
        self.defaults = defaults
        self.limits = limits
        # When set, JPEGs are decoded as one batch by torchvision (nvJPEG on a CUDA device), and
        # every other image (decoded on the host) is copied there too: the detector sees one kind
        # of input, on one device, for the whole batch.
        self.tensor_decode_device: torch.device | None = None
        self._staging: HostStaging | None = None
        if tensor_decode_device is not None:
            self.tensor_decode_device = torch.device(tensor_decode_device)
            self._staging = host_staging()
        # Optional: decoded image -> input statistics, attached to the result (never to the response).
        self.features = features

    def process(self, requests: list[dict[str, Any]]) -> list[DetectionResult | InputError]:
        """One outcome per request, same order: a result, or the error that belongs to it alone."""
        items = [_Item() for _ in requests]
        for item, request in zip(items, requests):
            self._parse_and_probe(item, request)
        if self.tensor_decode_device is not None:
            self._decode_jpegs_as_tensors(
                [i for i in items if i.outcome is None and i.probed.format == "JPEG"]
            )
        for item in items:
            if item.outcome is None:
                self._decode_and_prepare(item)

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

    def _parse_and_probe(self, item: _Item, request: dict[str, Any]) -> None:
        try:
            with _timed(item.timings, "decode"):
                parsed = parse_request(request)
                item.settings = self.defaults.with_overrides(parsed.overrides)
                item.payload = parsed.image_bytes
                item.probed = probe_image(parsed.image_bytes, self.limits)
        except InputError as err:
            item.outcome = err.detached()
        except Exception as err:  # noqa: BLE001 - one request's bug must not fail the batch
            log.exception("request parsing failed")
            item.outcome = InternalError(f"internal error while reading the request: {type(err).__name__}")

    def _decode_jpegs_as_tensors(self, items: list[_Item]) -> None:
        """One batched call for the batch's JPEGs. A JPEG the device decoder refuses stays without
        an image and is decoded on the host (the same 400 as the host path if PIL refuses it too); a
        device failure (DeviceFault) propagates: a server fault for the whole batch, never a 400."""
        if not items:
            return
        start = time.perf_counter()
        orientations = [_exif_orientation(item.probed) for item in items]
        outcomes = decode_jpegs([item.payload for item in items], self.tensor_decode_device, orientations)
        batch_ms = (time.perf_counter() - start) * 1000.0
        for item, image in zip(items, outcomes):
            item.timings["decode"] = item.timings.get("decode", 0.0) + batch_ms
            if image is not None:
                item.image = image
                item.size = (int(image.shape[2]), int(image.shape[1]))

    def _decode_on_host(self, item: _Item) -> None:
        item.image = decode_probed(item.probed)  # (H, W, 3) uint8, EXIF orientation applied
        item.size = (int(item.image.shape[1]), int(item.image.shape[0]))
        if self.tensor_decode_device is not None:
            # (3, H, W) on the device, like the batch's JPEGs: a batch never mixes devices.
            item.image = self._staging.to_device(item.image, self.tensor_decode_device).permute(2, 0, 1)

    def _decode_and_prepare(self, item: _Item) -> None:
        try:
            if item.image is None:
                with _timed(item.timings, "decode"):
                    self._decode_on_host(item)
            item.probed = None  # release the parser and the pixels it holds
            self._extract_features(item)
            with _timed(item.timings, "preprocess"):
                item.prepared = self.detector.preprocess(item.image, item.settings)
            item.image = None  # the prepared tensor is all that is needed from here on
        except InputError as err:
            item.outcome = err.detached()
        except Exception as err:  # noqa: BLE001 - one request's bug must not fail the batch
            if is_device_fault(err):
                raise  # the device failed, not this request: a server fault for the batch
            log.exception("preprocess failed")
            item.outcome = InternalError(f"internal error while preparing the image: {type(err).__name__}")

    def _extract_features(self, item: _Item) -> None:
        if self.features is None:
            return
        try:
            item.features = self.features(item.image)
        except Exception:  # noqa: BLE001 - monitoring must never fail a request
            log.exception("input feature extraction failed")

    def _postprocess(self, item: _Item, raw: Any) -> None:
        try:
            with _timed(item.timings, "postprocess"):
                detections = self.detector.postprocess(raw, item.prepared, item.settings)
            width, height = item.size
            item.outcome = DetectionResult(
                self.model_name, self.version, width, height, detections, item.timings, item.features
            )
        except Exception as err:  # noqa: BLE001
            if is_device_fault(err):
                raise  # the device failed, not this request: a server fault for the batch
            log.exception("postprocess failed")
            item.outcome = InternalError(f"internal error while postprocessing: {type(err).__name__}")


def _exif_orientation(probed: Image.Image) -> int:
    """The EXIF orientation (1-8) from a parsed header; 1 when absent or unreadable."""
    try:
        return int(probed.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block: PIL's exif_transpose ignores it as well
        return 1
