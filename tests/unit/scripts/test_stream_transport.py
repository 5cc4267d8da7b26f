"""Frame encoding, resize bookkeeping, and the gRPC client's reading of TorchServe's answers."""

from __future__ import annotations

import json

import cv2
import grpc
import numpy as np
import pytest

from handlers.schema import Detection, DetectionResult
from scripts.client import AuthError, ClientError, ModelNotReady, RequestRejected, ServerUnavailable
from scripts.grpc_client import _parse_prediction, _typed_error
from scripts.stream.transport import EncodeOptions, encode_frame, parse_resize, scale_result, target_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, None), ("", None), ("640x480", (640, 480)), ("1280X720", (1280, 720)), ("512", 512)],
)
def test_parse_resize(text, expected):
    assert parse_resize(text) == expected


@pytest.mark.parametrize("text", ["big", "640x", "x480", "6.5"])
def test_parse_resize_rejects_with_an_example(text):
    with pytest.raises(ValueError, match="640x480"):
        parse_resize(text)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"jpeg_quality": 0}, "jpeg quality must be 1..100"), ({"resize": 4}, "longest side >= 8")],
)
def test_encode_options_validated(options, message):
    with pytest.raises(ValueError, match=message):
        EncodeOptions(**options)


@pytest.mark.parametrize(
    ("size", "resize", "expected"),
    [((640, 480), None, (640, 480)), ((640, 480), 320, (320, 240)), ((480, 640), 320, (240, 320)),
     ((640, 480), (1280, 960), (1280, 960))],
)  # fmt: skip
def test_target_size(size, resize, expected):
    assert target_size(*size, resize) == expected


def test_encode_frame_resizes_and_reports_the_scale_back():
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    data, scale = encode_frame(image, EncodeOptions(resize=320, jpeg_quality=70))
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (240, 320, 3) and scale == (2.0, 2.0)
    smaller, _ = encode_frame(image, EncodeOptions(resize=320, jpeg_quality=20))
    assert len(smaller) < len(data)


def test_scale_result_maps_boxes_and_landmarks_and_keeps_empty_results():
    face = Detection("face", 0.9, (10.0, 20.0, 30.0, 40.0), [(15.0, 25.0)] * 5)
    scaled = scale_result(DetectionResult("m", "1", 320, 240, [face]), 2.0, 2.0)
    assert scaled.detections[0].box == (20.0, 40.0, 60.0, 80.0)
    assert scaled.detections[0].landmarks[0] == (30.0, 50.0)
    assert (scaled.width, scaled.height) == (640, 480)
    empty = scale_result(DetectionResult("m", "1", 320, 240, []), 2.0, 2.0)
    assert empty.detections == [] and empty.width == 640


def test_parse_prediction_reads_detections_and_handler_errors():
    ok = DetectionResult("face_detector", "2.0", 64, 48, []).to_json()
    assert _parse_prediction(json.dumps(ok).encode(), "predict").detections == []
    rejected = {"code": 400, "type": "bad_request", "message": "score_threshold=1.5 is outside [0.0, 1.0]"}
    with pytest.raises(RequestRejected, match="score_threshold=1.5") as err:
        _parse_prediction(json.dumps(rejected).encode(), "predict")
    assert err.value.status == 400
    with pytest.raises(ClientError, match="not JSON"):
        _parse_prediction(b"\x00garbage", "predict")


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", ServerUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ServerUnavailable),
        (grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed", AuthError),
        (grpc.StatusCode.INTERNAL, "Model not found: x\norg...ModelNotFoundException", ModelNotReady),
        (grpc.StatusCode.INTERNAL, "No version 9\n...ModelVersionNotFoundException", ModelNotReady),
        (grpc.StatusCode.INTERNAL, "Worker died.", ClientError),
        (grpc.StatusCode.UNKNOWN, "", ClientError),
    ],
)  # fmt: skip
def test_grpc_status_codes_become_the_typed_errors_of_scripts_client(code, details, kind):
    error = _typed_error(FakeRpcError(code, details), "predict", "127.0.0.1:7070")
    assert type(error) is kind
    assert "\n" not in str(error)
