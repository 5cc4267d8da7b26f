"""object_detector in-process: torchvision parity, batch independence, settings, weights checks, build.

All weights here are SEEDED RANDOM weights (tests/support/object_weights.py): no COCO weights can be had on
these machines, so these tests check the plumbing, never detection quality.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torchvision.models import detection

from handlers.coco_labels import COCO_CATEGORIES
from handlers.config import ConfigError, ObjectDetectorConfig
from handlers.object_detector import TorchvisionDetector
from handlers.object_models import (
    ARCHITECTURES,
    WeightsError,
    build_model,
    read_state_dict,
    weights_mismatch,
)
from handlers.pipeline import DetectionPipeline
from handlers.settings import DetectorSettings
from scripts.packaging import build_object_detector as builder
from tests.support.images import astronaut, encode, grace_hopper
from tests.support.object_weights import save_seeded_weights, seeded_state_dict

SSD = "ssdlite320_mobilenet_v3_large"
FRCNN = "fasterrcnn_mobilenet_v3_large_fpn"
SMALL = {"min_size": 320}  # keeps Faster R-CNN fast on CPU; the code path is the same as at 800
LOW = DetectorSettings(score_threshold=0.3, nms_iou=0.5, max_detections=100, inference_size=480)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("object-weights")
    return {arch: save_seeded_weights(arch, folder / f"{arch}.pt") for arch in (SSD, FRCNN)}


def make_detector(arch: str, weights: dict[str, Path], **section) -> TorchvisionDetector:
    config = ObjectDetectorConfig.from_section({"architecture": arch, **SMALL, **section}).model()
    return TorchvisionDetector(config, weights[arch])


def detect(detector: TorchvisionDetector, image: np.ndarray, settings: DetectorSettings = LOW):
    prepared = detector.preprocess(image, settings)
    return detector.postprocess(detector.infer([prepared])[0], prepared, settings)


def test_coco_names_are_torchvisions():
    for arch in ARCHITECTURES.values():
        assert list(COCO_CATEGORIES) == arch.coco_weights.meta["categories"]


@pytest.mark.parametrize("arch", [SSD, FRCNN])
def test_same_detections_as_stock_torchvision(arch, weights):
    detector = make_detector(arch, weights)
    stock = build_model(arch, 91)
    stock.load_state_dict(torch.load(weights[arch], weights_only=True))
    stock.eval()
    stock.transform.min_size, stock.transform.max_size = (320,), LOW.inference_size
    post = getattr(stock, "roi_heads", stock)
    post.score_thresh, post.nms_thresh, post.detections_per_img = 0.3, 0.5, 100
    image = astronaut()[:400, :300]  # not square: exercises both scale ratios
    with torch.no_grad():
        expected = stock([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    ours = detect(detector, image)
    assert len(ours) == len(expected["scores"]) >= 3, "vacuous comparison: no detections"
    assert [d.class_id for d in ours] == expected["labels"].tolist()
    assert np.allclose([d.box for d in ours], expected["boxes"].numpy(), atol=1e-3)
    assert np.allclose([d.score for d in ours], expected["scores"].numpy(), atol=1e-5)
    assert [d.label for d in ours] == [COCO_CATEGORIES[d.class_id] for d in ours]


@pytest.mark.parametrize("arch", [SSD, FRCNN])
def test_mixed_sizes_in_one_batch_equal_single_images(arch, weights):
    pipeline = DetectionPipeline(make_detector(arch, weights), "object_detector", "1.0", LOW)
    images = [astronaut(), grace_hopper()[:300, :250], astronaut()[100:400], skdata.coffee(), astronaut()]
    bodies = [{"body": encode(image)} for image in images]
    batched = pipeline.process(bodies)
    singles = [pipeline.process([body])[0] for body in bodies]
    assert sum(len(r.detections) for r in singles) >= 5
    for one, many in zip(singles, batched):
        assert (one.width, one.height) == (many.width, many.height)
        assert [d.class_id for d in one.detections] == [d.class_id for d in many.detections]
        assert np.allclose([d.box for d in one.detections], [d.box for d in many.detections], atol=1e-3)


@pytest.mark.parametrize(
    "arch, height, width, inference_size, expected",
    [
        (FRCNN, 480, 640, 1333, (800, 1066)),  # torchvision's defaults: short side to 800
        (FRCNN, 480, 640, 640, (480, 640)),  # long side capped
        (FRCNN, 1, 1, 1333, (800, 800)),  # a single pixel is upscaled like any image
        (FRCNN, 1, 10000, 1333, (1, 1333)),  # extreme aspect ratio: never a zero side
        (SSD, 480, 640, 1333, (320, 320)),  # fixed square input
        (SSD, 1, 1, 64, (320, 320)),
    ],
)
def test_network_size(arch, height, width, inference_size, expected, weights):
    config = ObjectDetectorConfig.from_section({"architecture": arch}).model()
    assert TorchvisionDetector(config, weights[arch]).network_size(height, width, inference_size) == expected


@pytest.mark.parametrize(
    "settings, check",
    [
        (DetectorSettings(score_threshold=1.0), lambda ds: ds == []),  # the empty answer
        (LOW, lambda ds: all(d.score > 0.3 for d in ds) and len(ds) >= 3),
        (DetectorSettings(0.0, 0.5, 3, 480), lambda ds: len(ds) == 3),
    ],
)
def test_thresholds_map_onto_the_model(settings, check, weights):
    detections = detect(make_detector(SSD, weights), astronaut(), settings)
    assert check(detections)
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert all(0 <= d.box[0] <= d.box[2] <= 512 and 0 <= d.box[1] <= d.box[3] <= 512 for d in detections)


def test_user_labels_name_the_classes(tmp_path):
    weights = {SSD: save_seeded_weights(SSD, tmp_path / "w.pt", num_classes=4)}
    names = ["__background__", "helmet", "vest", "boot"]
    detections = detect(
        make_detector(SSD, weights, labels=names), astronaut(), DetectorSettings(0.0, 0.5, 20)
    )
    assert detections and all(d.label == names[d.class_id] and d.class_id >= 1 for d in detections)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"architecture": "yolov8"}, "write one of: ssdlite320_mobilenet_v3_large"),
        ({"architecture": SSD, "labels": "imagenet"}, "labels must be 'coco' or a list"),
        ({"architecture": SSD, "labels": ["bg", ""]}, "non-empty names"),
        ({"architecture": SSD, "min_size": 10}, "min_size=10 is outside [32, 2048]"),
        ({"architecture": SSD, "min_size": 320.5}, "min_size must be int (a whole number) or null"),
        ({"labels": "coco"}, "missing key 'architecture'"),
    ],
)
def test_bad_model_config_says_what_to_write(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ObjectDetectorConfig.from_section(section)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_min_size_defaults_to_the_architectures(arch):
    config = ObjectDetectorConfig.from_section({"architecture": arch})
    assert config.model().min_size == ARCHITECTURES[arch].min_size
    assert config.model().labels == COCO_CATEGORIES


class _NotATensor:
    pass


@pytest.mark.parametrize(
    "content, message",
    [
        (
            lambda p: torch.save({"net": _NotATensor()}, p),
            r"refused it \(.*Unsupported global: GLOBAL .*_NotATensor\)",
        ),
        (lambda p: p.write_bytes(b"not a torch file at all"), "is not a torch weights file"),
        (lambda p: torch.save({"epoch": torch.tensor(3)}, p) or None, None),  # a 1-key state_dict: loads
        (lambda p: torch.save([torch.zeros(1)], p), "not a state_dict"),
        (lambda p: pickle.dump({"a": 1}, p.open("wb")), "weights-only loading refused it"),
    ],
)
def test_read_state_dict_errors(tmp_path, content, message):
    path = tmp_path / "w.pt"
    content(path)
    if message is None:
        assert set(read_state_dict(path)) == {"epoch"}
        return
    with pytest.raises(WeightsError, match=message):
        read_state_dict(path)


def test_training_checkpoint_is_unwrapped(tmp_path, weights):
    state = torch.load(weights[SSD], weights_only=True)
    torch.save({"model": state, "epoch": 7}, tmp_path / "ckpt.pth")
    assert set(read_state_dict(tmp_path / "ckpt.pth")) == set(state)


def test_mismatch_names_keys_and_suggests_the_architecture(weights):
    state = torch.load(weights[SSD], weights_only=True)
    message = weights_mismatch(FRCNN, 91, state)
    assert "missing key(s): backbone.body.0.0.weight" in message or "missing key(s)" in message
    assert "unexpected key(s): backbone.extra.0.0.0.weight" in message
    assert f"These are {SSD} weights" in message
    assert weights_mismatch(SSD, 91, state) is None


def test_class_count_mismatch_points_at_the_labels(weights):
    message = weights_mismatch(SSD, 5, torch.load(weights[SSD], weights_only=True))
    assert "shape mismatch" in message and "labels file" in message


def test_wrong_weights_fail_the_build_with_key_names(tmp_path, weights, capsys):
    with pytest.raises(SystemExit) as exit_info:
        builder.main(["--architecture", FRCNN, "--weights", str(weights[SSD]), "--store", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith("error:") and "missing key(s)" in message and "unexpected key(s)" in message
    assert f"--architecture {SSD}" in message
    assert not list(tmp_path.glob("*.mar"))


def test_build_without_weights_explains_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        SystemExit, match="pass --weights FILE.*fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"
    ):
        builder.main(["--architecture", FRCNN, "--store", str(tmp_path)])


def test_build_picks_up_torchvisions_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = builder.torchvision_cache_file(SSD)
    assert cached.name == Path(detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.url).name
    cached.parent.mkdir(parents=True)
    state = seeded_state_dict(SSD)
    # torchvision's COCO checkpoints come from FrozenBatchNorm2d models: no BatchNorm counters.
    torch.save({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, cached)
    target = builder.build_object_detector(SSD, store=tmp_path / "store", overrides={"score_threshold": 0.4})
    assert target.name == "object_detector-1.0.mar" and target.stat().st_size > 10e6


@pytest.mark.parametrize(
    "lines, message",
    [("bg\n\ncat\n", r"line\(s\) \[2\] are empty"), ("bg\n", "names 1 class"), ("bg\ncat\n\n\n", None)],
)
def test_labels_file_format(tmp_path, lines, message):
    path = tmp_path / "labels.txt"
    path.write_text(lines)
    if message is None:
        assert builder.read_labels(path) == ["bg", "cat"]
    else:
        with pytest.raises(builder.BuildError, match=message):
            builder.read_labels(path)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"score_threshold": 1.5}, "score_threshold=1.5 is outside"),
        ({"no_such_key": 1}, "unknown setting 'no_such_key'"),
        ({"min_size": 5}, "min_size=5 is outside"),
        ({"torch_threads": -1}, "torch_threads=-1 is outside"),
    ],
)
def test_bad_settings_fail_the_build(values, message):
    text = builder.TEMPLATE.read_text()
    with pytest.raises(builder.BuildError, match=message):
        builder.validate_config(builder.render_config(text, values))


def test_rendered_config_keeps_comments_and_records_the_model():
    text = builder.render_config(
        builder.TEMPLATE.read_text(),
        {"architecture": SSD, "labels": ["bg", "a b", 'q"uote'], "nms_iou": 0.55},
    )
    section = builder.validate_config(text)
    assert section["architecture"] == SSD and section["labels"] == ["bg", "a b", 'q"uote']
    assert section["nms_iou"] == 0.55
    assert "# [0.05, 0.95] class-wise NMS IoU" in text
