from __future__ import annotations

import numpy as np
import pytest
import torch

from handlers.retinaface_detector import PAD_MULTIPLE, anchor_grid, decode_boxes, decode_landmarks


@pytest.mark.parametrize("height, width", [(32, 32), (480, 640), (608, 416)])
def test_anchor_count_matches_heads(height, width):
    anchors = anchor_grid(height, width, "cpu")
    expected = sum(2 * (height // s) * (width // s) for s in (8, 16, 32))
    assert anchors.shape == (expected, 4)
    # The first anchor sits at the centre of the first stride-8 cell, smallest size first.
    assert anchors[0].tolist() == [4.0, 4.0, 16.0, 16.0] and anchors[1].tolist() == [4.0, 4.0, 32.0, 32.0]


def test_zero_offsets_decode_to_the_anchor():
    anchors = torch.tensor([[100.0, 50.0, 16.0, 32.0]])
    assert decode_boxes(torch.zeros(1, 4), anchors).tolist() == [[92.0, 34.0, 108.0, 66.0]]
    points = decode_landmarks(torch.zeros(1, 10), anchors)
    assert points.shape == (1, 5, 2) and torch.all(points == torch.tensor([100.0, 50.0]))


def test_pad_multiple_is_the_coarsest_stride():
    assert PAD_MULTIPLE == 32 and np.lcm.reduce([8, 16, 32]) == PAD_MULTIPLE
