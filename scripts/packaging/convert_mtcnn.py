"""Collect the MTCNN weights shipped in ``facenet-pytorch`` into one state_dict for the archive.

The wheel carries ``facenet_pytorch/data/{pnet,rnet,onet}.pt``, one plain state_dict each
(``conv1.weight``, ``prelu1.weight``, ...). They are read without importing the package, prefixed
``pnet.`` / ``rnet.`` / ``onet.``, loaded strictly into :class:`handlers.mtcnn.MTCNN` (so a layout
mismatch fails here, not in a worker) and saved as plain tensors, which ``torch.load`` reads with
``weights_only=True``. Files in the old pickle format that the safe loader refuses are read once
with the full unpickler: they come from the pinned wheel, and only their tensors are kept.

Usage: python -m scripts.packaging.convert_mtcnn --out build/mtcnn.pt
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
from pathlib import Path

import torch

from handlers.mtcnn import MTCNN

__all__ = ["NETWORKS", "WHEEL_HINT", "convert", "find_weight_files", "main", "read_state_dict"]

WHEEL_HINT = "pip install --no-deps facenet-pytorch==2.5.3"
NETWORKS = ("pnet", "rnet", "onet")


def find_weight_files() -> dict[str, Path]:
    """{'pnet': .../pnet.pt, ...} from the installed facenet-pytorch wheel, without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"facenet-pytorch is not installed; run: {WHEEL_HINT}")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = {name: data / f"{name}.pt" for name in NETWORKS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}; reinstall with: {WHEEL_HINT}")
    return files


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):
        state = torch.load(path, map_location="cpu", weights_only=False)  # pinned wheel, build time only
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        sys.exit(f"{path} is not a plain state_dict (got {type(state).__name__})")
    return state


def convert(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    """The three networks' tensors under one prefix each, checked against handlers.mtcnn.MTCNN."""
    state = {
        f"{name}.{key}": tensor.detach().to(torch.float32).contiguous().clone()
        for name in NETWORKS
        for key, tensor in read_state_dict(files[name]).items()
    }
    MTCNN().load_state_dict(state, strict=True)
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.convert_mtcnn", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("build/mtcnn.pt"))
    args = parser.parse_args(argv)
    state = convert(find_weight_files())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, args.out)
    MTCNN().load_state_dict(torch.load(args.out, weights_only=True), strict=True)
    count = sum(t.numel() for t in state.values())
    print(f"wrote {args.out} ({len(state)} tensors, {count:,} parameters)")


if __name__ == "__main__":
    main()
