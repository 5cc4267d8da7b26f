"""Build the reference profile scripts/drift/cli.py compares live traffic with (a small JSON of histograms).

From a folder of reference images, run in this process through the model archive (the same code a
worker runs, no server needed):

    python -m scripts.drift.profile images ref_images/ --archive model_store/face_detector-2.0.mar \\
        --out monitoring/reference_profile.json --force

From the feature log of a server over a period known to be good (what production usually does):

    python -m scripts.drift.profile log logs/features --model face_detector --version 2.0 \\
        --since 2026-11-20 --until 2026-11-26 --out monitoring/reference_profile.json --force

--out replaces an existing profile only with --force: the default is the tracked reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from handlers.features import input_features
from handlers.image_decode import DecodeLimits, decode_probed, probe_image
from handlers.schema import DetectionResult
from scripts.cli import MOMENT_HELP, UsageError, moment_type, prog, run_main
from scripts.drift.cli import DEFAULT_PROFILE, read_records
from scripts.drift.stats import Profile, samples_from_records
from scripts.paths import REPO
from scripts.paths import iter_images as image_files  # recursive, sorted

__all__ = ["DEFAULT_ARCHIVE", "build", "build_parser", "image_files", "main", "records_from_images"]

DEFAULT_ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"


def records_from_images(folder: Path, archive: Path, device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Feature records as the handler would log them, for every readable image of ``folder``."""
    from handlers.metrics import feature_record
    from scripts.inprocess import ArchivedModel

    with ArchivedModel(archive, device=device) as model:
        for path in image_files(folder):
            data = path.read_bytes()
            try:
                result: DetectionResult = model.detect_bytes(data)
            except Exception as err:  # noqa: BLE001 - a bad reference file is skipped, not fatal
                print(f"skipped {path}: {err}", file=sys.stderr)
                continue
            # The same decode and statistics as the worker (handlers/pipeline.py's features hook).
            result.features = input_features(decode_probed(probe_image(data, DecodeLimits())))
            yield feature_record(result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("scripts.drift.profile"), description="Build a reference profile for scripts.drift.",
        epilog='exit codes: README.md, "Exit codes"',
    )  # fmt: skip
    parser.add_argument("source", choices=["images", "log"], help="a folder of images, or a feature log")
    parser.add_argument("path", type=Path, help="images: a folder of images; log: the feature log folder")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_PROFILE,
        help="profile to write (default: monitoring/reference_profile.json); an existing file needs --force",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace --out when it exists")
    parser.add_argument(
        "--archive", type=Path, default=DEFAULT_ARCHIVE,
        help="images: the model archive (default: model_store/face_detector-2.0.mar)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="images: cpu (default), cuda or auto")
    parser.add_argument("--model", help="log: model name (default: every model in the log)")
    parser.add_argument("--version", help="log: model version (default: every version)")
    parser.add_argument(
        "--since", type=moment_type(end=False), default=0.0, help=f"log: start, {MOMENT_HELP} (default: all)"
    )
    parser.add_argument("--until", type=moment_type(end=True), help="log: end, same forms (default: now)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: build(args), parser.prog)


def build(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.force:  # checked first: building can take minutes
        raise UsageError(
            f"{args.out} exists (the reference drift is measured against): pass --force to replace "
            "it, or --out another file"
        )
    if args.source == "images":
        if not args.path.is_dir():
            raise UsageError(f"{args.path} is not a folder of images")
        records = list(records_from_images(args.path, args.archive, args.device))
        source = f"images {args.path}"
    else:
        until = args.until or time.time()
        records = list(read_records(args.path, args.since, until, args.model, args.version))
        source = f"feature log {args.path} [{args.since:.0f}, {until:.0f})"
    if not records:
        raise UsageError(f"no reference records found in {args.path}")
    pairs = {(r["model"], r["version"]) for r in records}
    if len(pairs) > 1:
        raise UsageError(
            f"records of several models/versions {sorted(pairs)}: pick one with --model/--version"
        )
    model, version = pairs.pop()
    samples, images = samples_from_records(records)
    profile = Profile.from_samples(model, version, samples, images, source)
    profile.save(args.out)
    print(f"profile of {model} {version} from {images} images -> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
