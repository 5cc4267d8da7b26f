from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from handlers.config import RetinaFaceConfig
from handlers.errors import InputError
from handlers.image_decode import decode_image
from tests.support.images import astronaut, encode, png_claiming


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


RGB = astronaut()[:40, :60]


@pytest.mark.parametrize(
    "data, shape",
    [
        (encode(RGB), (40, 60, 3)),
        (encode(RGB, "PNG"), (40, 60, 3)),
        (encode(RGB, "BMP"), (40, 60, 3)),
        (encode(RGB, "WEBP"), (40, 60, 3)),
        (_save(Image.fromarray(RGB).convert("L"), "PNG"), (40, 60, 3)),
        (_save(Image.fromarray(RGB).convert("RGBA"), "PNG"), (40, 60, 3)),
        (_save(Image.fromarray(RGB).convert("CMYK"), "JPEG"), (40, 60, 3)),
        (_save(Image.fromarray(RGB).convert("P"), "PNG"), (40, 60, 3)),
        (encode(np.zeros((1, 1, 3), np.uint8), "PNG"), (1, 1, 3)),
    ],
)
def test_modes_become_rgb_uint8(data, shape):
    image = decode_image(data)
    assert image.shape == shape and image.dtype == np.uint8


def test_sixteen_bit_grey_is_rescaled_not_clipped():
    grey16 = np.full((4, 4), 40000, dtype=np.uint16)
    image = decode_image(_save(Image.fromarray(grey16), "PNG"))
    assert 150 < image[0, 0, 0] < 160  # 40000 / 65535 * 255 = 155.6


def test_exif_orientation_is_applied():
    image = Image.fromarray(RGB)  # 60 wide, 40 high
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    rotated = decode_image(_save(image, "JPEG", exif=exif))
    assert rotated.shape == (60, 40, 3)


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 400, "empty request body"),
        (b"GIF89a" + b"\x00" * 20, 415, "not a recognised image"),
        (encode(RGB, "GIF"), 415, "GIF is not accepted"),
        (encode(astronaut())[:3000], 400, "cannot decode"),
        (png_claiming(30000, 30000), 413, "more pixels than allowed"),
        (png_claiming(20000, 20), 413, "20000x20"),
    ],
)
def test_rejections(data, status, message):
    with pytest.raises(InputError, match=message) as err:
        decode_image(data)
    assert err.value.status == status


def test_limits_from_config_validate():
    assert RetinaFaceConfig.from_section({"image_formats": ["jpeg"]}).decode_limits().formats == ("JPEG",)
    with pytest.raises(ValueError, match="subset of"):
        RetinaFaceConfig.from_section({"image_formats": ["TIFF"]})
