"""In-process throughput of the face pipeline on a device, by batch size and decode path.

Needs only torch, torchvision, OpenCV and Pillow (no TorchServe, no Java), so it runs on a bare GPU
machine. For each batch size it times ``DetectionPipeline.process`` end to end (decode + preprocess
+ inference + postprocess) with (a) PIL decode on the host and (b) torchvision batch decode on the
device (nvJPEG on CUDA), in fp16 on CUDA.

Usage: python -m scripts.bench.gpu [--device cuda] [--batches 1,8,32,64,128] [--seconds 5] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import RetinaFaceDetector
from scripts.packaging.build_archives import ARCHIVES
from scripts.samples import sample_jpeg

__all__ = ["WEIGHTS", "main", "measure"]

WEIGHTS = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt


def measure(pipeline: DetectionPipeline, body: bytes, batch: int, seconds: float) -> dict:
    requests = [{"body": body}] * batch
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator, nvJPEG handles
        pipeline.process(requests)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        outcomes = pipeline.process(requests)
        calls += 1
    elapsed = time.perf_counter() - start
    assert all(o.detections for o in outcomes), "the benchmark image must yield a face"
    return {
        "batch": batch,
        "images_per_s": round(calls * batch / elapsed, 1),
        "ms_per_call": round(1000 * elapsed / calls, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    torch.backends.cudnn.benchmark = True
    body = sample_jpeg()
    fp16 = args.device.startswith("cuda")
    detector = RetinaFaceDetector(args.weights, args.device, fp16=fp16)
    paths = {
        "host_decode": DetectionPipeline(detector, "face_detector", "2.0"),
        "device_decode": DetectionPipeline(
            detector, "face_detector", "2.0", tensor_decode_device=args.device
        ),
    }
    rows = []
    for name, pipeline in paths.items():
        for batch in (int(b) for b in args.batches.split(",")):
            row = {"decode": name, **measure(pipeline, body, batch, args.seconds)}
            speed = f"{row['images_per_s']:>9.1f} img/s  {row['ms_per_call']:>8.2f} ms/call"
            print(f"{name:>14}  batch {row['batch']:>4}  {speed}")
            rows.append(row)
    report = {
        "device": torch.cuda.get_device_name(0) if fp16 else "cpu",
        "torch": torch.__version__,
        "fp16": fp16,
        "image": "640x480 JPEG",
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
