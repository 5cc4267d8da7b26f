"""Measure the tuning choices of face_detector 2.0 on this machine, each as a ratio to a baseline
measured in the same run (these machines are noisy; absolute figures drift between runs).

  decode     PIL (the default: header checks first) vs OpenCV vs torchvision.io, 640x480 JPEG
  forward    eager fp32 vs channels_last vs TorchScript (frozen) vs torch.compile vs onnxruntime,
             under torch.inference_mode, batch 1 and 8
  serving    TorchServe workers x threads per worker at concurrency 8 and 16 (--serving)

Usage: python -m scripts.bench.tune [--seconds 3] [--serving] [--out benchmarks/tuning.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from handlers.retinaface_detector import RetinaFaceDetector
from handlers.settings import DetectorSettings
from scripts.bench.cli import DEFAULT_ARCHIVE
from scripts.bench.report import write_report
from scripts.bench.served import bench_torchserve
from scripts.packaging.build_archives import ARCHIVES
from scripts.samples import sample_jpeg

__all__ = ["WEIGHTS", "as_ratios", "decode_paths", "forward_variants", "main", "rate", "serving_grid"]

WEIGHTS = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` after a short warm-up."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def decode_paths(body: bytes, seconds: float) -> dict[str, float]:
    from torchvision.io import decode_jpeg

    encoded = torch.frombuffer(bytearray(body), dtype=torch.uint8)
    return {
        "pil": rate(lambda: np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), seconds),
        "opencv": rate(lambda: cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), seconds),
        "torchvision_io": rate(lambda: decode_jpeg(encoded), seconds),
    }


def forward_variants(body: bytes, seconds: float, batch: int) -> dict[str, float]:
    """Images per second of the network alone for each backend, same input."""
    detector = RetinaFaceDetector(WEIGHTS)
    image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    x = torch.stack([detector.preprocess(image, DetectorSettings()).tensor] * batch)  # (B, 3, 480, 640)
    model = detector.model
    results: dict[str, float] = {}
    with torch.inference_mode():
        results["eager"] = rate(lambda: model(x), seconds) * batch
        model_cl = RetinaFaceDetector(WEIGHTS, channels_last=True).model
        x_cl = x.contiguous(memory_format=torch.channels_last)
        results["channels_last"] = rate(lambda: model_cl(x_cl), seconds) * batch
    with torch.no_grad():
        scripted = torch.jit.freeze(torch.jit.trace(model, x))
        results["torchscript_frozen"] = rate(lambda: scripted(x), seconds) * batch
    try:
        compiled = torch.compile(model, dynamic=False)
        with torch.inference_mode():
            results["torch_compile"] = rate(lambda: compiled(x), seconds) * batch
    except Exception as err:  # noqa: BLE001 - needs a C++ toolchain; report instead of failing
        print(f"torch.compile unavailable: {type(err).__name__}: {err}"[:200])
    try:
        import onnxruntime as ort

        from scripts.packaging.convert_retinaface import find_onnx_bytes

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(find_onnx_bytes(), options, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        results["onnxruntime"] = rate(lambda: session.run(None, feed), seconds) * batch
    except ImportError as err:
        print(f"onnxruntime unavailable: {err}")
    return results


def serving_grid(body: bytes, seconds: float) -> list[dict]:
    """TorchServe workers x torch threads per worker (OMP_NUM_THREADS reaches the workers)."""
    rows = []
    for workers, threads in ((1, 2), (1, 1), (2, 1)):
        os.environ["OMP_NUM_THREADS"] = str(threads)
        with tempfile.TemporaryDirectory(prefix="tune-") as tmp:
            steps = bench_torchserve(DEFAULT_ARCHIVE, body, [8, 16], seconds, 2.0, Path(tmp), workers=workers)
        for step in steps:
            rows.append({"workers": workers, "threads": threads, **step})
    os.environ.pop("OMP_NUM_THREADS", None)
    return rows


def as_ratios(values: dict[str, float], baseline: str) -> dict[str, dict[str, float]]:
    return {k: {"per_s": round(v, 1), "ratio": round(v / values[baseline], 2)} for k, v in values.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--serving", action="store_true", help="also sweep TorchServe workers x threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    body = sample_jpeg()
    report: dict = {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    report["decode"] = as_ratios(decode_paths(body, args.seconds), "pil")
    for batch in (1, 8):
        report[f"forward_batch{batch}"] = as_ratios(forward_variants(body, args.seconds, batch), "eager")
    if args.serving:
        report["serving"] = serving_grid(body, args.seconds * 3)
    print(json.dumps(report, indent=2))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
