"""handlers/geometry.py: shrink, map back, clip; numpy and torch alike, empty inputs included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handlers.geometry import (
    clip_to_image,
    shrink_array,
    shrink_scale,
    shrink_tensor,
    shrunk_size,
    to_original,
    unshrink,
)

KINDS = [np.asarray, torch.as_tensor]


def _as(kind, values, shape=None):
    array = np.asarray(values, dtype=np.float32)
    return kind(array.reshape(shape) if shape is not None else array)


@pytest.mark.parametrize(
    "height, width, inference_size, scale, size",
    [
        (480, 640, 640, 1.0, (480, 640)),  # fits: never enlarged
        (100, 50, 640, 1.0, (100, 50)),
        (1280, 960, 640, 0.5, (640, 480)),  # longest side (height) down to 640
        (480, 1920, 640, 1 / 3, (160, 640)),
        (1, 10000, 64, 0.0064, (1, 64)),  # a strip keeps one row, never zero
        (1001, 1001, 1000, 1000 / 1001, (1000, 1000)),
    ],
)
def test_shrink_scale_and_size(height, width, inference_size, scale, size):
    assert shrink_scale(height, width, inference_size) == pytest.approx(scale)
    assert shrunk_size(height, width, shrink_scale(height, width, inference_size)) == size
    image, got = shrink_array(np.zeros((height, width, 3), np.uint8), inference_size)
    assert image.shape == (*size, 3) and got == pytest.approx(scale)
    tensor, got = shrink_tensor(torch.zeros(1, 3, height, width), inference_size)
    assert tuple(tensor.shape) == (1, 3, *size) and got == pytest.approx(scale)


def test_shrink_returns_the_input_itself_when_it_fits():
    image = np.zeros((10, 20, 3), np.uint8)
    tensor = torch.zeros(1, 3, 10, 20)
    assert shrink_array(image, 64)[0] is image and shrink_tensor(tensor, 64)[0] is tensor


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "xy, width, height, expected",
    [
        (np.empty((0, 4)), 100, 50, np.empty((0, 4))),  # no boxes
        (np.empty((0, 5, 2)), 100, 50, np.empty((0, 5, 2))),  # no landmarks
        ([[10, 5, 90, 45]], 100, 50, [[10, 5, 90, 45]]),  # inside: untouched
        ([[-3, -1, 120, 60]], 100, 50, [[0, 0, 100, 50]]),  # x clipped to width, y to height
        ([[150, 70, 200, 80]], 100, 50, [[100, 50, 100, 50]]),  # wholly outside: collapses on the edge
        ([[[-1, 60], [101, 10]]], 100, 50, [[[0, 50], [100, 10]]]),  # (n, 5, 2)-like points
    ],
)
def test_clip_to_image(kind, xy, width, height, expected):
    got = clip_to_image(_as(kind, xy, np.shape(xy)), width, height)
    assert type(got) is type(kind(np.zeros(1)))
    assert got.shape == np.shape(expected)
    assert np.array_equal(np.asarray(got), np.asarray(expected, dtype=np.float32))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "xy, scale, width, height, expected",
    [
        (np.empty((0, 4)), 0.5, 100, 100, np.empty((0, 4))),
        ([[10, 20, 30, 40]], 0.5, 100, 100, [[20, 40, 60, 80]]),
        ([[10, 20, 30, 40]], 1.0, 100, 100, [[10, 20, 30, 40]]),
        ([[40, 40, 60, 60]], 0.5, 100, 100, [[80, 80, 100, 100]]),  # mapped back, then clipped
        ([[[5, 5], [-1, 2]]], 0.25, 100, 100, [[[20, 20], [0, 8]]]),
    ],
)
def test_unshrink(kind, xy, scale, width, height, expected):
    got = unshrink(_as(kind, xy, np.shape(xy)), scale, width, height)
    assert np.allclose(np.asarray(got), np.asarray(expected, np.float32)) and got.shape == np.shape(expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "xy, network_hw, width, height, expected",
    [
        (np.empty((0, 4)), (320, 320), 640, 480, np.empty((0, 4))),
        ([[0, 0, 320, 320]], (320, 320), 640, 480, [[0, 0, 640, 480]]),  # per-axis ratios (SSD square)
        ([[10, 10, 20, 20]], (800, 1066), 640, 480, [[10 * 640 / 1066, 10 * 0.6, 20 * 640 / 1066, 12]]),
        ([[-5, 0, 400, 10]], (320, 320), 640, 480, [[0, 0, 640, 15]]),  # clipped after scaling
    ],
)
def test_to_original(kind, xy, network_hw, width, height, expected):
    got = to_original(_as(kind, xy, np.shape(xy)), network_hw, width, height)
    assert np.allclose(np.asarray(got), np.asarray(expected, np.float32)) and got.shape == np.shape(expected)


def test_to_original_uses_torchvisions_float32_ratios():
    """The same float32 ratios as torchvision's resize_boxes, so results match the stock model bit for bit."""
    from torchvision.models.detection.transform import resize_boxes

    boxes = torch.tensor([[1.5, 2.25, 333.3, 777.7], [0.1, 0.2, 1065.9, 799.9]])
    expected = resize_boxes(boxes, [800, 1066], [479, 641]).clamp(min=0)
    expected = torch.minimum(expected, torch.tensor([641.0, 479.0] * 2))
    assert torch.equal(to_original(boxes, (800, 1066), 641, 479), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_odd_last_dimension_is_refused(kind):
    with pytest.raises(ValueError, match="pairs"):
        clip_to_image(_as(kind, [[1, 2, 3]]), 10, 10)
