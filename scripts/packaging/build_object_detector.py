"""Archive a torchvision detector from a weights file: one command, checked before anything is packed.

    python -m scripts.packaging.build_object_detector --architecture fasterrcnn_mobilenet_v3_large_fpn \
        [--weights my_detector.pth] [--labels names.txt] [--name object_detector] [--version 1.0] \
        [--store model_store] [--set score_threshold=0.4 --set inference_size=800 ...]

Weights: a state_dict file (loaded with weights_only=True). Without --weights, torchvision's own
cache file is used when present: $TORCH_HOME/hub/checkpoints/<name>.pth, default ~/.cache/torch/...,
which is where torchvision keeps a COCO checkpoint it downloaded (docs/object_detection.md).
Labels: COCO's 91 names by default; otherwise a UTF-8 file with one name per line, line N naming
class index N as the model outputs it (line 1 = index 0 = the background for torchvision models).
Every key of the weights is checked against the architecture: a mismatch stops the build with the
missing / unexpected keys named. The archive's model-config.yaml records the architecture, labels
and thresholds (template: model_configs/object_detector.yaml).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from handlers.coco_labels import COCO_CATEGORIES
from handlers.config import ConfigError, ObjectDetectorConfig
from handlers.object_handler import WEIGHTS_FILE
from handlers.object_models import (
    ARCHITECTURES,
    COCO_LABELS,
    WeightsError,
    build_model,
    read_state_dict,
    weights_mismatch,
)
from scripts.packaging.build_archives import REPO, ArchiveSpec, BuildError, build

__all__ = [
    "TEMPLATE",
    "BuildError",
    "build_object_detector",
    "parse_set",
    "read_labels",
    "render_config",
    "resolve_weights",
    "torchvision_cache_file",
    "validate_config",
]

TEMPLATE = REPO / "model_configs/object_detector.yaml"
HANDLER = REPO / "handlers/object_handler.py"
DOCS = "docs/object_detection.md"


def torchvision_cache_file(architecture: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ARCHITECTURES[architecture].cache_file


def resolve_weights(architecture: str, weights: Path | None) -> Path:
    if weights is not None:
        if not weights.is_file():
            raise BuildError(f"weights file {weights} does not exist")
        return weights
    cached = torchvision_cache_file(architecture)
    if cached.is_file():
        print(f"using torchvision's cached COCO weights {cached}")
        return cached
    raise BuildError(
        f"no weights for {architecture}: pass --weights FILE (a state_dict), or put torchvision's COCO "
        f'checkpoint at {cached} (on a machine with internet: python -c "import torchvision; '
        f"torchvision.models.detection.{architecture}(weights='DEFAULT')\" downloads it there; "
        f"see {DOCS})"
    )


def read_labels(path: Path) -> list[str]:
    """One name per line; trailing blank lines are ignored, a blank line inside is an error."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BuildError(f"cannot read labels file {path}: {err}") from None
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    blank = [i + 1 for i, name in enumerate(names) if not name]
    if blank:
        raise BuildError(f"labels file {path}: line(s) {blank} are empty; every class index needs a name")
    if len(names) < 2:
        raise BuildError(
            f"labels file {path} names {len(names)} class(es); write the background first, then one per class"
        )
    return names


def render_config(template: str, values: dict[str, Any]) -> str:
    """Replace the values of ``values``' keys in the template, keeping its comments and layout."""
    out = template
    for key, value in values.items():
        pattern = re.compile(rf"^(\s*{re.escape(key)}:)([ \t]*)([^#\n]*?)([ \t]*#.*)?$", re.MULTILINE)
        if not pattern.search(out):
            known = re.findall(r"^\s*([A-Za-z_]+):", template, re.MULTILINE)
            raise BuildError(f"unknown setting {key!r}; settable keys: {', '.join(known)}")
        text = json.dumps(value)  # JSON scalars and lists are valid YAML
        out = pattern.sub(lambda m, text=text: f"{m.group(1)} {text}{m.group(4) or ''}", out, count=1)
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BuildError(f"--set expects key=value, e.g. --set score_threshold=0.4; got {item!r}")
        values[key.strip()] = yaml.safe_load(raw)
    return values


def validate_config(text: str) -> dict[str, Any]:
    """What a worker checks at start, checked now: a bad value fails the build, not the deployment."""
    section = yaml.safe_load(text).get("handler") or {}
    try:
        ObjectDetectorConfig.from_section(section)
    except ConfigError as err:
        raise BuildError(str(err)) from None
    return section


def build_object_detector(
    architecture: str,
    weights: Path | None = None,
    labels_file: Path | None = None,
    name: str = "object_detector",
    version: str = "1.0",
    store: Path = REPO / "model_store",
    overrides: dict[str, Any] | None = None,
) -> Path:
    if architecture not in ARCHITECTURES:
        raise BuildError(f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    labels = read_labels(labels_file) if labels_file else list(COCO_CATEGORIES)
    defaults = ARCHITECTURES[architecture]
    values = {
        "architecture": architecture,
        "weights": WEIGHTS_FILE,
        "labels": COCO_LABELS if labels_file is None else labels,
        "min_size": defaults.min_size,
        "nms_iou": defaults.nms_iou,
        "inference_size": 320 if defaults.min_size == 320 else 1333,
    }
    values.update(overrides or {})
    config_text = render_config(TEMPLATE.read_text(), values)
    validate_config(config_text)  # before the weights are read: a typo costs no model load

    weights = resolve_weights(architecture, weights)
    try:
        state = read_state_dict(weights)
    except WeightsError as err:
        raise BuildError(str(err)) from None
    problem = weights_mismatch(architecture, len(labels), state)
    if problem:
        raise BuildError(f"{weights}: {problem}")
    model = build_model(architecture, len(labels))
    model.load_state_dict(state, strict=True)  # float32 copy, BatchNorm counters filled in
    with tempfile.TemporaryDirectory(prefix="object-detector-") as tmp:
        staged_weights, staged_config = Path(tmp) / WEIGHTS_FILE, Path(tmp) / "model-config.yaml"
        torch.save(model.state_dict(), staged_weights)
        staged_config.write_text(config_text)
        spec = ArchiveSpec(
            name=name,
            version=version,
            handler=HANDLER,
            weights=staged_weights,
            config=staged_config,
            description=f"torchvision {architecture} object detector",
        )
        return build(spec, store)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.build_object_detector",
        description="Archive a torchvision object detector from a weights file.",
    )
    parser.add_argument("--architecture", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--weights", type=Path, help="state_dict file; default: torchvision's cache file")
    parser.add_argument("--labels", type=Path, help="one class name per line, background first; default COCO")
    parser.add_argument(
        "--name", default="object_detector", help="model name in URLs (default object_detector)"
    )
    parser.add_argument("--version", default="1.0", help="model version (default 1.0)")
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model-config.yaml value, e.g. score_threshold=0.4 or batchSize=4")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        target = build_object_detector(
            args.architecture,
            args.weights,
            args.labels,
            args.name,
            args.version,
            args.store,
            parse_set(args.set),
        )
    except BuildError as err:
        sys.exit(f"error: {err}")
    print(
        f"serve it: add {target.name} to load_models in config.properties "
        f"(e.g. load_models=face_detector-2.0.mar,{target.name}), then make serve; see {DOCS}"
    )


if __name__ == "__main__":
    main()
