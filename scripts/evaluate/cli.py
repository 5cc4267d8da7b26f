"""``python -m scripts.evaluate``: build an annotated set, score a detector on it, compare sizes.

    python -m scripts.evaluate build --slice full                      # build/eval/faces-full/
    python -m scripts.evaluate score --reference                       # the wheel's ONNX, original size
    python -m scripts.evaluate score --archive model_store/face_detector-2.0.mar --set-option small_faces=true
    python -m scripts.evaluate score --served --version 2.0 --small-faces --json build/eval/served.json
    python -m scripts.evaluate sizes --sizes 640,960,1280,2048         # docs/accuracy.md's table

Any COCO-format ground truth works with ``score --set`` (a folder holding annotations.json and
images/), so the object detector can be scored with the same tool (``--model object_detector``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from scripts.evaluate.coco import BUCKETS, score
from scripts.evaluate.dataset import SLICES, build
from scripts.evaluate.runners import (
    EvalSet,
    Run,
    archive_runner,
    reference_runner,
    run,
    served_runner,
    speed,
)
from scripts.paths import REPO

__all__ = ["build_parser", "evaluate", "main"]

DEFAULT_SET = REPO / "build" / "eval" / "faces-full"
DEFAULT_ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.evaluate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write an evaluation set (images + COCO annotations.json)")
    b.add_argument("--slice", choices=sorted(SLICES), default="full")
    b.add_argument("--out", type=Path, help="folder (default: build/eval/faces-<slice>)")
    b.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("score", help="AP50, AP50:95, recall and fp/image, per size bucket")
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument("--reference", action="store_true", help="the wheel's ONNX at original size")
    target.add_argument("--archive", type=Path, help="a .mar run in this process (scripts/inprocess.py)")
    target.add_argument("--served", action="store_true", help="a running TorchServe, through the client")
    _common(s)
    s.add_argument("--model", default="face_detector", help="served model name (default: face_detector)")
    s.add_argument("--version", help="served model version (default: the server's default version)")
    s.add_argument("--url", help="inference address (default: config.properties / TS_INFERENCE_URL)")
    s.add_argument("--key-file", help="TorchServe key_file.json (default: as scripts/client.py finds it)")
    s.add_argument(
        "--set-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="per-request setting, repeatable, e.g. inference_size=1280",
    )
    s.add_argument("--small-faces", action="store_true", help="shorthand for --set-option small_faces=true")

    z = sub.add_parser("sizes", help="AP50 by bucket and images/s for several inference sizes")
    _common(z)
    z.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    z.add_argument("--sizes", default="640,960,1280,2048", help="inference sizes, comma-separated")
    z.add_argument("--small-faces", action="store_true", help="add a row for small_faces at the default size")
    z.add_argument(
        "--repeats", type=int, default=7, help="timed calls per frame and run, fastest kept (default: 7)"
    )
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="eval_set",
        type=Path,
        default=DEFAULT_SET,
        help="folder with annotations.json and images/ (default: build/eval/faces-full)",
    )
    p.add_argument("--score", type=float, default=0.5, help="score of recall and fp/image (default: 0.5)")
    p.add_argument("--json", type=Path, help="also write the figures here as JSON")
    p.add_argument("--device", default="cpu", help="archives: auto, cpu (default), cuda or cuda:N")


def evaluate(eval_set: EvalSet, detect: Callable[[bytes], Any], threshold: float = 0.5) -> dict[str, Any]:
    """Run ``detect`` on every image; {"groups": {group: Report}, "images_per_s": {group: float}}."""
    result: Run = run(eval_set, detect)
    groups = eval_set.groups()
    return {
        "groups": {
            name: score(eval_set.coco, result.results, threshold, ids) for name, ids in groups.items()
        },
        "images_per_s": {name: result.images_per_s(ids) for name, ids in groups.items()},
    }


def _options(pairs: list[str], small_faces: bool) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set-option takes NAME=VALUE, e.g. inference_size=1280; got {pair!r}")
        options[name.strip()] = value.strip()
    if small_faces:
        options["small_faces"] = "true"
    return options


def _served(args: argparse.Namespace, options: dict[str, str]) -> Callable[[bytes], Any]:
    from dataclasses import replace

    from scripts.client import DetectionClient, Endpoints, TokenStore

    endpoints = Endpoints.default()
    if args.url:
        endpoints = replace(endpoints, inference=args.url)
    client = DetectionClient(endpoints, TokenStore(args.key_file, endpoints), timeout=120)
    return served_runner(client, args.model, args.version, options)


def _table(rows: dict[str, dict[str, Any]], out: IO[str]) -> None:
    labels = [label for label, _, _ in BUCKETS if label != "all"]
    head = ["run", "group", "AP50", "AP50:95", *(f"AP50 {b}" for b in labels), "recall", "fp/img", "img/s"]
    out.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for name, figures in rows.items():
        for group, report in figures["groups"].items():
            b = report.buckets
            cells = [
                name,
                group,
                _f(b["all"].ap50),
                _f(b["all"].ap50_95),
                *(_f(b[x].ap50) for x in labels),
                _f(b["all"].recall),
                _f(b["all"].fp_per_image, 2),
                _f(figures["images_per_s"][group], 1),
            ]
            out.write("| " + " | ".join(cells) + " |\n")


def _f(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _write_json(path: Path | None, rows: dict[str, dict[str, Any]], eval_set: EvalSet) -> None:
    if path is None:
        return
    payload = {
        "set": str(eval_set.folder),
        "runs": {
            name: {
                "images_per_s": f["images_per_s"],
                "groups": {g: r.to_json() for g, r in f["groups"].items()},
            }
            for name, f in rows.items()
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "build":
        folder = args.out or REPO / "build" / "eval" / f"faces-{args.slice}"
        coco = build(folder, SLICES[args.slice], args.seed)
        out.write(f"{folder}: {len(coco['images'])} images, {len(coco['annotations'])} faces\n")
        return 0
    try:
        eval_set = EvalSet.load(args.eval_set)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    rows: dict[str, dict[str, Any]] = {}
    if args.command == "score":
        options = _options(args.set_option, args.small_faces)
        if args.reference:
            rows["reference"] = evaluate(eval_set, reference_runner(), args.score)
        elif args.served:
            rows["served"] = evaluate(eval_set, _served(args, options), args.score)
        else:
            rows.update(_archive_rows(args, eval_set, {args.archive.name: options}))
    else:
        rows.update(_sizes_rows(args, eval_set))
    _table(rows, out)
    _write_json(args.json, rows, eval_set)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(
            f"--sizes takes whole numbers separated by commas, e.g. 640,1280; got {text!r}"
        ) from None


def _sizes_rows(args: argparse.Namespace, eval_set: EvalSet) -> dict[str, dict[str, Any]]:
    """Accuracy of the reference and of each size over the whole set; images/s from ``speed`` on
    one composite frame per frame size (the fastest of --repeats calls, taken round-robin)."""
    from scripts.inprocess import ArchivedModel

    runs = {f"inference_size={s}": {"inference_size": s} for s in _sizes(args.sizes)}
    if args.small_faces:
        runs["small_faces"] = {"small_faces": "true"}
    frames = {}
    for image in eval_set.coco["images"]:
        group = f"{image['width']}x{image['height']}"
        if image.get("kind") == "composite" and group not in frames:
            frames[group] = (eval_set.folder / "images" / image["file_name"]).read_bytes()
    with ArchivedModel(args.archive, args.device) as model:
        detects = {"reference (original size)": reference_runner()}
        detects |= {name: archive_runner(model, options) for name, options in runs.items()}
        rows = {name: evaluate(eval_set, detect, args.score) for name, detect in detects.items()}
        rates = speed(detects, frames, args.repeats)
    for name, row in rows.items():
        row["images_per_s"] = {g: rates[name].get(g, math.nan) for g in row["groups"]}
    return rows


def _archive_rows(
    args: argparse.Namespace, eval_set: EvalSet, runs: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    from scripts.inprocess import ArchivedModel

    with ArchivedModel(args.archive, args.device) as model:
        return {
            name: evaluate(eval_set, archive_runner(model, options), args.score)
            for name, options in runs.items()
        }
