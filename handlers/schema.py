"""The one detection type shared by handlers, clients, batch scoring, drift and tests.

Wire format of a response (stable; see README):
    {"model": str, "version": str, "image": {"width": int, "height": int},
     "detections": [{"label": str, "score": float, "box": [x1, y1, x2, y2],
                     "landmarks": [[x, y] * 5]   # face models only
                     "class_id": int}],          # object models only
     "timings_ms": {"decode": ms, "preprocess": ms, "inference": ms, "postprocess": ms}}
Boxes are in the pixel coordinates of the image as a viewer sees it (after EXIF rotation),
clipped to it, and detections are sorted by descending score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["COORD_DECIMALS", "Detection", "DetectionResult", "SCORE_DECIMALS", "STAGES"]

STAGES = ("decode", "preprocess", "inference", "postprocess")
COORD_DECIMALS = 2
SCORE_DECIMALS = 5


@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels
    landmarks: list[tuple[float, float]] | None = None
    class_id: int | None = None

    def to_json(self) -> dict:
        out: dict = {
            "label": self.label,
            "score": round(float(self.score), SCORE_DECIMALS),
            "box": [round(float(v), COORD_DECIMALS) for v in self.box],
        }
        if self.class_id is not None:
            out["class_id"] = int(self.class_id)
        if self.landmarks is not None:
            out["landmarks"] = [
                [round(float(x), COORD_DECIMALS), round(float(y), COORD_DECIMALS)] for x, y in self.landmarks
            ]
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Detection:
        landmarks = obj.get("landmarks")
        return cls(
            label=obj["label"],
            score=float(obj["score"]),
            box=tuple(float(v) for v in obj["box"]),
            landmarks=[tuple(p) for p in landmarks] if landmarks is not None else None,
            class_id=obj.get("class_id"),
        )


@dataclass
class DetectionResult:
    model: str
    version: str
    width: int
    height: int
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Input statistics for monitoring (handlers/features.py); never serialized into a response.
    features: dict[str, float] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "image": {"width": self.width, "height": self.height},
            "detections": [d.to_json() for d in self.detections],
            "timings_ms": {k: round(self.timings_ms.get(k, 0.0), 3) for k in STAGES},
        }

    @classmethod
    def from_json(cls, obj: dict) -> DetectionResult:
        return cls(
            model=obj["model"],
            version=obj["version"],
            width=obj["image"]["width"],
            height=obj["image"]["height"],
            detections=[Detection.from_json(d) for d in obj["detections"]],
            timings_ms=dict(obj.get("timings_ms", {})),
        )
