from __future__ import annotations

import base64

import pytest

from handlers.errors import InputError
from handlers.request_parsing import parse_request

PNG = b"\x89PNG fake"


@pytest.mark.parametrize(
    "item, image, overrides",
    [
        ({"body": bytearray(PNG)}, PNG, {}),
        ({"data": bytearray(PNG), "score_threshold": b"0.3"}, PNG, {"score_threshold": b"0.3"}),
        ({"body": {"image": base64.b64encode(PNG).decode(), "nms_iou": 0.2}}, PNG, {"nms_iou": 0.2}),
        ({"body": {"image": "data:image/png;base64," + base64.b64encode(PNG).decode()}}, PNG, {}),
        ({"body": b""}, b"", {}),  # empty is the decoder's to reject, with its own message
    ],
)
def test_accepted_shapes(item, image, overrides):
    parsed = parse_request(item)
    assert parsed.image_bytes == image and parsed.overrides == overrides


@pytest.mark.parametrize(
    "item, message",
    [
        ({}, "no body"),
        ({"body": {"img": "x"}}, '"image"'),
        ({"body": {"image": "not base64!!"}}, "not valid base64"),
        ({"body": {"image": 5}}, '"image"'),
        ({"body": [1, 2]}, "must be an object"),
        ({"body": "text"}, "arrived as text"),
        ({"body": b'{"image": '}, "looks like JSON"),
        ({"body": b"x", "scor": "1"}, "unknown parameter"),
    ],
)
def test_rejected_shapes(item, message):
    with pytest.raises(InputError, match=message) as err:
        parse_request(item)
    assert err.value.status == 400
