"""Detector thresholds: defaults from model-config.yaml's ``handler:`` section, per-request overrides.

Every setting has bounds. A bad value in model-config.yaml stops the worker at start with a message
that says what to write instead (handlers/config.py checks the section against this BOUNDS table);
a bad per-request override is that request's 400.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from handlers.errors import InputError

__all__ = ["BOUNDS", "SETTING_NAMES", "Bound", "DetectorSettings"]


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    kind: type  # float or int
    doc: str


# One line per setting: bounds and meaning. Per-request overrides use the same names.
BOUNDS: dict[str, Bound] = {
    "score_threshold": Bound(0.0, 1.0, float, "drop detections scoring below this"),
    "nms_iou": Bound(0.05, 0.95, float, "NMS suppresses boxes overlapping a better one above this IoU"),
    "max_detections": Bound(1, 1000, int, "keep at most this many detections per image"),
    "inference_size": Bound(64, 2048, int, "longest image side fed to the network (images are only shrunk)"),
    "small_faces": Bound(0, 1, bool, "RetinaFace: add zoomed overlapping tiles to find faces under ~24 px"),
}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class DetectorSettings:
    score_threshold: float = 0.5
    nms_iou: float = 0.4
    max_detections: int = 100
    inference_size: int = 640
    small_faces: bool = False  # RetinaFace only (handlers/tiling.py); other detectors ignore it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> DetectorSettings:
        """Per-request overrides (strings from a query or values from JSON) -> new settings, or 400."""
        if not overrides:
            return self
        return replace(self, **{k: _coerce(k, v) for k, v in overrides.items()})


SETTING_NAMES = tuple(f.name for f in fields(DetectorSettings))


def _coerce(name: str, value: Any) -> float | int | bool:
    if name not in BOUNDS:
        raise InputError(f"unknown setting '{name}'; known settings: {', '.join(SETTING_NAMES)}")
    bound = BOUNDS[name]
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if bound.kind is bool:
        return _flag(name, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        expected = f"a number between {bound.low} and {bound.high}"
        raise InputError(f"{name} must be {expected}, got {value!r}") from None
    if bound.kind is int:
        if number != int(number):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        number = int(number)
    if not bound.low <= number <= bound.high:
        raise InputError(f"{name}={value} is outside [{bound.low}, {bound.high}] ({bound.doc})")
    return number


def _flag(name: str, value: Any) -> bool:
    """JSON true/false, or a header / form / query string: true|false (also 1|0, yes|no, on|off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InputError(f"{name} must be true or false, got {value!r}")
