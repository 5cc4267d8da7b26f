"""Run one detector over an evaluation set: served (through the client), an archive in-process, or
the onnxruntime reference; COCO results out, with the wall time of the detector calls.

Every runner asks for detections down to ``EVAL_SCORE`` (AP needs the low-scoring tail); recall and
false positives are then read at the served default of 0.5 (scripts/evaluate/coco.py).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.schema import Detection

__all__ = [
    "EVAL_SCORE",
    "EvalSet",
    "Run",
    "archive_runner",
    "reference_runner",
    "run",
    "served_runner",
    "speed",
]

EVAL_SCORE = 0.05  # lowest score asked for; COCO's own evaluations keep everything above ~0.05

Detect = Callable[[bytes], list[Detection]]


@dataclass(frozen=True)
class EvalSet:
    folder: Path
    coco: dict[str, Any]

    @classmethod
    def load(cls, folder: Path | str) -> EvalSet:
        folder = Path(folder)
        path = folder / "annotations.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: build it with `python -m scripts.evaluate build`")
        return cls(folder, json.loads(path.read_text()))

    def groups(self) -> dict[str, list[int]]:
        """Image ids by group: 'all', each frame size (composites and face-free frames), 'photos', and
        'face_free' (the face-free frames of every size: their fp/image is the false-positive check)."""
        groups: dict[str, list[int]] = {"all": []}
        for image in self.coco["images"]:
            key = "photos" if image.get("kind") == "photo" else f"{image['width']}x{image['height']}"
            groups.setdefault(key, []).append(image["id"])
            groups["all"].append(image["id"])
        face_free = [image["id"] for image in self.coco["images"] if image.get("kind") == "face_free"]
        if face_free:
            groups["face_free"] = face_free
        return groups


@dataclass(frozen=True)
class Run:
    results: list[dict[str, Any]]  # COCO results
    seconds: dict[int, float]  # image id -> wall time of its detector call

    def images_per_s(self, image_ids: list[int]) -> float:
        """Images per second over ``image_ids``, one at a time (no concurrency, no batching)."""
        total = sum(self.seconds[i] for i in image_ids)
        return len(image_ids) / total if total else 0.0


def run(eval_set: EvalSet, detect: Detect) -> Run:
    """Each image once, in order, one at a time."""
    results: list[dict[str, Any]] = []
    seconds: dict[int, float] = {}
    for image in eval_set.coco["images"]:
        data = (eval_set.folder / "images" / image["file_name"]).read_bytes()
        start = time.perf_counter()
        detections = detect(data)
        seconds[image["id"]] = time.perf_counter() - start
        results.extend(_coco(image["id"], d) for d in detections)
    return Run(results, seconds)


def speed(
    detects: dict[str, Detect], frames: dict[str, bytes], repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Images/s of each detector on each frame, from the fastest of ``repeats`` calls, taken
    round-robin (every detector on every frame, then again). The fastest call is the one least
    disturbed by other processes on a shared machine (timeit's rule); a median swings 2x here.
    {detector name: {frame name: images/s}}."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for detect in detects.values():  # warm-up: first-call allocations are not the steady state
        for data in frames.values():
            detect(data)
    for _ in range(repeats):
        for frame, data in frames.items():
            for name, detect in detects.items():
                start = time.perf_counter()
                detect(data)
                times[name, frame].append(time.perf_counter() - start)
    return {name: {frame: 1.0 / min(times[name, frame]) for frame in frames} for name in detects}


def _coco(image_id: int, d: Detection) -> dict[str, Any]:
    x1, y1, x2, y2 = d.box
    return {"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d.score}


def reference_runner(threads: int = 1) -> Detect:
    """The wheel's ONNX graph at original size (scripts/evaluate/reference.py); decoding included."""
    import io

    import numpy as np
    from PIL import Image

    from scripts.evaluate.reference import Reference

    reference = Reference(threads, score_threshold=EVAL_SCORE)

    def detect(data: bytes) -> list[Detection]:
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return reference.detect(rgb, max_detections=100)

    return detect


def archive_runner(model: Any, settings: dict[str, Any]) -> Detect:
    """``model`` is a scripts.inprocess.ArchivedModel; ``settings`` are per-request overrides."""

    def detect(data: bytes) -> list[Detection]:
        return model.detect_bytes(data, **{"score_threshold": EVAL_SCORE, **settings}).detections

    return detect


def served_runner(client: Any, model: str, version: str | None, settings: dict[str, Any]) -> Detect:
    """``client`` is a scripts.client.DetectionClient; settings travel as X-* headers."""

    def detect(data: bytes) -> list[Detection]:
        return client.detect(data, model, version, **{"score_threshold": EVAL_SCORE, **settings}).detections

    return detect
