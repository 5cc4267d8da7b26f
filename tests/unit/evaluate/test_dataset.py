"""The evaluation set is reproducible, its boxes lie inside its images, and the reference finds the
sample faces where their boxes say."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from scripts.evaluate.dataset import FACE_PX, Slice, build
from scripts.evaluate.runners import EvalSet

TINY = Slice(composites=2, face_free=1, resolutions=((640, 480), (1280, 720)))


def _digest(folder) -> str:
    h = hashlib.sha256((folder / "annotations.json").read_bytes())
    for path in sorted((folder / "images").iterdir()):
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_set(tmp_path):
    build(tmp_path / "a", TINY, seed=3)
    build(tmp_path / "b", TINY, seed=3)
    build(tmp_path / "c", TINY, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_images_boxes_and_kinds(tmp_path):
    coco = build(tmp_path, TINY)
    kinds = [image["kind"] for image in coco["images"]]
    assert kinds.count("composite") == 4 and kinds.count("face_free") == 2 and kinds.count("photo") == 3
    by_id = {image["id"]: image for image in coco["images"]}
    for image in coco["images"]:
        with Image.open(tmp_path / "images" / image["file_name"]) as pil:
            assert pil.size == (image["width"], image["height"]) and pil.format == "JPEG"
    for ann in coco["annotations"]:
        image = by_id[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert image["kind"] != "face_free"
        assert x >= 0 and y >= 0 and x + w <= image["width"] and y + h <= image["height"]
        if image["kind"] == "composite":
            assert FACE_PX[0] - 0.5 <= w <= FACE_PX[1] + 0.5
    groups = EvalSet.load(tmp_path).groups()
    assert set(groups) == {"all", "640x480", "1280x720", "photos", "face_free"}
    assert len(groups["all"]) == len(coco["images"])


def test_missing_set_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m scripts.evaluate build"):
        EvalSet.load(tmp_path)


def test_reference_finds_the_sample_faces():
    from scripts.evaluate.reference import Reference
    from scripts.samples import face_samples
    from tests.support.images import iou

    reference = Reference()
    for image, box in face_samples():
        confident = [d for d in reference.detect(image) if d.score >= 0.5]
        assert len(confident) == 1 and iou(confident[0].box, box) >= 0.7
        assert all(v >= 0 for v in confident[0].box)


def test_cli_build_and_score_reference(tmp_path):
    from scripts.evaluate.cli import main

    out = io.StringIO()
    assert main(["build", "--slice", "small", "--out", str(tmp_path / "set")], out) == 0
    assert "images" in out.getvalue()
    out = io.StringIO()
    code = main(
        ["score", "--reference", "--set", str(tmp_path / "set"), "--json", str(tmp_path / "r.json")], out
    )
    assert code == 0 and "| reference | all |" in out.getvalue()
    figures = json.loads((tmp_path / "r.json").read_text())["runs"]["reference"]["groups"]
    assert figures["photos"]["buckets"]["all"]["ap50"] == pytest.approx(1.0)
    assert figures["face_free"]["buckets"]["all"]["ap50"] is None
