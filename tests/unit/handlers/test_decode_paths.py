"""The batched torchvision JPEG path (nvJPEG on CUDA) against the PIL path, on CPU and on GPU.

On CPU the same code runs with libjpeg (``tensor_decode_device="cpu"``), so the tensor path is
covered on every machine: EXIF orientations, batches mixing JPEG (device-decoded) with PNG and WebP
(host-decoded), the host staging buffer. The ``gpu`` tests repeat the checks on CUDA, with fp16, and
are skipped without it. Every detector family: test_decode_families.py; device faults:
test_device_faults.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from handlers.errors import InputError
from handlers.image_decode import decode_image
from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import RetinaFaceDetector
from handlers.tensor_decode import HostStaging, decode_jpegs, orient
from scripts.packaging.build_archives import ARCHIVES
from tests.support.images import ASTRONAUT_FACE, astronaut, encode, grace_hopper_bytes, iou

WEIGHTS = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# EXIF orientation -> the PIL transpose that stores an upright image so that a viewer applying the
# orientation sees it upright again (the inverse of exif_transpose's method for that value).
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # displayed with ROTATE_270: back upright
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def pipeline(device: str = "cpu", tensor_decode: bool = False, fp16: bool = False) -> DetectionPipeline:
    detector = RetinaFaceDetector(WEIGHTS, device, fp16=fp16)
    return DetectionPipeline(
        detector, "face_detector", "2.0", tensor_decode_device=device if tensor_decode else None
    )


def big_astronaut() -> bytes:
    return encode(cv2.resize(astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC))


def upright() -> np.ndarray:
    """The astronaut cut to 512 high x 384 wide: not square, so a transposition shows in the size."""
    return np.ascontiguousarray(astronaut()[:, :384])


def oriented_jpeg(orientation: int) -> bytes:
    """A JPEG whose pixels are stored turned so that EXIF ``orientation`` shows :func:`upright`."""
    image = Image.fromarray(upright())
    method = STORE_FOR_ORIENTATION[orientation]
    stored = image if method is None else image.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(np.asarray(stored), exif=exif.tobytes())


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


def test_tensor_path_isolates_a_corrupt_jpeg_and_decodes_png_too():
    good, corrupt = encode(astronaut()), encode(astronaut())[:4000]
    outcomes = pipeline(tensor_decode=True).process(
        [{"body": good}, {"body": corrupt}, {"body": encode(astronaut(), "PNG")}]
    )
    assert not isinstance(outcomes[0], InputError) and outcomes[0].detections
    # Refused by the tensor decoder, then by PIL: the host path's own 400 and message.
    assert isinstance(outcomes[1], InputError) and outcomes[1].status == 400
    assert "cannot decode JPEG" in outcomes[1].message
    assert not isinstance(outcomes[2], InputError) and outcomes[2].detections


@pytest.mark.parametrize("payloads", [[], [b"\xff\xd8 not really"], [encode(astronaut())[:300]]])
def test_decode_jpegs_leaves_what_it_cannot_decode_to_the_host(payloads):
    outcomes = decode_jpegs(payloads, "cpu")
    assert outcomes == [None] * len(payloads)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_the_tensor_path_matches_pil(orientation):
    body = oriented_jpeg(orientation)
    (tensor,) = decode_jpegs([body], "cpu", [orientation])
    viewed = decode_image(body)  # PIL, exif_transpose: the reference
    assert viewed.shape == (512, 384, 3)
    assert tuple(tensor.shape) == (3, 512, 384)
    # libjpeg through torchvision and through PIL may round a few pixels differently.
    assert np.abs(tensor.permute(1, 2, 0).numpy().astype(int) - viewed.astype(int)).mean() < 1.0


@pytest.mark.parametrize("orientation", range(2, 9))
def test_rotated_photo_gets_its_face_in_the_viewers_frame(orientation):
    tensor_path = pipeline(tensor_decode=True)
    result = tensor_path.detect_bytes(oriented_jpeg(orientation))
    assert (result.width, result.height) == (384, 512)
    assert iou(result.detections[0].box, ASTRONAUT_FACE) >= 0.7


@pytest.mark.parametrize("orientation", [*range(0, 10)])
def test_orient_is_pils_exif_transpose(orientation):
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # (H, W, 3), not square
    image = Image.fromarray(stored)
    image.getexif()[0x0112] = orientation  # in memory: exif_transpose reads this cached block
    expected = np.asarray(ImageOps.exif_transpose(image))
    got = orient(torch.from_numpy(stored).permute(2, 0, 1), orientation).permute(1, 2, 0).numpy()
    assert got.shape == expected.shape and (got == expected).all()


class RecordingDetector(RetinaFaceDetector):
    """RetinaFace that records the kind and device of every image handed to preprocess."""

    seen: list[tuple[str, str]]

    def preprocess(self, image, settings):
        kind = "tensor" if isinstance(image, torch.Tensor) else "array"
        device = str(image.device) if isinstance(image, torch.Tensor) else "host"
        self.seen.append((kind, device))
        return super().preprocess(image, settings)


@pytest.mark.parametrize("fmt_order", [("JPEG", "PNG", "WEBP"), ("PNG", "WEBP", "JPEG", "JPEG")])
def test_mixed_formats_in_one_batch_reach_the_detector_as_tensors_on_one_device(fmt_order):
    detector = RecordingDetector(WEIGHTS, "cpu")
    detector.seen = []
    tensor_path = DetectionPipeline(detector, "face_detector", "2.0", tensor_decode_device="cpu")
    bodies = [encode(astronaut(), fmt, **({"lossless": True} if fmt == "WEBP" else {})) for fmt in fmt_order]
    batch = tensor_path.process([{"body": b} for b in bodies])
    # One kind on one device for the whole batch: same-size images share one stacked forward pass,
    # which on a GPU would fail if a host-decoded PNG met a device-decoded JPEG.
    assert detector.seen == [("tensor", "cpu")] * len(bodies)
    singles = [tensor_path.detect_bytes(b) for b in bodies]
    for together, alone in zip(batch, singles):
        assert not isinstance(together, InputError)
        assert_same_faces(together, alone, min_iou=0.99, score_tol=1e-4)
        assert iou(together.detections[0].box, ASTRONAUT_FACE) >= 0.7


def test_host_staging_reuses_one_buffer_and_bounds_it():
    staging = HostStaging(limit_bytes=8 << 20, pin=False)  # page-locking needs CUDA; the logic does not
    first = staging.stage(torch.ones(3, 100, 100))
    pointer, capacity = staging.buffer.data_ptr(), staging.buffer.numel()
    assert capacity == 1 << 20 and torch.equal(first, torch.ones(3, 100, 100))
    for shape in [(3, 64, 64), (3, 100, 100), (1, 10)] * 3:  # smaller and equal: no new block
        value = torch.full(shape, 7.0)
        assert torch.equal(staging.stage(value), value)
        assert staging.buffer.data_ptr() == pointer
    staging.stage(torch.zeros(3, 480, 640))  # 3.5 MiB -> the next power of two
    assert staging.buffer.numel() == 4 << 20
    assert staging.stage(torch.zeros(3, 1024, 1024)) is None  # 12 MiB: over the limit, nothing staged
    assert staging.buffer.numel() == 4 << 20
    assert staging.to_device(torch.ones(2), "cpu").sum() == 2


@pytest.mark.gpu
@needs_cuda
def test_gpu_fp16_nvjpeg_matches_cpu_fp32():
    cpu, gpu = pipeline(), pipeline("cuda", tensor_decode=True, fp16=True)
    for body in (encode(astronaut()), big_astronaut(), grace_hopper_bytes()):
        assert_same_faces(cpu.detect_bytes(body), gpu.detect_bytes(body), min_iou=0.85, score_tol=0.05)


@pytest.mark.gpu
@needs_cuda
def test_gpu_batch_of_mixed_sizes_and_formats():
    gpu = pipeline("cuda", tensor_decode=True, fp16=True)
    sizes = [(640, 480), (512, 512), (800, 600)] * 4
    bodies = [encode(cv2.resize(astronaut(), size), fmt) for size, fmt in zip(sizes, ["JPEG", "PNG"] * 6)]
    outcomes = gpu.process([{"body": b} for b in bodies])
    assert all(not isinstance(o, InputError) and o.detections for o in outcomes)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("orientation", range(2, 9))
def test_gpu_exif_orientation(orientation):
    result = pipeline("cuda", tensor_decode=True).detect_bytes(oriented_jpeg(orientation))
    assert (result.width, result.height) == (384, 512)
    assert iou(result.detections[0].box, ASTRONAUT_FACE) >= 0.7


@pytest.mark.gpu
@needs_cuda
def test_gpu_host_staging_keeps_one_pinned_buffer():
    staging = HostStaging()
    for size in [(3, 480, 640), (3, 512, 512), (3, 480, 640)] * 5:
        host = torch.rand(size)
        assert torch.equal(staging.to_device(host, "cuda").cpu(), host)
    assert staging.buffer.is_pinned() and staging.buffer.numel() == 4 << 20
