"""How a frame reaches the server: resize + JPEG encode, then REST or gRPC.

A :class:`Transport` is called from several threads at once (one per request in flight):
- REST: one :class:`~scripts.client.DetectionClient` per thread, each with its own keep-alive
  connection (a requests.Session is not meant to be shared between threads); tokens are shared.
- gRPC: one :class:`~scripts.grpc_client.GrpcDetectionClient`, i.e. one HTTP/2 channel, on which
  the threads' unary ``Predictions`` calls are multiplexed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from handlers.schema import Detection, DetectionResult
from scripts.client import DetectionClient, Endpoints, TokenStore

__all__ = [
    "MIN_SIDE",
    "TRANSPORTS",
    "EncodeOptions",
    "GrpcTransport",
    "ModelOptions",
    "RestTransport",
    "Transport",
    "encode_frame",
    "make_transport",
    "parse_resize",
    "scale_result",
    "target_size",
]

TRANSPORTS = ("rest", "grpc")
MIN_SIDE = 8  # pixels; the detector's smallest stride is 8


@dataclass(frozen=True)
class EncodeOptions:
    resize: tuple[int, int] | int | None = None  # (width, height), longest side, or None: as captured
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg quality must be 1..100 (e.g. 85), got {self.jpeg_quality}")
        if self.resize is None:
            return
        sizes = self.resize if isinstance(self.resize, tuple) else (self.resize,)
        if len(sizes) not in (1, 2) or any(int(s) < MIN_SIDE for s in sizes):
            raise ValueError(
                f"resize must be WxH (e.g. 640x480) or a longest side >= {MIN_SIDE}, got {self.resize}"
            )


def parse_resize(text: str | None) -> tuple[int, int] | int | None:
    """'640x480' -> (640, 480); '640' -> 640 (longest side); '' / None -> None."""
    if not text:
        return None
    try:
        if "x" in text.lower():
            width, height = (int(v) for v in text.lower().split("x", 1))
            return width, height
        return int(text)
    except ValueError:
        raise ValueError(
            f"--resize takes WxH (e.g. 640x480) or a longest side (e.g. 640), got {text!r}"
        ) from None


def target_size(width: int, height: int, resize: tuple[int, int] | int | None) -> tuple[int, int]:
    if resize is None:
        return width, height
    if isinstance(resize, tuple):
        return resize
    scale = resize / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_frame(image: np.ndarray, options: EncodeOptions) -> tuple[bytes, tuple[float, float]]:
    """BGR frame -> (JPEG bytes, (sx, sy)) where sx, sy map sent pixels back to captured pixels."""
    height, width = image.shape[:2]
    new_w, new_h = target_size(width, height, options.resize)
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if new_w < width else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])
    if not ok:
        raise ValueError("OpenCV could not JPEG-encode the frame")
    return buffer.tobytes(), (width / new_w, height / new_h)


def scale_result(result: DetectionResult, sx: float, sy: float) -> DetectionResult:
    """Detections from sent-image pixels back to captured-frame pixels."""
    if (sx, sy) == (1.0, 1.0):
        return result

    def scale(d: Detection) -> Detection:
        x1, y1, x2, y2 = d.box
        landmarks = [(x * sx, y * sy) for x, y in d.landmarks] if d.landmarks is not None else None
        return replace(d, box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy), landmarks=landmarks)

    return replace(
        result,
        width=round(result.width * sx),
        height=round(result.height * sy),
        detections=[scale(d) for d in result.detections],
    )


class Transport(Protocol):
    name: str

    def detect(self, image: bytes) -> DetectionResult: ...

    def ping(self) -> str: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ModelOptions:
    model: str = "face_detector"
    version: str | None = None
    settings: dict[str, Any] | None = None  # per-request handler settings, e.g. score_threshold


class RestTransport:
    name = "rest"

    def __init__(
        self, endpoints: Endpoints, tokens: TokenStore, options: ModelOptions, timeout: float = 30.0
    ) -> None:
        self.endpoints, self.tokens, self.options, self.timeout = endpoints, tokens, options, timeout
        self._local = threading.local()
        self._clients: list[DetectionClient] = []
        self._lock = threading.Lock()

    def _client(self) -> DetectionClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = DetectionClient(self.endpoints, self.tokens, self.timeout)
            with self._lock:
                self._clients.append(client)
        return client

    def detect(self, image: bytes) -> DetectionResult:
        o = self.options
        return self._client().detect(image, o.model, o.version, **(o.settings or {}))

    def ping(self) -> str:
        return self._client().ping()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.api.session.close()
            self._clients.clear()


class GrpcTransport:
    name = "grpc"

    def __init__(
        self, endpoints: Endpoints, tokens: TokenStore, options: ModelOptions, timeout: float = 30.0
    ) -> None:
        from scripts.grpc_client import GrpcDetectionClient

        self.options = options
        self.client = GrpcDetectionClient(endpoints, tokens, timeout)

    def detect(self, image: bytes) -> DetectionResult:
        o = self.options
        return self.client.detect(image, o.model, o.version, **(o.settings or {}))

    def ping(self) -> str:
        return self.client.ping()

    def close(self) -> None:
        self.client.close()


def make_transport(
    name: str, endpoints: Endpoints, tokens: TokenStore, options: ModelOptions, timeout: float = 30.0
) -> Transport:
    if name == "rest":
        return RestTransport(endpoints, tokens, options, timeout)
    if name == "grpc":
        return GrpcTransport(endpoints, tokens, options, timeout)
    raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {name!r}")
