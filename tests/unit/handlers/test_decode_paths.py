"""The batched torchvision JPEG path (nvJPEG on CUDA) against the PIL path, on CPU and on GPU.

On CPU the same code runs with libjpeg, so the tensor path is covered on every machine; the
``gpu`` tests repeat the checks on CUDA, with fp16, and are skipped without it.
"""

from __future__ import annotations

import cv2
import pytest
import torch

from handlers.errors import InputError
from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import RetinaFaceDetector
from handlers.tensor_decode import decode_jpegs
from scripts.packaging.build_archives import ARCHIVES
from tests.support.images import ASTRONAUT_FACE, astronaut, encode, grace_hopper_bytes, iou

WEIGHTS = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def pipeline(device: str = "cpu", tensor_decode: bool = False, fp16: bool = False) -> DetectionPipeline:
    detector = RetinaFaceDetector(WEIGHTS, device, fp16=fp16)
    return DetectionPipeline(
        detector, "face_detector", "2.0", tensor_decode_device=device if tensor_decode else None
    )


def big_astronaut() -> bytes:
    return encode(cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC))


def assert_same_faces(a, b, min_iou: float = 0.9, score_tol: float = 0.02) -> None:
    faces_a = [d for d in a.detections if d.score >= 0.5]
    faces_b = [d for d in b.detections if d.score >= 0.5]
    assert len(faces_a) == len(faces_b) >= 1
    for x, y in zip(faces_a, faces_b):
        assert iou(x.box, y.box) >= min_iou and abs(x.score - y.score) <= score_tol


def test_tensor_path_matches_pil_path_on_cpu():
    pil, tensor = pipeline(), pipeline(tensor_decode=True)
    for body in (encode(astronaut()), big_astronaut(), grace_hopper_bytes()):
        assert_same_faces(pil.detect_bytes(body), tensor.detect_bytes(body))
    scaled = tensor.detect_bytes(big_astronaut())
    assert (scaled.width, scaled.height) == (1024, 1024)
    expected = tuple(v * 2 for v in ASTRONAUT_FACE)
    assert iou(scaled.detections[0].box, expected) >= 0.7


def test_tensor_path_isolates_a_corrupt_jpeg_and_leaves_png_to_pil():
    good, corrupt = encode(astronaut()), encode(astronaut())[:4000]
    outcomes = pipeline(tensor_decode=True).process(
        [{"body": good}, {"body": corrupt}, {"body": encode(astronaut(), "PNG")}]
    )
    assert not isinstance(outcomes[0], InputError) and outcomes[0].detections
    assert isinstance(outcomes[1], InputError) and outcomes[1].status == 400
    assert not isinstance(outcomes[2], InputError) and outcomes[2].detections


@pytest.mark.parametrize("payloads", [[], [b"\xff\xd8 not really"]])
def test_decode_jpegs_edges(payloads):
    outcomes = decode_jpegs(payloads, "cpu")
    assert len(outcomes) == len(payloads)
    assert all(isinstance(o, InputError) for o in outcomes)


@pytest.mark.gpu
@needs_cuda
def test_gpu_fp16_nvjpeg_matches_cpu_fp32():
    cpu, gpu = pipeline(), pipeline("cuda", tensor_decode=True, fp16=True)
    for body in (encode(astronaut()), big_astronaut(), grace_hopper_bytes()):
        assert_same_faces(cpu.detect_bytes(body), gpu.detect_bytes(body), min_iou=0.85, score_tol=0.05)


@pytest.mark.gpu
@needs_cuda
def test_gpu_batch_of_mixed_sizes():
    gpu = pipeline("cuda", tensor_decode=True, fp16=True)
    bodies = [encode(cv2.resize(astronaut(), (w, h))) for w, h in [(640, 480), (512, 512), (800, 600)] * 4]
    outcomes = gpu.process([{"body": b} for b in bodies])
    assert all(not isinstance(o, InputError) and o.detections for o in outcomes)
