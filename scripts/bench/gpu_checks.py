"""Correctness checks of the device path, for scripts/bench/gpu_check.sh: JSON out, no TorchServe.

precision   RetinaFace fp16 vs fp32 on the same device and decode path, real images at several
            sizes: largest box-corner and landmark difference in pixels (goal: within 1 px).
            fp16 is CUDA only: on CPU the check is reported as skipped.
jpegs       the device JPEG decoder (nvJPEG on CUDA, libjpeg on CPU) against PIL on unusual files
            (CMYK, grey, progressive, 4:4:4 / 4:2:2 subsampling, restart markers, EXIF rotation,
            odd and tiny sizes, truncated): per file, decoded or refused, mean pixel difference, and
            what the served pipeline answers for it on the tensor path (refused files fall back to PIL).
summary     the goals of docs/benchmarks.md from the JSON files of one run, each met / not met, and
            the correctness checks (exit status 1 when one fails).

Usage: python -m scripts.bench.gpu_checks precision|jpegs [--device cuda] --out f.json
       python -m scripts.bench.gpu_checks summary --dir OUT
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from handlers.errors import InputError
from handlers.image_decode import decode_image
from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import RetinaFaceDetector
from handlers.tensor_decode import decode_jpegs
from scripts.packaging.build_archives import ARCHIVES
from scripts.samples import astronaut, camera, encode, grace_hopper

__all__ = ["GOALS", "jpeg_cases", "main", "precision", "jpegs", "summary"]

WEIGHTS = ARCHIVES["face_detector-2.0"].weights
# Goals on one H200, 640x480 JPEG (issue: GPU path). name -> (file, how to read it, comparison, bound)
GOALS = {
    "served_img_s": ("gpu_served.json", "best served img/s", ">=", 4000.0),
    "inprocess_img_s": ("gpu_inprocess.json", "best in-process img/s", ">=", 8000.0),
    "fp16_box_px": ("precision.json", "largest fp16-fp32 box difference, px", "<=", 1.0),
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def jpeg_cases() -> dict[str, bytes]:
    """Unusual but valid JPEGs (and one damaged one), all of the astronaut or grace hopper."""
    face = astronaut()
    pil = Image.fromarray(face)
    buffer = io.BytesIO()
    pil.convert("CMYK").save(buffer, "JPEG", quality=90)
    cases = {
        "baseline_420": encode(face),
        "subsampling_444": encode(face, subsampling=0),
        "subsampling_422": encode(face, subsampling=1),
        "grey": encode(np.asarray(pil.convert("L"))),
        "cmyk": buffer.getvalue(),
        "progressive": encode(face, progressive=True),
        "optimized_huffman": encode(face, optimize=True),
        "restart_markers": bytes(
            cv2.imencode(".jpg", face[..., ::-1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 4])[1]
        ),
        "exif_rotate_90": encode(np.rot90(face).copy(), exif=_exif(6)),
        "odd_size_641x479": encode(cv2.resize(face, (641, 479))),
        "tiny_1x1": encode(face[:1, :1]),
        "quality_5": encode(face, quality=5),
        "grace_hopper": encode(grace_hopper()),
        "truncated": encode(face)[:6000],
    }
    return cases


def jpegs(device: str) -> dict:
    detector = RetinaFaceDetector(WEIGHTS, device, fp16=device.startswith("cuda"))
    tensor_path = DetectionPipeline(detector, "face_detector", "2.0", tensor_decode_device=device)
    rows = []
    for name, body in jpeg_cases().items():
        row: dict = {"case": name}
        (decoded,) = decode_jpegs([body], device, [1 if name != "exif_rotate_90" else 6])
        try:
            reference = decode_image(body)
        except InputError as err:
            reference, row["pil"] = None, f"refused: {err.status}"
        row["device_decoder"] = "refused" if decoded is None else "decoded"
        if decoded is not None and reference is not None:
            same_shape = tuple(decoded.shape) == (3, *reference.shape[:2])
            row["same_shape"] = same_shape
            if same_shape:
                diff = np.abs(decoded.permute(1, 2, 0).cpu().numpy().astype(int) - reference.astype(int))
                row["mean_abs_diff"] = round(float(diff.mean()), 3)
                row["max_abs_diff"] = int(diff.max())
        outcome = tensor_path.process([{"body": body}])[0]
        row["served"] = outcome.status if isinstance(outcome, InputError) else 200
        row["faces"] = 0 if isinstance(outcome, InputError) else len(outcome.detections)
        # Agreement: decoded like PIL (same size, pixels close), or refused and served from PIL;
        # a file PIL refuses must be a 400 on the device path too.
        if reference is None:
            row["ok"] = row["served"] == 400
        else:
            close = row.get("same_shape", False) and row.get("mean_abs_diff", 99.0) < 3.0
            row["ok"] = row["served"] == 200 and (decoded is None or close)
        rows.append(row)
    return {"device": device, "cases": rows, "all_ok": all(r["ok"] for r in rows)}


def _faces(result) -> list:
    return [d for d in result.detections if d.score >= 0.5]


def precision(device: str) -> dict:
    if not device.startswith("cuda"):
        return {"device": device, "skipped": "fp16 is CUDA only (RetinaFaceDetector keeps fp32 on CPU)"}
    fp32 = DetectionPipeline(
        RetinaFaceDetector(WEIGHTS, device, fp16=False), "f", "2", tensor_decode_device=device
    )
    fp16 = DetectionPipeline(
        RetinaFaceDetector(WEIGHTS, device, fp16=True), "f", "2", tensor_decode_device=device
    )
    images = {"astronaut": astronaut(), "grace_hopper": grace_hopper(), "camera": camera()}
    rows, worst = [], 0.0
    for name, image in images.items():
        for width in (640, 1280, 1920):
            height = round(image.shape[0] * width / image.shape[1])
            body = encode(cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC))
            a, b = _faces(fp32.detect_bytes(body)), _faces(fp16.detect_bytes(body))
            box = max((float(np.abs(np.subtract(x.box, y.box)).max()) for x, y in zip(a, b)), default=0.0)
            points = max(
                (float(np.abs(np.subtract(x.landmarks, y.landmarks)).max()) for x, y in zip(a, b)),
                default=0.0,
            )
            score = max((abs(x.score - y.score) for x, y in zip(a, b)), default=0.0)
            counts = {"faces_fp32": len(a), "faces_fp16": len(b)}
            differences = {"box_px": round(box, 3), "landmark_px": round(points, 3), "score": round(score, 4)}
            rows.append({"image": f"{name}@{width}", **counts, **differences})
            worst = max(worst, box) if len(a) == len(b) else float("inf")
    return {"device": device, "rows": rows, "max_box_px": worst}


def _best(report: dict, key: str) -> float | None:
    return max((row[key] for row in report.get("rows", []) if row.get(key) is not None), default=None)


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def summary(folder: Path, cuda: bool) -> dict:
    """Performance goals met / not met (a missing file: 'not measured') and correctness checks,
    which decide the exit status: decoder agreement, fp16 agreement, workers on the expected device."""
    goals = {}
    for goal, (name, label, op, bound) in GOALS.items():
        report, value = _load(folder, name), None
        if report is not None and goal == "fp16_box_px":
            value = report.get("max_box_px")
        elif report is not None and goal == "inprocess_img_s":
            value = _best(report, "images_per_s")
        elif report is not None:  # scripts.bench's report: one step per concurrency level
            value = max(
                (s["throughput_rps"] for s in report["steps"] if s["target"] == "torchserve"), default=None
            )
        state = (
            "not measured"
            if value is None
            else "met"
            if (value >= bound if op == ">=" else value <= bound)
            else "not met"
        )
        goals[goal] = {"label": label, "value": value, "goal": f"{op} {bound}", "state": state}
        print(f"{label:<45} {value!s:>10}  goal {op} {bound:<8} {state}")
    jpeg_report = _load(folder, "jpegs.json") or {}
    served = _load(folder, "gpu_served.json") or {"steps": []}
    devices = sorted({d for s in served["steps"] for d in s.get("server", {}).get("worker_devices", [])})
    expected = "cuda" if cuda else "cpu"
    checks = {
        "jpeg_decoder_agrees_with_pil": bool(jpeg_report.get("all_ok")),
        "served_workers_on_" + expected: bool(devices) and all(d.startswith(expected) for d in devices),
    }
    if cuda:
        checks["fp16_boxes_within_1px"] = goals["fp16_box_px"]["state"] == "met"
    for name, ok in checks.items():
        print(f"{name:<45} {'pass' if ok else 'FAIL'}")
    return {
        "cuda": cuda,
        "goals": goals,
        "checks": checks,
        "worker_devices": devices,
        "passed": all(checks.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench.gpu_checks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("check", choices=["precision", "jpegs", "summary"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--dir", type=Path, help="summary: the folder holding the run's JSON files")
    parser.add_argument("--cuda", type=int, choices=[0, 1], default=int(torch.cuda.is_available()))
    args = parser.parse_args(argv)
    if args.check == "summary":
        report = summary(args.dir, bool(args.cuda))
    else:
        report = precision(args.device) if args.check == "precision" else jpegs(args.device)
        print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.check == "summary" and not report["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
