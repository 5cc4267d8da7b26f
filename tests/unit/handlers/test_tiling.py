"""Tiling geometry of the small-face mode: the grid covers the frame with the promised overlap,
tile coordinates map back to the frame, and a face cut by a tile edge is merged to one box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import PAD_MULTIPLE, RetinaFaceDetector
from handlers.settings import DetectorSettings
from handlers.tiling import TILE_OVERLAP, TILE_SIZE, cut_by_tile_edge, from_tile, tile_grid, tile_spans
from scripts.paths import REPO


@pytest.mark.parametrize(
    "length, tile, overlap, multiple, expected",
    [
        (300, 640, 64, 32, [(0, 300)]),  # fits: one span, never padded past the frame
        (640, 640, 64, 32, [(0, 640)]),
        (960, 640, 64, 32, [(0, 512), (448, 960)]),
        (1440, 640, 64, 32, [(0, 544), (448, 992), (896, 1440)]),  # 720p at zoom 2
        (100, 40, 10, 1, [(0, 40), (30, 70), (60, 100)]),
        (1, 640, 64, 32, [(0, 1)]),
    ],
)
def test_spans_table(length, tile, overlap, multiple, expected):
    assert tile_spans(length, tile, overlap, multiple) == expected


@pytest.mark.parametrize("length", [1, 63, 640, 641, 1000, 1440, 2160, 3840, 4096])
@pytest.mark.parametrize("tile, overlap", [(TILE_SIZE, TILE_OVERLAP), (100, 30), (33, 32)])
def test_spans_cover_the_frame_and_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap, PAD_MULTIPLE if tile == TILE_SIZE else 1)
    sizes = {end - start for start, end in spans}
    assert len(sizes) == 1 and max(sizes) <= max(tile, 1) and spans[0][0] == 0 and spans[-1][1] == length
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end - start >= overlap  # a face narrower than the overlap is whole in some tile


@pytest.mark.parametrize("length, tile, overlap", [(0, 640, 64), (100, 64, 64), (100, 64, -1)])
def test_bad_span_arguments(length, tile, overlap):
    with pytest.raises(ValueError, match="tile > overlap"):
        tile_spans(length, tile, overlap)


def test_grid_covers_every_pixel_with_tiles_of_one_size():
    height, width = 1440, 2560
    grid = tile_grid(height, width, multiple=PAD_MULTIPLE)
    covered = np.zeros((height, width), dtype=int)
    for x0, y0, x1, y1 in grid:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1 and len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in grid}) == 1
    assert len(grid) == 15


@pytest.mark.parametrize(
    "xy, origin, zoom, expected",
    [
        ([[0.0, 0.0, 10.0, 20.0]], (0, 0), 2.0, [[0.0, 0.0, 5.0, 10.0]]),
        ([[0.0, 0.0, 10.0, 20.0]], (448, 100), 2.0, [[224.0, 50.0, 229.0, 60.0]]),
        (
            [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]],
            (10, 20),
            1.0,
            [[11.0, 22.0, 13.0, 24.0, 15.0, 26.0, 17.0, 28.0, 19.0, 30.0]],
        ),  # five landmarks
        (np.empty((0, 4)).tolist(), (5, 5), 2.0, np.empty((0, 4)).tolist()),
    ],
)
def test_from_tile(xy, origin, zoom, expected):
    got = from_tile(
        torch.tensor(xy, dtype=torch.float32).reshape(-1, len(expected[0]) if expected else 4), origin, zoom
    )
    assert got.tolist() == expected


@pytest.mark.parametrize(
    "box, tile, cut",
    [
        ([10, 10, 30, 30], (0, 0, 100, 100), False),  # inside
        ([0, 10, 30, 30], (0, 0, 100, 100), False),  # at the frame's left edge: not a tile cut
        ([0, 10, 30, 30], (50, 0, 150, 100), True),  # at an inner left edge
        ([70, 10, 100, 30], (0, 0, 100, 100), True),  # at the right edge, inside the frame
        ([70, 10, 100, 30], (100, 0, 200, 100), False),  # right edge = the frame's (width 200)
        ([10, 70, 30, 99], (0, 0, 100, 100), True),  # within the margin of the bottom edge
    ],
)
def test_cut_by_tile_edge(box, tile, cut):
    boxes = torch.tensor([box], dtype=torch.float32)
    assert cut_by_tile_edge(boxes, tile, height=200, width=200).tolist() == [cut]
    assert cut_by_tile_edge(torch.empty((0, 4)), tile, 200, 200).shape == (0,)


WEIGHTS = REPO / "build" / "retinaface_mobile0.25.pt"


@pytest.fixture(scope="module")
def pipeline():
    if not WEIGHTS.exists():
        pytest.skip("build/retinaface_mobile0.25.pt missing: run python -m scripts.packaging.build_archives")
    return DetectionPipeline(RetinaFaceDetector(WEIGHTS), "face_detector", "2.0", DetectorSettings())


def _frame_with_face(x: int, y: int, width: int) -> tuple[np.ndarray, tuple[float, ...]]:
    import cv2

    from scripts.samples import ASTRONAUT_FACE, astronaut

    x1, y1, x2, y2 = ASTRONAUT_FACE
    margin = 20
    crop = astronaut()[y1 - margin : y2 + margin, x1 - margin : x2 + margin]
    scale = width / (x2 - x1)
    crop = cv2.resize(
        crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)), interpolation=cv2.INTER_AREA
    )
    frame = np.full((720, 1280, 3), 90, dtype=np.uint8)
    frame[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    m = margin * scale
    return frame, (x + m, y + m, x + m + (x2 - x1) * scale, y + m + (y2 - y1) * scale)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("face_width", [30, 40])
def test_face_cut_by_a_tile_border_is_one_box(pipeline, face_width):
    """720p at zoom 2 has columns [0, 576) and [496, 1072) in zoomed pixels: frame x 248-288 is in
    both. A face straddling x = 288 (the first tile's right edge) is cut in that tile, whole in the
    next; after the merge it is one box, in frame pixels, with its landmarks inside it."""
    from scripts.samples import encode

    left = 288 - face_width // 2 - round(face_width * 20 / 95)
    frame, truth = _frame_with_face(left, 300, face_width)
    result = pipeline.detect_bytes(encode(frame), small_faces="true")
    found = [d for d in result.detections if _iou(d.box, truth) > 0.3]
    assert len(found) == 1, (truth, [(d.box, d.score) for d in result.detections])
    box = found[0].box
    for px, py in found[0].landmarks:
        assert box[0] <= px <= box[2] and box[1] <= py <= box[3]
    assert all(
        0 <= d.box[0] <= d.box[2] <= 1280 and 0 <= d.box[1] <= d.box[3] <= 720 for d in result.detections
    )


def test_small_faces_finds_a_face_the_full_pass_misses(pipeline):
    from scripts.samples import encode

    frame, truth = _frame_with_face(600, 400, 30)
    data = encode(frame)
    plain = pipeline.detect_bytes(data, score_threshold=0.5).detections
    tiled = pipeline.detect_bytes(data, score_threshold=0.5, small_faces=True).detections
    assert not any(_iou(d.box, truth) > 0.3 for d in plain)
    assert any(_iou(d.box, truth) > 0.3 for d in tiled)


def test_small_faces_on_a_face_free_frame_adds_nothing(pipeline):
    from scripts.samples import coffee, encode

    data = encode(coffee())
    assert pipeline.detect_bytes(data, small_faces="false").detections == []
    assert pipeline.detect_bytes(data, small_faces="true").detections == []


def test_tensor_path_tiles_like_the_array_path(pipeline):
    """The (3, H, W) tensor preprocess (nvJPEG decoding on a GPU) cuts the same tiles; run here on
    CPU tensors. Resampling differs (antialiased bilinear vs OpenCV), so boxes agree by IoU."""
    frame, truth = _frame_with_face(600, 400, 30)
    detector = pipeline.detector
    settings = DetectorSettings(small_faces=True)
    from_array = detector.preprocess(frame, settings)
    from_tensor = detector.preprocess(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), settings)
    assert from_tensor.tiles.grid == from_array.tiles.grid
    assert from_tensor.tiles.tensor.shape == from_array.tiles.tensor.shape
    results = []
    for prepared in (from_array, from_tensor):
        raw = detector.infer([prepared])[0]
        results.append([d for d in detector.postprocess(raw, prepared, settings) if _iou(d.box, truth) > 0.3])
    assert len(results[0]) == len(results[1]) == 1 and _iou(results[0][0].box, results[1][0].box) > 0.8
