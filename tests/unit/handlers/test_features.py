"""Input statistics, output features, and the handler metrics that carry them (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from handlers import metrics
from handlers.errors import InputError
from handlers.features import INPUT_FEATURES, input_features, output_features
from handlers.schema import Detection, DetectionResult
from scripts.paths import REPO
from tests.support import images


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),  # smallest possible image
        np.full((50, 80, 3), 128, np.uint8),  # flat grey
        np.zeros((3000, 200, 3), np.uint8),  # tall and thin: thumbnail keeps its aspect
    ],
)
def test_flat_images_have_no_contrast_or_sharpness(image: np.ndarray) -> None:
    features = input_features(image)
    assert set(features) == set(INPUT_FEATURES)
    assert (features["width"], features["height"]) == (image.shape[1], image.shape[0])
    assert features["brightness"] == pytest.approx(float(image.mean()), abs=0.5)
    assert features["contrast"] == pytest.approx(0.0, abs=1e-6)
    assert features["sharpness"] == pytest.approx(0.0, abs=1e-6)


def test_darkening_and_blur_move_the_right_statistics() -> None:
    photo = images.astronaut()
    base = input_features(photo)
    dark = input_features((photo * 0.35).astype(np.uint8))
    blurred = input_features(cv2.GaussianBlur(photo, (0, 0), 3.0))
    assert dark["brightness"] < 0.45 * base["brightness"]
    assert dark["contrast"] < 0.45 * base["contrast"]
    assert blurred["sharpness"] < 0.2 * base["sharpness"]
    assert blurred["brightness"] == pytest.approx(base["brightness"], rel=0.02)


def test_tensor_input_matches_numpy_input() -> None:
    photo = images.grace_hopper()
    from_numpy = input_features(photo)
    from_tensor = input_features(torch.from_numpy(photo.copy()).permute(2, 0, 1).contiguous())
    for name in INPUT_FEATURES:
        assert from_tensor[name] == pytest.approx(from_numpy[name], rel=0.01), name


@pytest.mark.parametrize(
    ("detections", "expected_count", "expected_sizes"),
    [
        ([], 0.0, []),
        ([Detection("face", 0.9, (0, 0, 50, 50))], 1.0, [0.5]),
        ([Detection("face", 0.9, (0, 0, 10, 40)), Detection("face", 0.6, (5, 5, 5, 9))], 2.0, [0.2, 0.0]),
    ],
)
def test_output_features(detections, expected_count, expected_sizes) -> None:
    features = output_features(detections, width=200, height=100)
    assert features["detections"] == expected_count
    assert features["score"] == [d.score for d in detections]
    assert features["box_size"] == pytest.approx(expected_sizes)


def test_features_are_never_serialized() -> None:
    result = DetectionResult("m", "1", 10, 10, [], {"decode": 1.0}, features={"width": 10.0})
    plain = DetectionResult("m", "1", 10, 10, [], {"decode": 1.0})
    assert json.dumps(result.to_json()) == json.dumps(plain.to_json())
    assert result == plain


def test_specs_match_the_metrics_yaml() -> None:
    """A model metric the yaml does not declare is dropped by TorchServe in prometheus mode."""
    spec = yaml.safe_load((REPO / "monitoring" / "ts_metrics.yaml").read_text())
    declared = {
        (m["name"], kind, m["unit"], tuple(m["dimensions"]))
        for kind, entries in spec["model_metrics"].items()
        for m in entries
    }
    for s in metrics.SPECS:
        assert (s.name, s.kind, s.unit, s.dims) in declared, s.name
    # the wheel's built-in metrics are all still declared
    default = yaml.safe_load(
        (REPO / ".venv/lib/python3.11/site-packages/ts/configs/metrics.yaml").read_text()
    )
    if default:
        for section in ("ts_metrics", "model_metrics"):
            for kind, entries in default[section].items():
                names = {m["name"] for m in spec[section][kind]}
                assert {m["name"] for m in entries} <= names


class FakeMetric:
    def __init__(self, log: list, name: str) -> None:
        self.log, self.name = log, name

    def add_or_update(self, value: float, dimension_values: list) -> None:
        self.log.append((self.name, round(value, 6), tuple(dimension_values)))


class FakeCache:
    def __init__(self) -> None:
        self.log: list = []

    def add_metric_to_cache(self, name, unit, dimension_names, metric_type) -> FakeMetric:
        return FakeMetric(self.log, name)


def test_record_batch_emits_scaled_values_and_writes_the_feature_log(tmp_path: Path) -> None:
    cache = FakeCache()
    handler_metrics = metrics.HandlerMetrics(cache, "face_detector", "2.0", metrics.FeatureLog(tmp_path))
    timings = {"decode": 2.0, "preprocess": 3.0, "inference": 80.0, "postprocess": 1.0}
    features = {"width": 640.0, "height": 480.0, "brightness": 127.5, "contrast": 63.75, "sharpness": 500.0}
    ok = DetectionResult(
        "face_detector", "2.0", 640, 480, [Detection("face", 0.99, (0, 0, 48, 48))], timings, features
    )
    handler_metrics.record_batch([ok, InputError("bad", 415, "unsupported_format")])
    emitted = {(name, dims[2:]): value for name, value, dims in cache.log}
    assert emitted[("ts_handler_batch_size", ())] == 2
    assert emitted[("ts_handler_stage_latency_seconds", ("inference",))] == 0.08
    assert emitted[("ts_handler_request_latency_seconds", ())] == 0.086
    assert emitted[("ts_handler_detection_score_gap", ())] == 0.01
    assert emitted[("ts_handler_input_width_kilopixels", ())] == 0.64
    assert emitted[("ts_handler_input_brightness_ratio", ())] == 0.5
    assert emitted[("ts_handler_input_contrast_ratio", ())] == 0.5
    assert emitted[("ts_handler_errors", ("unsupported_format",))] == 1
    assert all(dims[:2] == ("face_detector", "2.0") for _, _, dims in cache.log)
    handler_metrics.feature_log.close()
    (record,) = [json.loads(line) for line in handler_metrics.feature_log.path.read_text().splitlines()]
    assert record["detections"] == 1 and record["score"] == [0.99] and record["width"] == 640.0
    assert record["box_size"] == [0.1]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),  # no server log location: no feature log (in-process scoring)
        ({"LOG_LOCATION": "/srv/logs"}, Path("/srv/logs/features")),
        ({"LOG_LOCATION": "/srv/logs", "DETECTION_FEATURE_LOG": "/data/f"}, Path("/data/f")),
        ({"LOG_LOCATION": "/srv/logs", "DETECTION_FEATURE_LOG": "off"}, None),
        ({"LOG_LOCATION": "/srv/logs", "DETECTION_METRICS": "off"}, None),
    ],
)
def test_feature_log_location(monkeypatch: pytest.MonkeyPatch, env: dict, expected: Path | None) -> None:
    for name in ("LOG_LOCATION", "DETECTION_FEATURE_LOG", "DETECTION_METRICS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert metrics.feature_log_dir() == expected
