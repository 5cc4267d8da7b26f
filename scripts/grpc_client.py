"""TorchServe gRPC inference client: unary ``Predictions`` over one HTTP/2 channel.

Same contract as :class:`scripts.client.DetectionClient` (same tokens, same typed errors, same
:class:`~handlers.schema.DetectionResult`), so callers can switch transports with a flag.
The channel is thread-safe: several threads calling :meth:`GrpcDetectionClient.detect` at once
pipeline their requests on the one connection.

What TorchServe 0.12.0 does over gRPC (checked against a running server; see docs/streaming.md):
- the token travels as ``authorization: Bearer <key>`` metadata; a bad or expired key is
  PERMISSION_DENIED: the key is renewed through :class:`~scripts.config.TokenStore` and the call
  retried once;
- a request the handler rejects (bad image, bad setting) still ends with status OK: the prediction
  bytes hold the handler's error JSON ``{"code", "type", "message"}``, turned into RequestRejected;
- unknown model or version is INTERNAL with ``ModelNotFoundException`` in the details;
- ``StreamPredictions2`` only serves models with sequence batching, so it is not used here.

Stubs are generated at build time (``make grpc-stubs``, scripts/packaging/grpc_stubs.py).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc

from handlers.schema import DetectionResult
from scripts.config import (
    AuthError,
    ClientError,
    Endpoints,
    ModelNotReady,
    RequestRejected,
    ServerUnavailable,
    TokenStore,
)
from scripts.packaging.grpc_stubs import OUT as STUBS_DIR

__all__ = ["CHANNEL_OPTIONS", "MAX_MESSAGE_BYTES", "GrpcDetectionClient", "load_stubs"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # matches max_request_size / max_response_size in config.properties
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC's own reconnect backoff grows to 120 s by default; keep it short so that a restarted
    # server is seen within seconds (the stream client adds its own, logged backoff on top).
    # Not grpc.min_reconnect_backoff_ms: gRPC core also uses it as the connect timeout (20 s by
    # default), and a small value fails connections to a busy server before its SETTINGS frame.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
)
UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
NOT_READY_MARKERS = ("ModelNotFoundException", "ModelVersionNotFoundException", "worker")


def load_stubs() -> tuple[Any, Any, Any]:
    """(inference_pb2, inference_pb2_grpc, empty_pb2); a readable error when not generated yet."""
    if str(STUBS_DIR) not in sys.path:
        sys.path.insert(0, str(STUBS_DIR))
    try:
        from google.protobuf import empty_pb2
        from torchserve_grpc import inference_pb2, inference_pb2_grpc
    except ImportError as err:
        raise ImportError(
            f"TorchServe gRPC stubs not found in {STUBS_DIR} ({err}); generate them with "
            "`make grpc-stubs` (or `python -m scripts.packaging.grpc_stubs`)"
        ) from None
    return inference_pb2, inference_pb2_grpc, empty_pb2


class GrpcDetectionClient:
    """Inference over gRPC: send one encoded image, get a :class:`DetectionResult` back."""

    def __init__(
        self, endpoints: Endpoints | None = None, tokens: TokenStore | None = None, timeout: float = 30.0
    ) -> None:
        self.endpoints = endpoints or Endpoints.default()
        self.tokens = tokens or TokenStore(None, self.endpoints)
        self.timeout = timeout
        self._pb, pb_grpc, self._empty = load_stubs()
        self.channel = grpc.insecure_channel(self.endpoints.grpc_inference, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.InferenceAPIsServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcDetectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detect(
        self, image: bytes, model: str = "face_detector", version: str | None = None, **settings: Any
    ) -> DetectionResult:
        """Encoded image bytes (JPEG, PNG, ...) -> detections. Settings travel as input map entries."""
        inputs = {"data": bytes(image)}
        inputs.update({name: str(value).encode() for name, value in settings.items()})
        request = self._pb.PredictionsRequest(model_name=model, model_version=version or "", input=inputs)
        what = f"predict {model}{'/' + version if version else ''} over gRPC"
        response = self._call(self.stub.Predictions, request, what)
        return _parse_prediction(response.prediction, what)

    def ping(self) -> str:
        return self._call(self.stub.Ping, self._empty.Empty(), "ping over gRPC").health

    def _call(self, method: Any, request: Any, what: str) -> Any:
        key = self.tokens.get("inference")
        for attempt in range(2):
            metadata = (("authorization", f"Bearer {key}"),) if key else ()
            try:
                return method(request, metadata=metadata, timeout=self.timeout)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.PERMISSION_DENIED and attempt == 0:
                    key = self.tokens.refresh("inference")
                    continue
                raise _typed_error(err, what, self.endpoints.grpc_inference) from None
        raise AssertionError("unreachable")


def _parse_prediction(payload: bytes, what: str) -> DetectionResult:
    try:
        body = json.loads(payload)
    except ValueError:
        raise ClientError(f"{what}: response is not JSON: {payload[:200]!r}") from None
    if isinstance(body, dict) and "detections" in body:
        return DetectionResult.from_json(body)
    # The handler's per-request error: gRPC reports OK, the body carries the HTTP-style code.
    status = body.get("code") if isinstance(body, dict) else None
    message = body.get("message", body) if isinstance(body, dict) else body
    if isinstance(status, int) and status < 500:
        raise RequestRejected(f"{what} rejected ({status}): {message}", status, body)
    raise ClientError(f"{what} failed ({status}): {message}", status, body)


def _typed_error(err: grpc.RpcError, what: str, address: str) -> ClientError:
    code, details = err.code(), (err.details() or "").strip()
    if code in UNAVAILABLE_CODES:
        return ServerUnavailable(
            f"TorchServe gRPC is not reachable at {address} ({code.name}: {details}); "
            "is it running? try `make serve`"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return AuthError(f"{what}: inference token rejected even after renewal: {details}")
    first_line = details.splitlines()[0] if details else code.name
    if any(marker in details for marker in NOT_READY_MARKERS):
        return ModelNotReady(f"{what}: {first_line}")
    return ClientError(f"{what} failed ({code.name}): {first_line}")
