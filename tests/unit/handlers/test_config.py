"""handlers/config.py: every family's ``handler:`` section checked as a whole, at worker start and
at build time, with the fix in the message."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from handlers.config import (
    FAMILIES,
    ConfigError,
    HandlerConfig,
    MTCNNConfig,
    ObjectDetectorConfig,
    RetinaFaceConfig,
)
from handlers.settings import BOUNDS, DetectorSettings
from scripts.packaging import build_object_detector as object_builder
from scripts.packaging.build_archives import ARCHIVES, ArchiveSpec, BuildError, build, handler_config_type
from scripts.paths import REPO

SSD = "ssdlite320_mobilenet_v3_large"
FACE = ARCHIVES["face_detector-2.0"]
# Which handler reads each shipped config: the archives' own entries, and the object detector's template.
ENTRIES = {spec.config.name: spec.handler for spec in ARCHIVES.values()}
ENTRIES[object_builder.TEMPLATE.name] = object_builder.HANDLER


@pytest.mark.parametrize("path", sorted((REPO / "model_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    assert path.name in ENTRIES, f"{path.name}: no handler reads it; add it to ARCHIVES or the builder"
    config_type = handler_config_type(ENTRIES[path.name])
    section = yaml.safe_load(path.read_text())["handler"]
    config = config_type.from_section(section)
    assert set(section) <= set(config_type.known_keys())
    assert config.settings().score_threshold == section["score_threshold"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        (REPO / "handlers/face_handler.py", RetinaFaceConfig),
        (REPO / "handlers/mtcnn_handler.py", MTCNNConfig),
        (REPO / "handlers/object_handler.py", ObjectDetectorConfig),
        (REPO / "tests/support/fault_handler.py", RetinaFaceConfig),  # a subclass inherits the family
    ],
)
def test_the_entry_file_names_its_family(entry: Path, expected: type[HandlerConfig]) -> None:
    assert handler_config_type(entry) is expected


def test_an_entry_without_a_detection_handler_has_no_family(tmp_path: Path) -> None:
    entry = tmp_path / "echo_handler.py"
    entry.write_text("class EchoHandler:\n    def handle(self, data, context):\n        return data\n")
    assert handler_config_type(entry) is None


@pytest.mark.parametrize(
    "family, section, message",
    [
        (
            RetinaFaceConfig,
            {"score_treshold": 0.8},
            "unknown key 'score_treshold'; did you mean 'score_threshold'?",
        ),
        (RetinaFaceConfig, {"fp61": True}, "unknown key 'fp61'; did you mean 'fp16'?"),
        (RetinaFaceConfig, {"nms": 0.4}, "unknown key 'nms'; did you mean 'nms_iou'?"),
        (MTCNNConfig, {"min_face": 20}, "unknown key 'min_face'; did you mean 'min_face_size'?"),
        (MTCNNConfig, {"backend": "eager"}, "unknown key 'backend': it belongs to RetinaFace"),
        (ObjectDetectorConfig, {"architecture": SSD, "label": "coco"}, "did you mean 'labels'?"),
        (RetinaFaceConfig, {"zzz": 1}, "unknown key 'zzz'; valid keys: weights, score_threshold"),
    ],
)
def test_unknown_key_names_the_closest_valid_one(family, section, message):
    with pytest.raises(ConfigError) as err:
        family.from_section(section)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "family, section, message",
    [
        (RetinaFaceConfig, {"fp16": "yes"}, "fp16 must be bool (true or false), got 'yes' (str)"),
        (RetinaFaceConfig, {"channels_last": 1}, "channels_last must be bool (true or false), got 1 (int)"),
        (
            RetinaFaceConfig,
            {"score_threshold": "0.5"},
            "score_threshold must be float (a number), got '0.5' (str)",
        ),
        (
            RetinaFaceConfig,
            {"score_threshold": True},
            "score_threshold must be float (a number), got True (bool)",
        ),
        (
            RetinaFaceConfig,
            {"inference_size": 640.5},
            "inference_size must be int (a whole number), got 640.5",
        ),
        (RetinaFaceConfig, {"weights": 5}, "weights must be str, got 5 (int)"),
        (
            RetinaFaceConfig,
            {"image_formats": "JPEG"},
            "image_formats must be a list of format names, got 'JPEG'",
        ),
        (MTCNNConfig, {"torch_threads": None}, "torch_threads must be int (a whole number), got None"),
        (
            ObjectDetectorConfig,
            {"architecture": SSD, "min_size": "800"},
            "min_size must be int (a whole number) or null",
        ),
        (ObjectDetectorConfig, {"architecture": SSD, "labels": 3}, "labels must be 'coco' or a list"),
    ],
)
def test_wrong_type_names_key_type_and_value(family, section, message):
    with pytest.raises(ConfigError) as err:
        family.from_section(section)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "family, section, message",
    [
        (RetinaFaceConfig, {"score_threshold": 7}, "score_threshold=7 is outside [0.0, 1.0]"),
        (
            RetinaFaceConfig,
            {"backend": "tensorrt"},
            "backend is 'tensorrt'; write one of: auto, eager, onnxruntime",
        ),
        (RetinaFaceConfig, {"torch_threads": -1}, "torch_threads=-1 is outside [0, 1024]"),
        (RetinaFaceConfig, {"image_formats": ["TIFF"]}, "got unknown ['TIFF']"),
        (RetinaFaceConfig, {"max_image_pixels": 0}, "max_image_pixels=0 is outside"),
        (MTCNNConfig, {"min_face_size": 5}, "min_face_size=5 is outside [12, 1000]"),
        (ObjectDetectorConfig, {"architecture": "yolov8"}, "write one of: ssdlite320_mobilenet_v3_large"),
        (ObjectDetectorConfig, {}, "missing key 'architecture': write one of"),
    ],
)
def test_out_of_bounds_values_and_missing_keys(family, section, message):
    with pytest.raises(ConfigError) as err:
        family.from_section(section)
    assert message in str(err.value)


@pytest.mark.parametrize("family", [RetinaFaceConfig, MTCNNConfig])
@pytest.mark.parametrize("section", [None, {}])
def test_empty_section_means_the_defaults(family, section):
    config = family.from_section(section)
    assert config == family()
    assert config.settings() == DetectorSettings()


@pytest.mark.parametrize("section", [5, "score_threshold: 0.5", ["score_threshold"]])
def test_a_section_that_is_no_mapping_is_refused(section):
    with pytest.raises(ConfigError, match="must be a mapping of key: value"):
        RetinaFaceConfig.from_section(section)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        RetinaFaceConfig.from_section({"score_treshold": 0.8, "fp16": "no", "nms_iou": 2})
    assert len(err.value.problems) == 3
    assert str(err.value).startswith("model-config.yaml handler section (RetinaFace, face_detector 2.0): ")


@pytest.mark.parametrize("family", FAMILIES)
def test_request_settings_share_the_bounds_table(family):
    """The four per-request settings are bounded at start exactly as per request (BOUNDS)."""
    by_name = {f.name: f for f in fields(family)}
    for name, bound in BOUNDS.items():
        assert by_name[name].metadata["bound"] is bound


def test_a_whole_number_is_a_valid_float():
    config = RetinaFaceConfig.from_section({"score_threshold": 1})
    assert config.score_threshold == 1.0 and isinstance(config.score_threshold, float)


def test_only_tensor_decoding_families_decode_on_the_gpu():
    assert RetinaFaceConfig().tensor_decode and not RetinaFaceConfig(gpu_jpeg_decode=False).tensor_decode
    assert not MTCNNConfig().tensor_decode
    assert not ObjectDetectorConfig(architecture=SSD).tensor_decode


def test_building_an_archive_from_a_config_with_a_typo_fails(tmp_path: Path) -> None:
    config = tmp_path / "face_detector-9.0.yaml"
    config.write_text(FACE.config.read_text().replace("score_threshold:", "score_treshold:", 1))
    spec = ArchiveSpec("face_detector", "9.0", FACE.handler, FACE.weights, config, "typo")
    with pytest.raises(BuildError) as err:
        build(spec, tmp_path / "store")
    assert "unknown key 'score_treshold'; did you mean 'score_threshold'?" in str(err.value)
    assert str(config) in str(err.value)
    assert not (tmp_path / "store").exists()  # refused before anything was packed


def test_building_an_object_detector_with_a_wrong_type_fails(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        object_builder.main(["--architecture", SSD, "--set", "fp16=true", "--store", str(tmp_path)])
    assert "unknown setting 'fp16'" in str(exit_info.value.code)
    with pytest.raises(SystemExit) as exit_info:
        object_builder.main(["--architecture", SSD, "--set", "max_detections=many", "--store", str(tmp_path)])
    message = str(exit_info.value.code)
    assert (
        message.startswith("error:") and "max_detections must be int (a whole number), got 'many'" in message
    )
    assert not list(tmp_path.glob("*.mar"))
