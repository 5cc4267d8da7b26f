"""Build the reference profile scripts/drift/cli.py compares live traffic with (a small JSON of histograms).

From a folder of reference images, run in this process through the model archive (the same code a
worker runs, no server needed):

    python -m scripts.drift.profile images ref_images/ --archive model_store/face_detector-2.0.mar \\
        --out monitoring/reference_profile.json

From the feature log of a server over a period known to be good (what production usually does):

    python -m scripts.drift.profile log logs/features --model face_detector --version 2.0 \\
        --since 1719800000 --until 1719886400 --out monitoring/reference_profile.json
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
from scripts.drift.cli import DEFAULT_PROFILE, read_records
from scripts.drift.stats import Profile, samples_from_records

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a reference profile for scripts.drift.cli.")
    parser.add_argument("source", choices=["images", "log"])
    parser.add_argument("path", type=Path, help="images: a folder of images; log: the feature log folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_PROFILE)
    parser.add_argument("--archive", type=Path, default=Path("model_store/face_detector-2.0.mar"))
    parser.add_argument("--device", default="cpu", help="images: cpu, cuda or auto")
    parser.add_argument("--model", help="log: model name (default: every model in the log)")
    parser.add_argument("--version", help="log: model version")
    parser.add_argument("--since", type=float, default=0.0, help="log: start, epoch seconds")
    parser.add_argument("--until", type=float, default=None, help="log: end, epoch seconds (default now)")
    args = parser.parse_args(argv)

    if args.source == "images":
        records = list(records_from_images(args.path, args.archive, args.device))
        source = f"images {args.path}"
    else:
        until = args.until or time.time()
        records = list(read_records(args.path, args.since, until, args.model, args.version))
        source = f"feature log {args.path} [{args.since:.0f}, {until:.0f})"
    if not records:
        sys.exit(f"no reference records found in {args.path}")
    pairs = {(r["model"], r["version"]) for r in records}
    if len(pairs) > 1:
        sys.exit(f"records of several models/versions {sorted(pairs)}: pick one with --model/--version")
    model, version = pairs.pop()
    samples, images = samples_from_records(records)
    profile = Profile.from_samples(model, version, samples, images, source)
    profile.save(args.out)
    print(f"profile of {model} {version} from {images} images -> {args.out}")


if __name__ == "__main__":
    main()
