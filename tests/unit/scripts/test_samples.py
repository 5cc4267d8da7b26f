"""scripts/samples.py: the public images, their face boxes inside them, and the encoders."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from scripts.samples import (
    ASTRONAUT_FACE,
    CAMERA_FACE,
    GRACE_HOPPER_FACE,
    astronaut,
    camera,
    encode,
    encode_jpeg,
    face_samples,
    grace_hopper,
    grace_hopper_bytes,
    no_face_samples,
    png_claiming,
    sample_jpeg,
)


@pytest.mark.parametrize(
    ("load", "shape", "box"),
    [
        (astronaut, (512, 512, 3), ASTRONAUT_FACE),
        (grace_hopper, (600, 512, 3), GRACE_HOPPER_FACE),
        (camera, (512, 512, 3), CAMERA_FACE),
    ],
    ids=["astronaut", "grace_hopper", "camera"],
)
def test_images_and_their_face_boxes(load, shape, box):
    image = load()
    assert image.shape == shape and image.dtype == np.uint8
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= shape[1] and 0 <= y1 < y2 <= shape[0]


def test_face_samples_pair_each_image_with_its_box():
    assert [box for _, box in face_samples()] == [ASTRONAUT_FACE, GRACE_HOPPER_FACE, CAMERA_FACE]
    assert all(image.ndim == 3 for image in no_face_samples())
    assert grace_hopper_bytes()[:2] == b"\xff\xd8"  # the JPEG file as shipped


@pytest.mark.parametrize(
    ("fmt", "params", "magic"),
    [
        ("JPEG", {}, b"\xff\xd8"),
        ("JPEG", {"quality": 50}, b"\xff\xd8"),
        ("PNG", {}, b"\x89PNG"),
        ("BMP", {}, b"BM"),
        ("GIF", {}, b"GIF8"),
    ],
)
def test_encode_round_trips(fmt, params, magic):
    data = encode(astronaut(), fmt, **params)
    assert data[: len(magic)] == magic
    assert Image.open(io.BytesIO(data)).size == (512, 512)


def test_encode_takes_views_and_defaults_to_quality_95():
    flipped = astronaut()[:, ::-1]  # negative stride: not C-contiguous
    assert Image.open(io.BytesIO(encode_jpeg(flipped))).size == (512, 512)
    assert len(encode(astronaut(), quality=40)) < len(encode(astronaut()))  # 95 unless told


def test_sample_jpeg_has_the_asked_size():
    assert Image.open(io.BytesIO(sample_jpeg(160, 120))).size == (160, 120)


def test_png_claiming_declares_the_size_and_holds_almost_nothing():
    data = png_claiming(30000, 20000)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (30000, 20000)
    assert len(data) < 100 and data.endswith(b"IEND\xaeB`\x82")
