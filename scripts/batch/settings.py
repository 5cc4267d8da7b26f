"""Per-request detector settings of a batch run: the options that ask for them, their check, and how
they are named back in messages.

The settings are the handlers' own (handlers/settings.py BOUNDS): sent with every request in server
mode (``X-Small-Faces: true`` ...), added to every request dict in-process (``{"body": ..,
"small_faces": True}``), and recorded in the journal header so that an output never mixes rows
scored with different settings (scripts/batch/output.py ``Journal``).

    >>> from scripts.batch.cli import build_parser
    >>> settings_from_args(build_parser().parse_args(["in", "-o", "o.jsonl", "--small-faces"]))
    {'small_faces': True}
"""

from __future__ import annotations

import argparse
from typing import Any

from handlers.errors import InputError
from handlers.settings import BOUNDS, DetectorSettings
from scripts.cli import UsageError
from scripts.client import setting_value

__all__ = ["SETTING_OPTIONS", "add_setting_options", "request_values", "settings_flags", "settings_from_args"]

# Options offered here: the per-request settings a batch run is likely to change (the server also
# takes nms_iou and max_detections; they stay at the model's defaults).
SETTING_OPTIONS = ("small_faces", "score_threshold", "inference_size")


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """--small-faces / --no-small-faces, --score-threshold, --inference-size; unset = the model's own."""
    group = parser.add_argument_group(
        "detector settings (sent with every request; unset: the model's own, model-config.yaml)"
    )
    group.add_argument(
        "--small-faces", action=argparse.BooleanOptionalAction, default=None,
        help="face_detector 2.0: add zoomed tiles to find faces under ~24 px (about 5x slower; "
        "docs/accuracy.md); other models ignore it",
    )  # fmt: skip
    for name in SETTING_OPTIONS[1:]:
        bound = BOUNDS[name]
        group.add_argument(
            "--" + name.replace("_", "-"), type=str, metavar="N",
            help=f"{bound.doc}, {bound.low:g} to {bound.high:g}",
        )  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings asked for, checked against the handlers' bounds: {name: bool | float | int}."""
    out: dict[str, Any] = {}
    for name in SETTING_OPTIONS:
        value = getattr(args, name, None)
        if value is None:
            continue
        try:
            out[name] = getattr(DetectorSettings().with_overrides({name: value}), name)
        except InputError as err:  # "score_threshold=2 is outside [0.0, 1.0] (...)"
            raise UsageError(err.message.replace(name, "--" + name.replace("_", "-"), 1)) from None
    return out


def request_values(settings: dict[str, Any]) -> dict[str, str]:
    """Settings as request header values: booleans as true / false (what the handlers document)."""
    return {k: setting_value(v) for k, v in settings.items()}


def settings_flags(settings: dict[str, Any]) -> str:
    """Settings as the command-line options that ask for them (for messages)."""
    flags = []
    for name, value in sorted(settings.items()):
        option = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{option}" if value else f"--no-{option}")
        else:
            flags.append(f"--{option} {value}")
    return " ".join(flags) or "no setting options (the model's defaults)"
