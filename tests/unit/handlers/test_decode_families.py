"""Every detector family on the tensor-decode path (``tensor_decode_device="cpu"``: the code that
nvJPEG feeds on a GPU, run with libjpeg), against the host (PIL) path of the same weights.

MTCNN, RetinaFace and the torchvision families (SSD, Faster R-CNN; seeded weights, so only
agreement between the two paths is checked, never ground truth) take a (3, H, W) uint8 tensor as
well as an (H, W, 3) array; sizes above and below each family's inference size, and mixed-format
batches. Which families get the path when served: ``tensor_decode_device`` (RetinaFace only).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch

from handlers.config import MTCNNConfig, ObjectDetectorConfig, RetinaFaceConfig
from handlers.errors import InputError
from handlers.mtcnn_detector import MTCNNDetector
from handlers.object_detector import TorchvisionDetector
from handlers.pipeline import DetectionPipeline, Detector
from handlers.retinaface_detector import RetinaFaceDetector
from handlers.settings import DetectorSettings
from handlers.ts_adapter import tensor_decode_device
from scripts.packaging.build_archives import ARCHIVES
from tests.support.images import ASTRONAUT_FACE, astronaut, encode, grace_hopper, iou
from tests.support.object_weights import save_seeded_weights

SSD, FRCNN = "ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_fpn"
OBJECT_SETTINGS = DetectorSettings(score_threshold=0.3, nms_iou=0.5, max_detections=100, inference_size=480)
# 512 px: under MTCNN's and RetinaFace's default inference size; 1024 px: shrunk on the way in.
SIZES = (512, 1024)


@pytest.fixture(scope="module")
def object_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("object-weights")
    return {arch: save_seeded_weights(arch, folder / f"{arch}.pt") for arch in (SSD, FRCNN)}


def face_detector(family: str) -> Detector:
    if family == "mtcnn":
        return MTCNNDetector(ARCHIVES["face_detector-1.0"].weights)
    return RetinaFaceDetector(ARCHIVES["face_detector-2.0"].weights)


def object_detector(arch: str, weights: dict[str, Path]) -> TorchvisionDetector:
    config = ObjectDetectorConfig.from_section({"architecture": arch, "min_size": 320}).model()
    return TorchvisionDetector(config, weights[arch])


def both_paths(detector: Detector, defaults: DetectorSettings = DetectorSettings()):
    host = DetectionPipeline(detector, "m", "1", defaults=defaults)
    tensor = DetectionPipeline(detector, "m", "1", defaults=defaults, tensor_decode_device="cpu")
    return host, tensor


def astronaut_jpeg(side: int) -> bytes:
    return encode(cv2.resize(astronaut(), (side, side), interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("side", SIZES)
@pytest.mark.parametrize("family", ["mtcnn", "retinaface"])
def test_face_families_find_the_face_on_the_tensor_path(family, side):
    host, tensor = both_paths(face_detector(family))
    body = astronaut_jpeg(side)
    a, b = host.detect_bytes(body), tensor.detect_bytes(body)
    expected = tuple(v * side / 512 for v in ASTRONAUT_FACE)
    for result in (a, b):
        assert (result.width, result.height) == (side, side)
        assert iou(result.detections[0].box, expected) >= 0.7
    # Same faces on both paths (the resize differs: area on the host, antialiased bilinear as tensor).
    assert abs(a.detections[0].score - b.detections[0].score) <= 0.02
    assert iou(a.detections[0].box, b.detections[0].box) >= 0.9
    assert len(a.detections[0].landmarks) == len(b.detections[0].landmarks) == 5


@pytest.mark.parametrize("arch", [SSD, FRCNN])
def test_object_families_give_the_host_paths_detections_on_the_tensor_path(arch, object_weights):
    host, tensor = both_paths(object_detector(arch, object_weights), OBJECT_SETTINGS)
    for body in (astronaut_jpeg(512), encode(grace_hopper())):
        a, b = host.detect_bytes(body), tensor.detect_bytes(body)
        assert len(a.detections) >= 1
        # The same arithmetic after decoding; libjpeg through torchvision and through PIL may round
        # a few pixels differently, so the strongest detections are compared, not every last one.
        for x, y in zip(a.detections[:3], b.detections[:3]):
            assert x.label == y.label and abs(x.score - y.score) <= 0.02 and iou(x.box, y.box) >= 0.9


@pytest.mark.parametrize("family", ["mtcnn", "retinaface", SSD])
def test_mixed_format_batch_on_the_tensor_path_equals_single_images(family, object_weights):
    detector = object_detector(family, object_weights) if family == SSD else face_detector(family)
    defaults = OBJECT_SETTINGS if family == SSD else DetectorSettings()
    _, tensor = both_paths(detector, defaults)
    image = astronaut()
    bodies = [encode(image), encode(image, "PNG"), encode(image, "WEBP", lossless=True), astronaut_jpeg(1024)]
    batch = tensor.process([{"body": b} for b in bodies])
    for together, body in zip(batch, bodies):
        assert not isinstance(together, InputError)
        alone = tensor.detect_bytes(body)
        assert [d.label for d in together.detections] == [d.label for d in alone.detections]
        for x, y in zip(together.detections, alone.detections):
            assert abs(x.score - y.score) <= 1e-4 and iou(x.box, y.box) >= 0.99


def test_only_families_whose_config_allows_it_get_the_tensor_path_when_served():
    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    assert tensor_decode_device(cuda, RetinaFaceConfig()) == cuda
    assert tensor_decode_device(cuda, RetinaFaceConfig(gpu_jpeg_decode=False)) is None
    assert tensor_decode_device(cuda, MTCNNConfig()) is None
    assert tensor_decode_device(cuda, ObjectDetectorConfig(architecture=SSD)) is None
    assert tensor_decode_device(cpu, RetinaFaceConfig()) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ["mtcnn", "retinaface", SSD])
def test_gpu_tensor_path_of_every_family_matches_the_cpu_host_path(family, object_weights):
    def build(device: str) -> Detector:
        if family == SSD:
            config = ObjectDetectorConfig.from_section({"architecture": SSD}).model()
            return TorchvisionDetector(config, object_weights[SSD], device)
        if family == "mtcnn":
            return MTCNNDetector(ARCHIVES["face_detector-1.0"].weights, device)
        return RetinaFaceDetector(ARCHIVES["face_detector-2.0"].weights, device)

    defaults = OBJECT_SETTINGS if family == SSD else DetectorSettings()
    cpu = DetectionPipeline(build("cpu"), "m", "1", defaults=defaults)
    gpu = DetectionPipeline(build("cuda"), "m", "1", defaults=defaults, tensor_decode_device="cuda")
    image = astronaut()
    bodies = [astronaut_jpeg(1024), encode(image, "PNG"), encode(image)]  # mixed formats, one batch
    for a, b in zip(cpu.process([{"body": x} for x in bodies]), gpu.process([{"body": x} for x in bodies])):
        assert not isinstance(b, InputError) and len(b.detections) >= 1
        x, y = a.detections[0], b.detections[0]
        assert x.label == y.label and abs(x.score - y.score) <= 0.05 and iou(x.box, y.box) >= 0.85
