"""Build the model archives (.mar) into model_store/ with torch-model-archiver.

Each archive holds: the handler entry file, the ``handlers`` package (the shared pipeline code),
the weights as a state_dict, and its model-config.yaml. Archive files are named ``<name>-<version>.mar``
so that several versions of one model can sit side by side in the store.

Before anything is packed, the config's ``handler:`` section is checked against the typed config of
the entry's handler class (handlers/config.py), exactly as a worker checks it at start: a typo or a
wrong type fails the build with the fix in the message instead of failing every worker later.

Usage: python -m scripts.packaging.build_archives [--store model_store] [--only face_detector-2.0]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import yaml

from scripts.paths import REPO

if TYPE_CHECKING:
    from handlers.config import HandlerConfig

__all__ = [
    "ARCHIVES",
    "BUILD",
    "ArchiveSpec",
    "BuildError",
    "build",
    "build_stale",
    "check_config",
    "handler_config_type",
    "is_stale",
]

BUILD = REPO / "build"


class BuildError(Exception):
    """The archive cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class ArchiveSpec:
    name: str
    version: str
    handler: Path  # entry file with exactly one handler class
    weights: Path  # state_dict produced by a converter script
    config: Path  # model-config.yaml
    description: str
    extras: tuple[Path, ...] = ()  # more files for the archive root (e.g. an exported ONNX graph)

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.mar"


ARCHIVES = {
    "face_detector-2.0": ArchiveSpec(
        name="face_detector",
        version="2.0",
        handler=REPO / "handlers/face_handler.py",
        weights=BUILD / "retinaface_mobile0.25.pt",
        config=REPO / "model_configs/face_detector-2.0.yaml",
        description="RetinaFace mobile0.25 face detector with 5 landmarks",
        extras=(BUILD / "retinaface_mobile0.25.onnx",),
    ),
    "face_detector-1.0": ArchiveSpec(
        name="face_detector",
        version="1.0",
        handler=REPO / "handlers/mtcnn_handler.py",
        weights=BUILD / "mtcnn.pt",
        config=REPO / "model_configs/face_detector-1.0.yaml",
        description="MTCNN (P-Net, R-Net, O-Net) face detector with 5 landmarks",
    ),
}


def ensure_weights(spec: ArchiveSpec) -> None:
    if spec.weights.exists():
        return
    if spec.weights.name == "retinaface_mobile0.25.pt":
        import torch

        from scripts.packaging.convert_retinaface import convert, find_onnx_bytes

        spec.weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(convert(find_onnx_bytes()), spec.weights)
        print(f"converted RetinaFace weights -> {spec.weights.relative_to(REPO)}")
        return
    if spec.weights.name == "mtcnn.pt":
        import torch

        from scripts.packaging.convert_mtcnn import convert, find_weight_files

        spec.weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(convert(find_weight_files()), spec.weights)
        print(f"collected MTCNN weights -> {spec.weights.relative_to(REPO)}")
        return
    sys.exit(f"weights for {spec.name} {spec.version} not found at {spec.weights}")


def ensure_extras(spec: ArchiveSpec) -> None:
    for extra in spec.extras:
        sources = (spec.weights, REPO / "handlers/retinaface.py")
        if extra.name == "retinaface_mobile0.25.onnx" and (
            not extra.exists() or extra.stat().st_mtime < max(p.stat().st_mtime for p in sources)
        ):
            from scripts.packaging.export_retinaface_onnx import export

            extra.write_bytes(export(spec.weights))
            print(f"exported {extra.relative_to(REPO)}")
        if not extra.exists():
            sys.exit(f"{extra} is missing for {spec.name} {spec.version}")


def stage_package(stage: Path) -> None:
    """Copy the ``handlers`` package (python files only) where the archiver will pick it up."""
    target = stage / "handlers"
    target.mkdir(parents=True)
    for source in (REPO / "handlers").glob("*.py"):
        shutil.copy2(source, target / source.name)


def _import_entry(entry: Path) -> ModuleType:
    """The handler entry file as a module: by its package name when it lies in the repository (so
    its classes are the ones the rest of this process sees), else straight from the file."""
    entry = entry.resolve()
    if entry.is_relative_to(REPO):
        return importlib.import_module(".".join(entry.relative_to(REPO).with_suffix("").parts))
    module_spec = importlib.util.spec_from_file_location(f"_entry_{entry.stem}", entry)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def handler_config_type(entry: Path) -> type[HandlerConfig] | None:
    """The typed ``handler:`` config (handlers/config.py) of the handler class that ``entry``
    defines, found as TorchServe finds it (a class defined in the file); None for a handler that is
    no ``DetectionHandler``, whose section this build cannot know."""
    from handlers.ts_adapter import DetectionHandler

    module = _import_entry(entry)
    for value in vars(module).values():
        defined_here = inspect.isclass(value) and value.__module__ == module.__name__
        if defined_here and issubclass(value, DetectionHandler):
            return value.config_type
    return None


def check_config(spec: ArchiveSpec) -> None:
    """What a worker checks at start, checked now: BuildError names every problem of the section."""
    from handlers.config import ConfigError

    try:
        document = yaml.safe_load(spec.config.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise BuildError(f"cannot read {spec.config}: {err}") from None
    if not isinstance(document, dict):
        raise BuildError(f"{spec.config} must be a YAML mapping (minWorkers: ..., handler: ...)")
    config_type = handler_config_type(spec.handler)
    if config_type is None:
        return
    try:
        config_type.from_section(document.get("handler"))
    except ConfigError as err:
        raise BuildError(f"{spec.config}: {err}") from None


def build(spec: ArchiveSpec, store: Path) -> Path:
    check_config(spec)  # before any weights are converted or files packed
    ensure_weights(spec)
    ensure_extras(spec)
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mar-") as tmp:
        stage, out = Path(tmp) / "stage", Path(tmp) / "out"
        stage_package(stage)
        for extra in spec.extras:
            shutil.copy2(extra, stage / extra.name)
        out.mkdir()
        cmd = [
            "torch-model-archiver",
            "--model-name", spec.name,
            "--version", spec.version,
            "--handler", str(spec.handler),
            "--serialized-file", str(spec.weights),
            "--extra-files", str(stage),
            "--config-file", str(spec.config),
            "--export-path", str(out),
            "--archive-format", "default",
            "--force",
        ]  # fmt: skip
        bin_dir = Path(sys.executable).parent
        subprocess.run(cmd, check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        target = store / spec.filename
        shutil.move(out / f"{spec.name}.mar", target)
    print(
        f"built {target.relative_to(REPO) if target.is_relative_to(REPO) else target} "
        f"({target.stat().st_size / 1e6:.2f} MB)"
    )
    return target


def is_stale(spec: ArchiveSpec, store: Path) -> bool:
    """True when the archive is missing or older than anything it packs."""
    target = store / spec.filename
    if not target.exists() or not spec.weights.exists() or not all(e.exists() for e in spec.extras):
        return True
    inputs = [spec.handler, spec.config, spec.weights, *spec.extras, *(REPO / "handlers").glob("*.py")]
    return max(p.stat().st_mtime for p in inputs) > target.stat().st_mtime


def build_stale(store: Path, only: list[str] | None = None, force: bool = False) -> list[Path]:
    """Build the default archives that are missing or out of date; return the paths built."""
    return [
        build(ARCHIVES[key], store)
        for key in only or sorted(ARCHIVES)
        if force or is_stale(ARCHIVES[key], store)
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.build_archives",
        description="Build model archives into the model store.",
    )
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--only", choices=sorted(ARCHIVES), action="append", help="archive(s) to build")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        built = build_stale(args.store, args.only, args.force)
    except BuildError as err:
        sys.exit(f"error: {err}")
    if not built:
        print(f"archives in {args.store} are up to date")


if __name__ == "__main__":
    main()
