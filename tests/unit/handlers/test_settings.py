from __future__ import annotations

import pytest

from handlers.errors import InputError
from handlers.settings import DetectorSettings


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({}, DetectorSettings()),
        ({"score_threshold": "0.8"}, DetectorSettings(score_threshold=0.8)),
        ({"max_detections": b"7"}, DetectorSettings(max_detections=7)),
        ({"inference_size": 320.0, "nms_iou": 0.3}, DetectorSettings(inference_size=320, nms_iou=0.3)),
    ],
)
def test_valid_overrides(overrides, expected):
    assert DetectorSettings().with_overrides(overrides) == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"score_threshold": 1.5}, "outside [0.0, 1.0]"),
        ({"score_threshold": "high"}, "must be a number"),
        ({"max_detections": 2.5}, "whole number"),
        ({"inference_size": 10}, "outside [64, 2048]"),
        ({"score": 0.3}, "unknown setting 'score'"),
    ],
)
def test_invalid_overrides_are_400(overrides, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        DetectorSettings().with_overrides(overrides)
    assert err.value.status == 400
