"""The torchvision detector families the ``object_detector`` handler serves, and their weights files.

Every family is torchvision's own code; only the weights come from the user, as a plain state_dict
(loaded with ``weights_only=True``). The family and the class names are recorded in the archive's
model-config.yaml (``handler:`` section) when the archive is built:

    architecture: fasterrcnn_mobilenet_v3_large_fpn   # one of ARCHITECTURES
    labels: coco                                      # or a list of names, one per class index
    min_size: 800                                     # short side target (not for ssdlite320)
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum, detection

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "COCO_LABELS",
    "MIN_SIZE_RANGE",
    "ObjectModelConfig",
    "SHOWN_KEYS",
    "WeightsError",
    "build_model",
    "expected_shapes",
    "load_model",
    "read_state_dict",
    "weights_mismatch",
]

COCO_LABELS = "coco"
MIN_SIZE_RANGE = (32, 2048)
SHOWN_KEYS = 8  # keys named per category in a mismatch message


@dataclass(frozen=True)
class Architecture:
    builder: Callable[..., nn.Module]
    coco_weights: WeightsEnum  # torchvision's COCO checkpoint: its file name and categories
    nms_iou: float  # torchvision's default class-wise NMS IoU for the family
    min_size: int  # torchvision's default short-side target (ssdlite: its fixed square input)

    @property
    def cache_file(self) -> str:
        """File name torchvision gives the COCO checkpoint in ~/.cache/torch/hub/checkpoints/."""
        return self.coco_weights.url.rsplit("/", 1)[-1]


ARCHITECTURES: dict[str, Architecture] = {
    "ssdlite320_mobilenet_v3_large": Architecture(
        detection.ssdlite320_mobilenet_v3_large,
        detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
        0.55,
        320,
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": Architecture(
        detection.fasterrcnn_mobilenet_v3_large_fpn,
        detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1,
        0.5,
        800,
    ),
    "fasterrcnn_resnet50_fpn_v2": Architecture(
        detection.fasterrcnn_resnet50_fpn_v2, detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1, 0.5, 800
    ),
    "retinanet_resnet50_fpn_v2": Architecture(
        detection.retinanet_resnet50_fpn_v2, detection.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1, 0.5, 800
    ),
    "fcos_resnet50_fpn": Architecture(
        detection.fcos_resnet50_fpn, detection.FCOS_ResNet50_FPN_Weights.COCO_V1, 0.6, 800
    ),
}


class WeightsError(ValueError):
    """A weights file that cannot serve the chosen architecture; the message names the fix."""


@dataclass(frozen=True)
class ObjectModelConfig:
    """The model part of the ``handler:`` section, read and checked by handlers/config.py
    (ObjectDetectorConfig.model); thresholds live in handlers/settings.py."""

    architecture: str
    labels: tuple[str, ...]  # one name per class index the model outputs (0 = background)
    min_size: int

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def build_model(architecture: str, num_classes: int, device: str | torch.device = "cpu") -> nn.Module:
    """The family's torchvision module with freshly initialised weights (nothing is downloaded).

    On the ``meta`` device nothing is allocated: use it to list the expected keys or to load weights
    with ``load_state_dict(assign=True)``.
    """
    with torch.device(device):
        return ARCHITECTURES[architecture].builder(
            weights=None, weights_backbone=None, num_classes=num_classes
        )


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """A weights file -> its state_dict, loaded with ``weights_only=True``.

    Accepts a bare state_dict or a training checkpoint holding one under "model" / "state_dict"
    (as torchvision's reference training scripts save them), provided it loads weights-only.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_torch_file(path):
            raise WeightsError(f"{path} is not a torch weights file (torch.save output)") from None
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "")
        reason = reason.split(" was not an allowed global")[0]  # drop torch's advice to allow-list it
        raise WeightsError(
            f"{path} holds Python objects besides tensors, and weights-only loading refused it"
            f"{' (' + reason + ')' if reason else ''}. Save the state_dict alone: "
            f"torch.save(model.state_dict(), '{path.name}')"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, zipfile errors, ...
        raise WeightsError(
            f"cannot read {path} as a torch weights file: {type(err).__name__}: {err}"
        ) from None
    for candidate in (obj, *(obj.get(k) for k in ("model", "state_dict") if isinstance(obj, dict))):
        if _is_state_dict(candidate):
            return dict(candidate)
    keys = sorted(map(str, obj))[:SHOWN_KEYS] if isinstance(obj, dict) else []
    raise WeightsError(
        f"{path} holds a {type(obj).__name__} (keys {keys}), not a state_dict of tensors; "
        f"save one with torch.save(model.state_dict(), '{path.name}')"
    )


def _looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (legacy format: a pickle, protocol 2 opcode first)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK") or head.startswith(b"\x80")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _bookkeeping(key: str) -> bool:
    # BatchNorm's batch counter: absent from torchvision's COCO checkpoints (FrozenBatchNorm2d) and
    # unused at inference; load_state_dict fills it in.
    return key.endswith("num_batches_tracked")


def expected_shapes(architecture: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    model = build_model(architecture, num_classes, "meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not _bookkeeping(k)}


def weights_mismatch(architecture: str, num_classes: int, state: dict[str, torch.Tensor]) -> str | None:
    """None when ``state`` fits the architecture exactly; otherwise a message naming the problems."""
    expected = expected_shapes(architecture, num_classes)
    found = {k: tuple(v.shape) for k, v in state.items() if not _bookkeeping(k)}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or reshaped):
        return None
    parts = [f"the weights do not fit {architecture} with {num_classes} classes:"]
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_some(unexpected)}")
    if reshaped:
        shapes = [f"{k} file {list(found[k])} vs model {list(expected[k])}" for k in reshaped]
        parts.append(f"{len(reshaped)} shape mismatch(es): {_some(shapes)}")
    parts.append(_hint(architecture, num_classes, found, missing or unexpected))
    return "\n  ".join(parts)


def _some(items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN_KEYS} more)" if len(items) > SHOWN_KEYS else ""
    return ", ".join(items[:SHOWN_KEYS]) + more


def _hint(architecture: str, num_classes: int, found: dict[str, tuple[int, ...]], keys_differ: bool) -> str:
    if not keys_differ:
        return (
            f"Only shapes differ: the class head was trained for another number of classes than "
            f"{num_classes}. Give a labels file with one name per class index (background first)."
        )
    for other in ARCHITECTURES:
        if other != architecture and set(expected_shapes(other, num_classes)) == set(found):
            return f"These are {other} weights: build with --architecture {other}."
    return "Check that the file is a state_dict of this architecture saved by torchvision."


def load_model(
    config: ObjectModelConfig, weights: Path | str, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the architecture without initialising it and load the weights file into it, strictly."""
    state = read_state_dict(weights)
    model = build_model(config.architecture, config.num_classes, "meta")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        problem = weights_mismatch(config.architecture, config.num_classes, state)
        raise WeightsError(problem or str(err)) from None
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"weights file {weights} left tensors uninitialised: {_some(left)}")
    # assign=True keeps the file's dtypes: serve in float32 whatever the file was saved in.
    return model.float().to(device).eval()
