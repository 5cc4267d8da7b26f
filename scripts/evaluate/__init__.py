"""Accuracy, measured like speed: an annotated face set built from wheel images, COCO scoring with
pycocotools, the onnxruntime reference at original size, and runners for served and archived models.

    python -m scripts.evaluate build --slice full
    python -m scripts.evaluate sizes            # AP50 by face size and images/s per inference size
"""

from scripts.evaluate.coco import BUCKETS, BucketScore, Report, score
from scripts.evaluate.dataset import SLICES, Slice, build
from scripts.evaluate.reference import Reference
from scripts.evaluate.runners import EvalSet, Run, archive_runner, reference_runner, run, served_runner

__all__ = [
    "BUCKETS",
    "SLICES",
    "BucketScore",
    "EvalSet",
    "Reference",
    "Report",
    "Run",
    "Slice",
    "archive_runner",
    "build",
    "reference_runner",
    "run",
    "score",
    "served_runner",
]
