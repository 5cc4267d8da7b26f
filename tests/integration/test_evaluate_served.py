"""The served face_detector 2.0 on the small evaluation slice, scored by pycocotools against the
wheel's ONNX graph run at original size (scripts/evaluate/).

- the served default (inference_size from model_configs/face_detector-2.0.yaml) loses at most
  0.01 AP50 to the reference on 640x480 and on 1280x720 frames;
- ``X-Small-Faces: true`` is at least as good as the reference on faces under 24 px, and finds no
  confident (score >= 0.5) false positive on face-free frames that the default does not find too.
"""

from __future__ import annotations

import pytest

from scripts.evaluate.cli import evaluate
from scripts.evaluate.coco import score
from scripts.evaluate.dataset import SLICES, build
from scripts.evaluate.runners import EvalSet, reference_runner, run, served_runner
from tests.support.images import iou

TOLERANCE = 0.01


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory: pytest.TempPathFactory) -> EvalSet:
    folder = tmp_path_factory.mktemp("faces-small")
    build(folder, SLICES["small"])
    return EvalSet.load(folder)


@pytest.fixture(scope="module")
def reference(eval_set):
    return evaluate(eval_set, reference_runner())["groups"]


def test_served_default_matches_the_original_size_reference(server, eval_set, reference):
    served = evaluate(eval_set, served_runner(server.client(timeout=120), "face_detector", "2.0", {}))[
        "groups"
    ]
    for group in ("640x480", "1280x720", "all"):
        got, want = served[group].buckets["all"].ap50, reference[group].buckets["all"].ap50
        assert got >= want - TOLERANCE, f"{group}: served AP50 {got:.3f} < reference {want:.3f} - {TOLERANCE}"


def _confident_face_free(eval_set: EvalSet, results: list[dict]) -> dict[int, list[list[float]]]:
    face_free = set(eval_set.groups()["face_free"])
    boxes: dict[int, list[list[float]]] = {i: [] for i in face_free}
    for r in results:
        if r["image_id"] in face_free and r["score"] >= 0.5:
            x, y, w, h = r["bbox"]
            boxes[r["image_id"]].append([x, y, x + w, y + h])
    return boxes


def test_small_faces_beats_the_reference_on_small_faces_without_new_false_positives(
    server, eval_set, reference
):
    client = server.client(timeout=120)
    tiled = run(eval_set, served_runner(client, "face_detector", "2.0", {"small_faces": "true"}))
    plain = run(eval_set, served_runner(client, "face_detector", "2.0", {}))
    small = score(eval_set.coco, tiled.results).buckets["<24"]
    want = reference["all"].buckets["<24"]
    assert small.faces > 0 and small.ap50 >= want.ap50, (small, want)
    plain_fp = _confident_face_free(eval_set, plain.results)
    for image_id, boxes in _confident_face_free(eval_set, tiled.results).items():
        new = [b for b in boxes if not any(iou(b, p) > 0.5 for p in plain_fp[image_id])]
        assert not new, f"image {image_id}: small_faces adds false positives {new}"


def test_small_faces_header_is_validated(server):
    from scripts.client import RequestRejected
    from scripts.samples import sample_jpeg

    with pytest.raises(RequestRejected, match="small_faces must be true or false"):
        server.client().detect(sample_jpeg(), small_faces="maybe")
