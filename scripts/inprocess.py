"""Run a model archive (.mar) in this process, the way a TorchServe worker runs it, without a server.

    with ArchivedModel("model_store/face_detector-2.0.mar") as model:
        outcomes = model.process([{"body": jpeg_bytes}, ...])   # DetectionResult | InputError each

Opening an archive: unzip it into a temporary folder, read ``MAR-INF/MANIFEST.json`` and the
model-config.yaml it names, then load it with TorchServe's own model loader (``ts.model_loader``):
the handler entry is imported from the archive, its single handler class instantiated and
``initialize(context)`` called with a real ``ts.context.Context`` (model_dir, gpu_id, batch_size,
model_yaml_config, manifest, metrics). So the :class:`~handlers.pipeline.DetectionPipeline` that
answers here is built by the same code, from the same files and settings, as in a server worker.

The archive carries its own copy of the ``handlers`` package. It is imported in isolation: while
the archive loads, its top-level modules take precedence over same-named ones already imported from
the repository, which are put back afterwards. Outcomes are handed back as this process's own
:class:`~handlers.schema.DetectionResult` / :class:`~handlers.errors.InputError`, converted through
the wire format (``to_json``), i.e. with exactly the rounding a server response has.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from handlers.errors import InputError
from handlers.schema import DetectionResult

__all__ = ["MANIFEST", "ArchiveError", "ArchivedModel", "gpu_for", "read_manifest", "read_model_config"]

log = logging.getLogger(__name__)

MANIFEST = "MAR-INF/MANIFEST.json"


class ArchiveError(ValueError):
    """The file is not a usable model archive; the message says what is wrong."""


def gpu_for(device: str) -> int | None:
    """``auto`` (a GPU when CUDA works), ``cpu``, ``cuda`` or ``cuda:N`` -> TorchServe's gpu_id."""
    import torch

    device = device.strip().lower()
    if device == "cpu":
        return None
    if device == "auto":
        return 0 if torch.cuda.is_available() else None
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but CUDA is not available; use --device cpu")
        return int(device.partition(":")[2] or 0)
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def read_manifest(model_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((model_dir / MANIFEST).read_text())
        model = manifest["model"]
        model["modelName"], model["handler"]  # noqa: B018 - presence check
    except FileNotFoundError:
        raise ArchiveError(f"no {MANIFEST} in the archive: build it with torch-model-archiver") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ArchiveError(f"{MANIFEST} lacks model.modelName / model.handler ({err})") from None
    return manifest


def read_model_config(model_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The archive's model-config.yaml as a dict ({} when the archive has none)."""
    name = manifest["model"].get("configFile")
    if not name:
        return {}
    try:
        return yaml.safe_load((model_dir / name).read_text()) or {}
    except FileNotFoundError:
        raise ArchiveError(f"the manifest names config file {name!r} but the archive lacks it") from None


def _top_level_modules(model_dir: Path) -> set[str]:
    """Names the archive can be imported by: its top-level .py files and packages."""
    names = {p.stem for p in model_dir.glob("*.py")}
    names |= {p.parent.name for p in model_dir.glob("*/__init__.py")}
    names |= {p.name for p in model_dir.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    return names - {"MAR-INF"}


def _owned(name: str, tops: set[str]) -> bool:
    return name.split(".", 1)[0] in tops


@contextmanager
def _archive_imports(model_dir: Path) -> Iterator[dict[str, ModuleType]]:
    """Import from ``model_dir`` first; yields the archive's modules, restores sys.modules after."""
    tops = _top_level_modules(model_dir)
    saved = {name: module for name, module in sys.modules.items() if _owned(name, tops)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(model_dir))
    importlib.invalidate_caches()
    loaded: dict[str, ModuleType] = {}
    try:
        yield loaded
    finally:
        sys.path.remove(str(model_dir))
        for name in [n for n in sys.modules if _owned(n, tops)]:
            loaded[name] = sys.modules.pop(name)
        sys.modules.update(saved)


class ArchivedModel:
    """A .mar loaded in-process; ``process`` is the handler's DetectionPipeline.process."""

    def __init__(self, archive: Path | str, device: str = "auto") -> None:
        self.archive = Path(archive)
        if not self.archive.is_file():
            raise ArchiveError(f"archive {self.archive} not found: build it with `make build`")
        if not zipfile.is_zipfile(self.archive):
            raise ArchiveError(f"{self.archive} is not a model archive (.mar files are zip files)")
        gpu_id = gpu_for(device)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{self.archive.stem}-")
        try:
            self.model_dir = Path(self._tmp.name)
            with zipfile.ZipFile(self.archive) as archive:
                archive.extractall(self.model_dir)  # member names with .. or / are sanitised
            self.manifest = read_manifest(self.model_dir)
            self.config = read_model_config(self.model_dir, self.manifest)
            self.batch_size = int(self.config.get("batchSize", 1))
            self._load(gpu_id)
        except BaseException:
            self._tmp.cleanup()
            raise

    def _load(self, gpu_id: int | None) -> None:
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
        from ts.model_loader import TsModelLoader

        model = self.manifest["model"]
        # What a worker gets: the default metrics spec, so handler metrics calls work here too.
        metrics = MetricsCacheYamlImpl(str(Path(sys.modules["ts"].__file__).parent / "configs/metrics.yaml"))
        metrics.initialize_cache()
        metrics.model_name = model["modelName"]
        with _archive_imports(self.model_dir) as modules:
            service = TsModelLoader().load(
                model["modelName"],
                str(self.model_dir),
                model["handler"],
                gpu_id,
                self.batch_size,
                None,
                True,
                metrics,
            )
        self.modules = modules
        self.context = service.context
        self.handler = getattr(service._entry_point, "__self__", None)
        self.pipeline = getattr(self.handler, "pipeline", None)
        if self.pipeline is None:
            raise ArchiveError(
                f"handler {model['handler']!r} of {self.archive.name} builds no DetectionPipeline: "
                "in-process scoring needs a handlers.ts_adapter.DetectionHandler subclass"
            )
        self.name, self.version = self.pipeline.model_name, self.pipeline.version
        errors = modules.get("handlers.errors")
        self._input_error = errors.InputError if errors is not None else InputError
        log.info("loaded %s %s in-process from %s", self.name, self.version, self.archive)

    def process(self, requests: list[dict[str, Any]]) -> list[DetectionResult | InputError]:
        """One outcome per request (``{"body": bytes}``, plus setting overrides), same order."""
        return [self._convert(outcome) for outcome in self.pipeline.process(requests)]

    def detect_bytes(self, data: bytes, **overrides: Any) -> DetectionResult:
        """The archive pipeline's ``detect_bytes``, its result or InputError in this process's types."""
        try:
            outcome = self.pipeline.detect_bytes(data, **overrides)
        except self._input_error as err:
            raise self._convert(err) from None
        return self._convert(outcome)

    def _convert(self, outcome: Any) -> DetectionResult | InputError:
        if isinstance(outcome, (self._input_error, InputError)):
            return InputError(outcome.message, outcome.status, outcome.reason)
        return DetectionResult.from_json(outcome.to_json())

    def close(self) -> None:
        self.pipeline = None
        self.handler = None
        self._tmp.cleanup()

    def __enter__(self) -> ArchivedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
