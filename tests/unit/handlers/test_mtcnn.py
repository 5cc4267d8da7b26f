"""face_detector 1.0 (MTCNN) in process: parity with the facenet-pytorch reference implementation,
mixed-size batches, edge cases, weights and settings validation. The served path is in test_versions.py."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from handlers.config import ConfigError, MTCNNConfig
from handlers.mtcnn import MTCNN, CascadeConfig, min_overlap_nms
from handlers.mtcnn_detector import MTCNNDetector
from handlers.settings import DetectorSettings
from scripts.paths import REPO
from tests.support.images import ASTRONAUT_FACE, CAMERA_FACE, GRACE_HOPPER_FACE, astronaut, grace_hopper, iou

WEIGHTS = REPO / "build" / "mtcnn.pt"
# The reference cascade's settings: final threshold 0.7, no extra IoU NMS, no shrinking.
REFERENCE = DetectorSettings(score_threshold=0.7, nms_iou=0.95, inference_size=2048)


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    if not WEIGHTS.exists():
        from scripts.packaging.convert_mtcnn import main as convert

        convert(["--out", str(WEIGHTS)])
    return MTCNNDetector(WEIGHTS)


def detect(detector: MTCNNDetector, images: list[np.ndarray], settings: DetectorSettings = REFERENCE):
    prepared = [detector.preprocess(image, settings) for image in images]
    raw = detector.infer(prepared)
    return [detector.postprocess(r, p, settings) for r, p in zip(raw, prepared)]


def camera_rgb() -> np.ndarray:
    return np.repeat(skdata.camera()[..., None], 3, axis=2)


FACES = {"astronaut": (astronaut, ASTRONAUT_FACE), "grace_hopper": (grace_hopper, GRACE_HOPPER_FACE),
         "camera": (camera_rgb, CAMERA_FACE)}  # fmt: skip


def test_weights_are_a_weights_only_state_dict():
    state = torch.load(WEIGHTS, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"pnet", "rnet", "onet"}
    MTCNN().load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", [*FACES, "coffee", "chelsea", "rocket"])
def test_matches_the_reference_implementation(detector, name):
    facenet = pytest.importorskip("facenet_pytorch")  # the reference, used by tests only
    image = FACES[name][0]() if name in FACES else getattr(skdata, name)()
    boxes, probs, points = facenet.MTCNN(keep_all=True, select_largest=False).detect(
        image.copy(), landmarks=True
    )
    ours = detect(detector, [image])[0]
    if boxes is None:
        assert ours == []
        return
    assert len(ours) == len(boxes)
    for face, box, prob, marks in zip(ours, boxes, probs, points):
        assert np.allclose(face.box, np.asarray(box, dtype=float), atol=0.05)
        assert abs(face.score - float(prob)) < 1e-4
        assert np.allclose(face.landmarks, np.asarray(marks, dtype=float), atol=0.05)


@pytest.mark.parametrize("name", list(FACES))
def test_finds_the_face_with_landmarks_inside(detector, name):
    make, expected = FACES[name]
    faces = detect(detector, [make()], DetectorSettings(score_threshold=0.7))[0]
    assert len(faces) == 1
    assert iou(faces[0].box, expected) >= 0.6
    x1, y1, x2, y2 = faces[0].box
    assert len(faces[0].landmarks) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in faces[0].landmarks)


def test_mixed_size_batch_equals_single_images(detector):
    sizes = [(512, 512), (640, 480), (333, 517), (256, 256), (720, 405)]
    images = [
        cv2.resize(astronaut() if i % 2 else grace_hopper(), size, interpolation=cv2.INTER_AREA)
        for i, size in enumerate(sizes)
    ]
    images.append(skdata.coffee())
    singles = [detect(detector, [image])[0] for image in images]
    batched = detect(detector, images)
    assert [len(s) for s in singles] == [len(b) for b in batched]
    assert sum(len(s) for s in singles) >= 5
    for single, together in zip(singles, batched):
        for a, b in zip(single, together):
            assert np.allclose(a.box, b.box, atol=0.05) and abs(a.score - b.score) < 1e-4


@pytest.mark.parametrize(
    "image",
    [np.zeros((1, 1, 3), np.uint8), np.full((11, 40, 3), 200, np.uint8), np.zeros((64, 64, 3), np.uint8)],
    ids=["1x1", "below_one_window", "blank"],
)
def test_no_face_images_give_empty_results(detector, image):
    assert detect(detector, [image, astronaut()])[0] == []


def test_threshold_one_drops_every_face(detector):
    assert detect(detector, [astronaut()], DetectorSettings(score_threshold=1.0))[0] == []


def test_shrinking_maps_boxes_back_to_original_pixels(detector):
    faces = detect(detector, [astronaut()], DetectorSettings(score_threshold=0.7, inference_size=256))[0]
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) >= 0.6


@pytest.mark.parametrize(
    "boxes, scores, expected",
    [
        (torch.zeros(0, 4), torch.zeros(0), []),
        (torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([0.9]), [0]),
        # A box inside a better one: IoU 0.25, but overlap over the smaller area is 1 -> dropped.
        (torch.tensor([[0.0, 0, 19, 19], [0, 0, 9, 9]]), torch.tensor([0.9, 0.8]), [0]),
        (torch.tensor([[0.0, 0, 9, 9], [50, 50, 59, 59]]), torch.tensor([0.5, 0.8]), [1, 0]),
    ],
)
def test_min_overlap_nms(boxes, scores, expected):
    assert min_overlap_nms(boxes, scores, 0.7).tolist() == expected


@pytest.mark.parametrize(
    "section, message",
    [
        ({"min_face_size": 5}, r"min_face_size=5 is outside \[12, 1000\]"),
        ({"pyramid_factor": 0.99}, r"pyramid_factor=0.99 is outside \[0.3, 0.95\]"),
        ({"pnet_threshold": 1.5}, r"pnet_threshold=1.5 is outside \[0.0, 1.0\]"),
        ({"rnet_threshold": "x"}, r"rnet_threshold must be float \(a number\), got 'x' \(str\)"),
    ],
)
def test_bad_cascade_settings_fail_with_the_fix(section, message):
    with pytest.raises(ConfigError, match=message):
        MTCNNConfig.from_section(section)


def test_cascade_settings_defaults_and_overrides():
    assert MTCNNConfig.from_section({}).cascade() == CascadeConfig()
    assert MTCNNConfig.from_section({"min_face_size": 40}).cascade().min_face_size == 40
