"""Throughput / latency benchmark of the served model against its ceiling and its alternatives.

Targets, all on the same JPEG and the same pipeline code (decode + preprocess + model + postprocess):
  torchserve  this deployment: a fresh TorchServe on free ports from config.properties
  inprocess   the pipeline called directly, no server: the ceiling on this machine
  single      one image at a time in one process with the worker's thread budget: the c=1 floor
  flask       the simplest alternative: Flask, one request at a time
  litserve    LitServe with the same batch size and batch delay
Each server target gets a closed-loop sweep (concurrency 1, 2, 4, 8, 16, 32 by default) with
warm-up; the TorchServe steps also carry the server's own view of the same window (queue time,
inference latency, average batch size), and every step the load generator's own CPU (it shares the
cores). Output: a table, ratios, the goals met / not met (scripts/bench/goals.py), and JSON (--out).
``--set KEY=VALUE`` rebuilds the archive with model-config keys changed, and ``--property KEY=VALUE``
starts TorchServe with a config.properties key changed, to measure a setting.

Usage: python -m scripts.bench [--targets torchserve,inprocess,single,flask,litserve] [--duration 10]
       [--concurrency 1,2,4,8,16,32] [--set batchSize=1] [--out benchmarks/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from scripts.bench.ceiling import archive_workers, bench_inprocess
from scripts.bench.goals import evaluate, format_goals, parse_properties, parse_settings, variant_archive
from scripts.bench.report import summarize, write_report
from scripts.bench.served import bench_subprocess_server, bench_torchserve
from scripts.paths import REPO
from scripts.samples import sample_jpeg

__all__ = ["DEFAULT_ARCHIVE", "main"]

DEFAULT_ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--image", type=Path, help="JPEG to send (default: 640x480 astronaut)")
    parser.add_argument("--targets", default="torchserve,inprocess,single,flask,litserve")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="model-config.yaml override for this run, repeatable: batchSize=1, handler.torch_threads=1",
    )  # fmt: skip
    parser.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE",
        help="config.properties override for the torchserve target, repeatable: async_logging=true",
    )  # fmt: skip
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per step")
    parser.add_argument(
        "--server-warmup", type=float, default=30.0,
        help="seconds of unmeasured load on each server before its first step (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--server-warmup-max", type=float, default=180.0,
        help="TorchServe's warm-up goes on past --server-warmup until its JVM's JIT compiler is quiet, "
        "at most this long in all (default 180; not above --server-warmup: no wait)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)

    body = args.image.read_bytes() if args.image else sample_jpeg()
    levels = [int(c) for c in args.concurrency.split(",")]
    targets = args.targets.split(",")
    steps: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        run_dir = Path(tmp)
        overrides = parse_settings(args.set)
        properties = parse_properties(args.property)
        # --set: the same archive with model-config keys changed (batchSize, maxBatchDelay, ...).
        archive = variant_archive(overrides, run_dir / "variant") if overrides else args.archive
        for target in targets:
            print(f"--- {target}", flush=True)
            if target == "torchserve":
                steps += bench_torchserve(
                    archive, body, levels, args.duration, args.warmup, run_dir / "ts",
                    properties=properties, server_warmup=args.server_warmup,
                    server_warmup_max=args.server_warmup_max,
                )  # fmt: skip
            elif target == "inprocess":
                steps += bench_inprocess(archive, body, args.duration, args.warmup)
            elif target == "single":  # one image at a time, one process: what c=1 could be
                steps += bench_inprocess(archive, body, args.duration, args.warmup, (1,), 1, "single")
            elif target in ("flask", "litserve"):
                module = f"scripts.bench.baselines.{target}_app"
                steps += bench_subprocess_server(
                    target, module, archive, body, levels, args.duration, args.warmup, run_dir,
                    server_warmup=args.server_warmup,
                )  # fmt: skip
            else:
                sys.exit(
                    f"unknown target {target}; choose from torchserve, inprocess, single, flask, litserve"
                )

    report = {
        "model": "face_detector",
        "version": "2.0",
        "image_bytes": len(body),
        "workers": archive_workers(args.archive),  # per server, as started: scripts.bench.capacity's default
        "settings": overrides,
        "properties": properties,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cuda": torch.cuda.is_available(),
        },  # fmt: skip
        "duration_s": args.duration,
        "server_warmup_s": args.server_warmup,
        "server_warmup_max_s": args.server_warmup_max,
        "steps": steps,
        "summary": summarize(steps),
        "goals": evaluate(steps),
    }
    print(json.dumps(report["summary"], indent=2))
    print(format_goals(report["goals"]))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
