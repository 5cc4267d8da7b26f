"""Detection accuracy with pycocotools, the field's reference implementation: no hand-written AP.

Ground truth is a COCO detection file (``images``, ``annotations`` with ``bbox`` as x, y, w, h,
``categories``); detections are COCO results (``image_id``, ``category_id``, ``bbox``, ``score``).
Every figure is read from :class:`pycocotools.cocoeval.COCOeval` after ``evaluate()`` and
``accumulate()``:

    AP50, AP50:95   COCOeval's precision array (101-point interpolated), IoU 0.5 / mean of 0.5:0.95
    recall@score    share of ground-truth boxes that COCOeval matched at IoU 0.5 to a detection
                    scoring >= ``score`` (0.5 by default: what a client keeps with the served default)
    fp/image        detections scoring >= ``score`` that COCOeval left unmatched at IoU 0.5, per image

and each per size bucket. A bucket is an area range, so a box's size is sqrt(w * h) in pixels
(a 20 x 25 face is 22.4 px); ground truth outside the bucket is ignored and so are unmatched
detections outside it, which is COCOeval's own area-range rule.

    gt = json.loads(Path("build/eval/faces/annotations.json").read_text())
    report = score(gt, detections)          # detections: list of COCO result dicts
    report.buckets["16-32"].ap50
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["BUCKETS", "IOU_50", "BucketScore", "Report", "score"]

# (label, low, high) in pixels of sqrt(area). "all" first; "<24" is the small-face mode's target.
BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("all", 0, math.inf),
    ("<16", 0, 16),
    ("16-32", 16, 32),
    ("32-64", 32, 64),
    ("64-128", 64, 128),
    (">128", 128, math.inf),
    ("<24", 0, 24),
)
IOU_50 = 0  # index of IoU 0.5 in COCOeval's iouThrs (0.50, 0.55, ..., 0.95)
_AREA_CAP = 1e10  # pycocotools takes finite area ranges


@dataclass(frozen=True)
class BucketScore:
    ap50: float  # NaN when the bucket holds no ground truth
    ap50_95: float
    recall: float  # at IoU 0.5 and score >= the report's score
    fp_per_image: float
    faces: int  # ground-truth boxes in the bucket


@dataclass(frozen=True)
class Report:
    images: int
    score: float  # the threshold of recall and fp_per_image
    buckets: dict[str, BucketScore]

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "score": self.score,
            "buckets": {k: {n: _finite(v) for n, v in asdict(b).items()} for k, b in self.buckets.items()},
        }


def _finite(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def score(
    ground_truth: dict[str, Any],
    detections: list[dict[str, Any]],
    score_threshold: float = 0.5,
    image_ids: list[int] | None = None,
) -> Report:
    """COCO ground truth + COCO results -> per-bucket AP50, AP50:95, recall and fp/image.

    ``image_ids`` restricts scoring to those images (default: all of ``ground_truth``); images
    without any ground truth count, so false positives on face-free images lower precision.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = copy.deepcopy(ground_truth)
    for ann in gt.get("annotations", []):  # pycocotools needs area and iscrowd on every box
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    ids = sorted(img["id"] for img in gt["images"]) if image_ids is None else sorted(image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = _results(coco_gt, [d for d in detections if d["image_id"] in set(ids)])
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = ids
        evaluator.params.maxDets = [max(100, _most_per_image(detections))]
        evaluator.params.areaRng = [[lo**2, min(hi**2, _AREA_CAP)] for _, lo, hi in BUCKETS]
        evaluator.params.areaRngLbl = [label for label, _, _ in BUCKETS]
        evaluator.evaluate()
        evaluator.accumulate()
    buckets = {
        label: _bucket(evaluator, index, score_threshold, len(ids))
        for index, (label, _, _) in enumerate(BUCKETS)
    }
    return Report(len(ids), score_threshold, buckets)


def _most_per_image(detections: list[dict[str, Any]]) -> int:
    counts: dict[int, int] = {}
    for d in detections:
        counts[d["image_id"]] = counts.get(d["image_id"], 0) + 1
    return max(counts.values(), default=0)


def _results(coco_gt: Any, detections: list[dict[str, Any]]) -> Any:
    """COCO results object; ``loadRes`` cannot take an empty list, so that case is built by hand."""
    from pycocotools.coco import COCO

    if detections:
        return coco_gt.loadRes(copy.deepcopy(detections))
    empty = COCO()
    empty.dataset = {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"]}
    empty.dataset["annotations"] = []
    empty.createIndex()
    return empty


def _bucket(evaluator: Any, area: int, threshold: float, n_images: int) -> BucketScore:
    # precision: (T IoUs, R recall points, K categories, A area ranges, M maxDets); -1 = no ground truth
    precision = evaluator.eval["precision"][:, :, :, area, -1]
    ap50, ap = _mean_valid(precision[IOU_50]), _mean_valid(precision)
    matched = faces = false_positives = 0
    area_rng = evaluator.params.areaRng[area]
    for item in evaluator.evalImgs:  # one per (category, area range, image); None when both are empty
        if item is None or item["aRng"] != area_rng:
            continue
        gt_ignore = np.asarray(item["gtIgnore"], dtype=bool)
        faces += int((~gt_ignore).sum())
        scores = np.asarray(item["dtScores"])
        confident = scores >= threshold
        dt_matches = item["dtMatches"][IOU_50]  # matched ground-truth id per detection, 0 = none
        dt_ignore = item["dtIgnore"][IOU_50].astype(bool)
        false_positives += int((confident & (dt_matches == 0) & ~dt_ignore).sum())
        # A ground-truth box counts as found when its matched detection is confident.
        score_of = dict(zip(item["dtIds"], scores))
        gt_matches = item["gtMatches"][IOU_50]
        found = [score_of.get(int(m), -1.0) >= threshold for m in gt_matches]
        matched += int(np.sum(np.asarray(found, dtype=bool) & ~gt_ignore))
    recall = matched / faces if faces else math.nan
    return BucketScore(ap50, ap, recall, false_positives / max(n_images, 1), faces)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else math.nan
