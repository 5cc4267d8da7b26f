"""Typed ``handler:`` sections of model-config.yaml: one frozen dataclass per model family.

Each family declares its keys once, as dataclass fields: the annotation is the type a value must
have, the default is what a missing key means, and the field's metadata holds its bounds (the
per-request settings take theirs from the BOUNDS table of handlers/settings.py) or its allowed
values. :meth:`HandlerConfig.from_section` checks a whole section at once, at worker start
(``DetectionHandler.initialize``) and when an archive is built (scripts/packaging/), and names every
problem with its fix:

    unknown key 'score_treshold'; did you mean 'score_threshold'?
    fp16 must be bool (true or false), got 'yes' (str)
    score_threshold=7 is outside [0.0, 1.0] (drop detections scoring below this)

Why: each module used to read the keys it knew and ignore the rest, so a typo such as
``fp61: true`` passed unnoticed and the default served instead.

    config = RetinaFaceConfig.from_section(yaml.safe_load(text)["handler"])
    pipeline = DetectionPipeline(detector, name, version, config.settings(), config.decode_limits())
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, Self, Union

from handlers.coco_labels import COCO_CATEGORIES
from handlers.image_decode import ACCEPTED_FORMATS, DecodeLimits
from handlers.mtcnn import PNET_WINDOW, CascadeConfig
from handlers.object_models import ARCHITECTURES, COCO_LABELS, MIN_SIZE_RANGE, ObjectModelConfig
from handlers.settings import BOUNDS, Bound, DetectorSettings

__all__ = [
    "BACKENDS",
    "FAMILIES",
    "ConfigError",
    "HandlerConfig",
    "MTCNNConfig",
    "ObjectDetectorConfig",
    "RetinaFaceConfig",
]

BACKENDS = ("auto", "eager", "onnxruntime")


class ConfigError(ValueError):
    """A ``handler:`` section that a worker would refuse; one line per problem, each with its fix."""

    def __init__(self, family: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"model-config.yaml handler section ({family}): " + "\n  ".join(problems))


def _setting(name: str) -> Any:
    """A per-request setting: its default from DetectorSettings, its bounds from BOUNDS."""
    return field(default=getattr(DetectorSettings, name), metadata={"bound": BOUNDS[name]})


def _bounded(default: Any, low: float, high: float, kind: type, doc: str) -> Any:
    return field(default=default, metadata={"bound": Bound(low, high, kind, doc)})


def _one_of(default: Any, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


def _parsed(default: Any, parse: Callable[[Any], Any]) -> Any:
    """A value with its own reader: ``parse`` returns the normalised value or raises ValueError."""
    return field(default=default, metadata={"parse": parse})


def _image_formats(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"must be a list of format names, got {value!r}")
    formats = tuple(v.upper() for v in value)
    unknown = sorted(set(formats) - set(ACCEPTED_FORMATS))
    if unknown or not formats:
        raise ValueError(f"must be a non-empty subset of {list(ACCEPTED_FORMATS)}, got unknown {unknown}")
    return formats


def _labels(value: Any) -> tuple[str, ...]:
    if value == COCO_LABELS:
        return COCO_CATEGORIES
    names = value if isinstance(value, (list, tuple)) else None
    if not names or len(names) < 2 or not all(_is_name(x) for x in names):
        raise ValueError(
            "must be 'coco' or a list of at least 2 non-empty names, one per class index with the "
            f"background first, e.g. labels: [__background__, cat, dog]; got {value!r}"
        )
    return tuple(str(x) for x in names)


def _is_name(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and bool(str(value).strip())


@dataclass(frozen=True, kw_only=True)
class HandlerConfig:
    """Keys every family reads. Subclasses add theirs and set ``family`` and the weights file."""

    family: ClassVar[str] = "detector"

    weights: str = ""  # state_dict file inside the archive, loaded with weights_only=True
    score_threshold: float = _setting("score_threshold")
    nms_iou: float = _setting("nms_iou")
    max_detections: int = _setting("max_detections")
    inference_size: int = _setting("inference_size")
    # Default of the per-request option; RetinaFace tiles (handlers/tiling.py), the others ignore it.
    small_faces: bool = _setting("small_faces")
    max_image_pixels: int = _bounded(DecodeLimits.max_pixels, 1, 2**40, int, "images above -> 413")
    max_image_side: int = _bounded(DecodeLimits.max_side, 1, 2**20, int, "images above -> 413")
    image_formats: tuple[str, ...] = _parsed(ACCEPTED_FORMATS, _image_formats)
    torch_threads: int = _bounded(0, 0, 1024, int, "intra-op threads per worker; 0 = torch's default")

    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None) -> Self:
        """Validate a whole ``handler:`` section; ConfigError lists every problem with its fix."""
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(cls.family, [f"must be a mapping of key: value, got {section!r}"])
        spec = _spec(cls)
        values: dict[str, Any] = {}
        problems = []
        for key, value in section.items():
            if key not in spec:
                problems.append(_unknown_key(cls, str(key)))
                continue
            try:
                values[key] = _check(key, value, *spec[key])
            except ValueError as err:
                problems.append(str(err))
        for name, (f, _) in spec.items():
            if f.default is MISSING and name not in section:
                choices = f.metadata.get("choices")
                hint = f": write one of {', '.join(choices)}" if choices else ""
                problems.append(f"missing key '{name}'{hint}")
        if problems:
            raise ConfigError(cls.family, problems)
        return cls(**values)

    @classmethod
    def known_keys(cls) -> tuple[str, ...]:
        return tuple(_spec(cls))

    def settings(self) -> DetectorSettings:
        """The per-request settings' defaults (requests may override them within BOUNDS)."""
        return DetectorSettings(
            self.score_threshold, self.nms_iou, self.max_detections, self.inference_size, self.small_faces
        )

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_image_pixels, self.max_image_side, self.image_formats)

    @property
    def tensor_decode(self) -> bool:
        """Whether the detector takes (3, H, W) tensors decoded on its GPU (nvJPEG); numpy otherwise."""
        return False


@dataclass(frozen=True, kw_only=True)
class RetinaFaceConfig(HandlerConfig):
    family: ClassVar[str] = "RetinaFace, face_detector 2.0"

    weights: str = "retinaface_mobile0.25.pt"
    onnx: str = "retinaface_mobile0.25.onnx"  # the same module exported at build time
    backend: str = _one_of("auto", BACKENDS)  # auto: onnxruntime on CPU when the onnx file exists
    onnx_memory_arena: bool = True
    channels_last: bool = True
    fp16: bool = True  # CUDA only
    gpu_jpeg_decode: bool = True  # CUDA only

    @property
    def tensor_decode(self) -> bool:
        return self.gpu_jpeg_decode


@dataclass(frozen=True, kw_only=True)
class MTCNNConfig(HandlerConfig):
    family: ClassVar[str] = "MTCNN, face_detector 1.0"

    weights: str = "mtcnn.pt"
    min_face_size: int = _bounded(
        CascadeConfig.min_face_size, PNET_WINDOW, 1000, int, "smallest face searched for, in pixels"
    )
    pyramid_factor: float = _bounded(
        CascadeConfig.pyramid_factor, 0.3, 0.95, float, "scale ratio between pyramid levels"
    )
    pnet_threshold: float = _bounded(CascadeConfig.pnet_threshold, 0.0, 1.0, float, "P-Net probability")
    rnet_threshold: float = _bounded(CascadeConfig.rnet_threshold, 0.0, 1.0, float, "R-Net probability")

    def cascade(self) -> CascadeConfig:
        return CascadeConfig(
            self.min_face_size, self.pyramid_factor, self.pnet_threshold, self.rnet_threshold
        )


@dataclass(frozen=True, kw_only=True)
class ObjectDetectorConfig(HandlerConfig):
    family: ClassVar[str] = "torchvision object detector"

    weights: str = "object_detector.pt"
    architecture: str = field(metadata={"choices": tuple(ARCHITECTURES)})  # required
    labels: tuple[str, ...] = _parsed(COCO_CATEGORIES, _labels)
    # Short side fed to the network; None (or absent) = torchvision's value for the architecture.
    min_size: int | None = _bounded(None, *MIN_SIZE_RANGE, int, "short side fed to the network")

    def model(self) -> ObjectModelConfig:
        min_size = ARCHITECTURES[self.architecture].min_size if self.min_size is None else self.min_size
        return ObjectModelConfig(self.architecture, self.labels, min_size)


FAMILIES: tuple[type[HandlerConfig], ...] = (RetinaFaceConfig, MTCNNConfig, ObjectDetectorConfig)


@cache
def _spec(cls: type[HandlerConfig]) -> dict[str, tuple[Field, Any]]:
    """Key -> (dataclass field, resolved type annotation), in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in fields(cls)}


def _unknown_key(cls: type[HandlerConfig], key: str) -> str:
    owners = [other.family for other in FAMILIES if other is not cls and key in other.known_keys()]
    if owners:  # right key, wrong model (e.g. an MTCNN key in a RetinaFace config)
        return f"unknown key '{key}': it belongs to {owners[0]}, not to {cls.family}"
    close = difflib.get_close_matches(key, cls.known_keys(), n=1)
    if close:
        return f"unknown key '{key}'; did you mean '{close[0]}'?"
    return f"unknown key '{key}'; valid keys: {', '.join(cls.known_keys())}"


def _check(key: str, value: Any, f: Field, hint: Any) -> Any:
    """One value against its field: type, then bounds or choices; the normalised value or ValueError."""
    meta = f.metadata
    if "parse" in meta:
        try:
            return meta["parse"](value)
        except ValueError as err:
            raise ValueError(f"{key} {err}") from None
    if not _is_instance(value, hint):
        raise ValueError(f"{key} must be {_type_name(hint)}, got {value!r} ({type(value).__name__})")
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{key} is {value!r}; write one of: {', '.join(meta['choices'])}")
    bound: Bound | None = meta.get("bound")
    if bound is not None and not bound.low <= value <= bound.high:
        raise ValueError(f"{key}={value} is outside [{bound.low}, {bound.high}] ({bound.doc})")
    return float(value) if hint is float else value


def _is_instance(value: Any, hint: Any) -> bool:
    """isinstance for the annotations used here: bool, int, float (ints accepted), str, X | None."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool  # YAML true/false is never a number
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


_TYPE_NAMES = {
    bool: "bool (true or false)",
    int: "int (a whole number)",
    float: "float (a number)",
    str: "str",
}


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))
