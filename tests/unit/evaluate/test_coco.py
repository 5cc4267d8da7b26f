"""The pycocotools wrapper on hand-made cases whose answers are known by hand.

COCOeval interpolates precision at 101 recall points (0, 0.01, ..., 1): a detector that finds one
of two faces with no false positive has precision 1 on the points 0..0.5, i.e. AP50 = 51 / 101.
"""

from __future__ import annotations

import math

import pytest

from scripts.evaluate.coco import score

FACE_A = [10.0, 10.0, 40.0, 50.0]  # x, y, w, h: sqrt(area) 44.7 px, bucket 32-64
FACE_B = [200.0, 100.0, 12.0, 12.0]  # 12 px, bucket <16


def _gt(*boxes_per_image: list[list[float]]) -> dict:
    images, annotations = [], []
    for image_id, boxes in enumerate(boxes_per_image, start=1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.jpg"})
        for box in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": box}
            )
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "face"}]}


def _det(image_id: int, box: list[float], s: float) -> dict:
    return {"image_id": image_id, "category_id": 1, "bbox": box, "score": s}


def _shift(box: list[float], dx: float) -> list[float]:
    return [box[0] + dx, box[1], box[2], box[3]]


CASES = [
    # id, ground truth, detections, AP50 (all), recall@0.5, fp per image
    ("perfect", _gt([FACE_A, FACE_B]), [_det(1, FACE_A, 0.9), _det(1, FACE_B, 0.8)], 1.0, 1.0, 0.0),
    ("one miss", _gt([FACE_A, FACE_B]), [_det(1, FACE_A, 0.9)], 51 / 101, 0.5, 0.0),
    # The duplicate comes after the match in score order: AP unharmed, one confident false positive.
    ("one duplicate", _gt([FACE_A]), [_det(1, FACE_A, 0.9), _det(1, _shift(FACE_A, 2), 0.7)], 1.0, 1.0, 1.0),
    # A false positive scoring above the face: precision 1/2 at every recall point.
    ("false positive first", _gt([FACE_A], []), [_det(2, FACE_A, 0.95), _det(1, FACE_A, 0.9)], 0.5, 1.0, 0.5),
    # Below the face and below 0.5: AP and fp/image untouched.
    ("weak false positive", _gt([FACE_A]), [_det(1, FACE_A, 0.9), _det(1, FACE_B, 0.3)], 1.0, 1.0, 0.0),
    # A box off by more than IoU 0.5 is a miss plus a false positive.
    ("misplaced", _gt([FACE_A]), [_det(1, _shift(FACE_A, 30), 0.9)], 0.0, 0.0, 1.0),
    ("no detections", _gt([FACE_A]), [], 0.0, 0.0, 0.0),
    ("found below 0.5", _gt([FACE_A]), [_det(1, FACE_A, 0.4)], 1.0, 0.0, 0.0),
]


@pytest.mark.parametrize("gt, dets, ap50, recall, fp", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_overall(gt, dets, ap50, recall, fp):
    report = score(gt, dets)
    overall = report.buckets["all"]
    assert overall.ap50 == pytest.approx(ap50, abs=1e-9)
    assert overall.recall == pytest.approx(recall)
    assert overall.fp_per_image == pytest.approx(fp)
    assert overall.faces == sum(1 for _ in gt["annotations"])


def test_buckets_split_by_size():
    report = score(_gt([FACE_A, FACE_B]), [_det(1, FACE_A, 0.9)])
    assert report.buckets["32-64"].ap50 == pytest.approx(1.0)
    assert report.buckets["<16"].ap50 == pytest.approx(0.0)
    assert report.buckets["<16"].recall == 0.0 and report.buckets["<16"].faces == 1
    # The 32-64 detection is outside the <16 bucket: ignored there, not a false positive.
    assert report.buckets["<16"].fp_per_image == 0.0
    assert math.isnan(report.buckets[">128"].ap50) and report.buckets[">128"].faces == 0


def test_iou_095_lowers_ap50_95_only():
    # IoU of a 40x50 box shifted by 2 px: 38*50 / (42*50) = 0.905 -> matched at 0.50..0.90, not 0.95.
    report = score(_gt([FACE_A]), [_det(1, _shift(FACE_A, 2), 0.9)])
    assert report.buckets["all"].ap50 == pytest.approx(1.0)
    assert report.buckets["all"].ap50_95 == pytest.approx(9 / 10)


def test_subset_of_images_and_json():
    gt = _gt([FACE_A], [FACE_B])
    report = score(gt, [_det(1, FACE_A, 0.9)], image_ids=[1])
    assert report.images == 1 and report.buckets["all"].ap50 == pytest.approx(1.0)
    as_json = report.to_json()
    assert as_json["buckets"][">128"]["ap50"] is None and as_json["score"] == 0.5
