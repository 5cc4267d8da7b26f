"""Model versions as an operator workflow: the admin client, the saved serving state, and the
comparison that gates a promotion. ``scripts/manage.py`` is the command line over this module and
``scripts/server.py`` re-applies the saved state after every start.

Saved state (``<run dir>/.run/served_state.json``, written after every change made through
manage.py and when ``make stop`` stops the server) per model name:
    default     the version /predictions/<model> serves
    history     earlier defaults, most recent last: what ``rollback`` goes back to
    workers     {version: {"min": n, "max": n}} as last scaled
    registered  {version: archive} added at run time on an admin instance (model API on)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scripts.client import ClientError, DetectionClient, ManagementClient, ModelNotReady, RequestRejected
from scripts.latency import summarize
from scripts.paths import IMAGE_SUFFIXES, iter_images

__all__ = [
    "MODEL_API_OFF",
    "STATE_FILE",
    "Comparison",
    "ImageAgreement",
    "ModelAdmin",
    "ModelState",
    "ServedState",
    "compare",
    "image_files",
    "latency_stats",
    "loaded_versions",
    "match_faces",
    "restore",
]

STATE_FILE = Path(".run") / "served_state.json"
MODEL_API_OFF = (
    "the model API is off on this instance (enable_model_api=false): register and unregister need an "
    "admin instance started with enable_model_api=true"
)


class ModelAdmin(ManagementClient):
    """The management client plus what version handling needs: default lookup, register, unregister."""

    def default_version(self, model: str) -> str:
        """``GET /models/<model>`` describes the default version only."""
        return str(self.describe(model)[0]["modelVersion"])

    def register(self, archive: str, workers: int = 1) -> str:
        """Load ``archive`` (a file name in the server's model store) and start ``workers`` workers."""
        params = {"url": archive, "initial_workers": workers, "synchronous": "true"}
        return self._admin("POST", "/models", f"register {archive}", params=params)

    def unregister(self, model: str, version: str) -> str:
        return self._admin("DELETE", f"/models/{model}/{version}", f"unregister {model} {version}")

    def _admin(self, method: str, path: str, what: str, **kwargs: Any) -> str:
        try:
            return self._json(method, path, what, **kwargs)["status"]
        except RequestRejected as err:
            if err.status == 405:
                raise RequestRejected(f"{what}: {MODEL_API_OFF}", err.status, err.body) from None
            raise


@dataclass
class ModelState:
    default: str | None = None
    history: list[str] = field(default_factory=list)
    workers: dict[str, dict[str, int]] = field(default_factory=dict)
    registered: dict[str, str] = field(default_factory=dict)


class ServedState:
    """The JSON file above; every save is atomic (write then rename)."""

    HISTORY_LIMIT = 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self.models: dict[str, ModelState] = {}
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                self.models = {name: ModelState(**entry) for name, entry in raw.get("models", {}).items()}
            except (ValueError, TypeError) as err:
                raise ValueError(
                    f"{path} is not a valid state file ({err}); move it away to start afresh"
                ) from None

    @classmethod
    def for_run_dir(cls, run_dir: Path) -> ServedState:
        return cls(run_dir / STATE_FILE)

    def model(self, name: str) -> ModelState:
        return self.models.setdefault(name, ModelState())

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"models": {k: asdict(v) for k, v in self.models.items()}}, indent=2))
        os.replace(tmp, self.path)

    def record_default(self, model: str, new: str, previous: str | None) -> None:
        entry = self.model(model)
        if previous is not None and previous != new:
            entry.history = (entry.history + [previous])[-self.HISTORY_LIMIT :]
        entry.default = new

    def snapshot(self, admin: ModelAdmin, models: Iterable[str]) -> None:
        """Record what the server runs now: default, worker counts, versions registered at run time."""
        for model in models:
            entry = self.model(model)
            entry.default = admin.default_version(model)
            described = admin.versions(model)
            entry.workers = {
                str(v["modelVersion"]): {"min": int(v["minWorkers"]), "max": int(v["maxWorkers"])}
                for v in described
            }
            entry.registered = {
                str(v["modelVersion"]): str(v["modelUrl"]) for v in described if not v.get("loadedAtStartup")
            }


def loaded_versions(admin: ModelAdmin, model: str) -> dict[str, dict[str, Any]]:
    """{version: description} of ``model``; empty when the server does not know it."""
    try:
        return {str(v["modelVersion"]): v for v in admin.versions(model)}
    except ModelNotReady:
        return {}


def restore(admin: ModelAdmin, state: ServedState, model_api: bool) -> list[str]:
    """Re-apply saved registrations, worker counts and defaults; one line per action or skip."""
    lines = []
    for model, entry in state.models.items():
        loaded = loaded_versions(admin, model)
        for version, archive in entry.registered.items():
            if version in loaded:
                continue
            if not model_api:
                lines.append(f"skip: {model} {version} was registered at run time; {MODEL_API_OFF}")
                continue
            admin.register(archive, entry.workers.get(version, {}).get("min", 1))
            lines.append(f"registered {model} {version} from {archive}")
            loaded = loaded_versions(admin, model)
        if not loaded:
            lines.append(f"skip: {model} is not loaded on this instance")
            continue
        for version, counts in entry.workers.items():
            now = loaded.get(version)
            if now is None:
                lines.append(f"skip: workers of {model} {version}: version not loaded")
            elif (int(now["minWorkers"]), int(now["maxWorkers"])) != (counts["min"], counts["max"]):
                admin.scale(model, counts["min"], counts["max"], version=version)
                lines.append(f"scaled {model} {version} to {counts['min']}..{counts['max']} workers")
        current = admin.default_version(model)
        if entry.default and entry.default not in loaded:
            lines.append(f"skip: saved default {model} {entry.default} is not loaded; serving {current}")
        elif entry.default and entry.default != current:
            admin.set_default(model, entry.default)
            lines.append(f"default {model} -> {entry.default}")
    return lines


# --- compare ---------------------------------------------------------------------------------


@dataclass
class ImageAgreement:
    image: str
    faces_a: int
    faces_b: int
    matched: int
    score_shift: float | None  # mean (b - a) score over matched faces
    latency_ms_a: float
    latency_ms_b: float


@dataclass
class Comparison:
    model: str
    version_a: str
    version_b: str
    iou: float
    images: list[ImageAgreement]

    @property
    def agreement(self) -> float:
        """F1 of face matching: 2 * matched / (faces_a + faces_b); 1.0 when neither finds a face."""
        total = sum(i.faces_a + i.faces_b for i in self.images)
        return 1.0 if total == 0 else 2 * sum(i.matched for i in self.images) / total

    def summary(self) -> dict[str, Any]:
        shifts = [i.score_shift for i in self.images if i.score_shift is not None]
        return {
            "model": self.model,
            "a": self.version_a,
            "b": self.version_b,
            "images": len(self.images),
            "iou": self.iou,
            "agreement": round(self.agreement, 4),
            "faces_a": sum(i.faces_a for i in self.images),
            "faces_b": sum(i.faces_b for i in self.images),
            "matched": sum(i.matched for i in self.images),
            "images_with_count_difference": sum(i.faces_a != i.faces_b for i in self.images),
            "mean_score_shift": round(statistics.fmean(shifts), 5) if shifts else None,
            "latency_ms_a": latency_stats([i.latency_ms_a for i in self.images]),
            "latency_ms_b": latency_stats([i.latency_ms_b for i in self.images]),
        }


def latency_stats(values: list[float]) -> dict[str, float]:
    """{"mean", "p50", "p90"} in ms, one decimal (scripts/latency.py); empty when no values."""
    if not values:
        return {}
    summary = summarize(values, digits=1)
    return {key: summary[key] for key in ("mean", "p50", "p90")}


def match_faces(boxes_a: list, boxes_b: list, iou: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best IoU first, pairs at or above ``iou``: [(index_a, index_b)]."""
    if not boxes_a or not boxes_b:
        return []
    import torch
    from torchvision.ops import box_iou

    overlaps = box_iou(torch.tensor(boxes_a, dtype=torch.float32), torch.tensor(boxes_b, dtype=torch.float32))
    pairs = []
    while True:
        best = overlaps.max()
        if float(best) < iou:
            return pairs
        i, j = divmod(int(overlaps.argmax()), overlaps.shape[1])
        pairs.append((i, j))
        overlaps[i, :] = -1.0
        overlaps[:, j] = -1.0


def image_files(folder: Path) -> Iterator[Path]:
    """Images directly in ``folder`` (sorted by name), lazily (scripts/paths.py decides what is one)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    yield from iter_images(folder, recursive=False)


def compare(
    client: DetectionClient,
    model: str,
    version_a: str,
    version_b: str,
    images: Iterable[Path],
    iou: float = 0.5,
    **settings: Any,
) -> Comparison:
    """Send every image to both versions (alternating which goes first) and match their faces."""
    rows = []
    for index, path in enumerate(images):
        data = path.read_bytes()
        if index == 0:  # warm-up, not timed: first requests pay for lazy initialisation
            for version in (version_a, version_b):
                client.detect(data, model, version, **settings)
        order = (version_a, version_b) if index % 2 == 0 else (version_b, version_a)
        results, latency = {}, {}
        for version in order:
            start = time.perf_counter()
            results[version] = client.detect(data, model, version, **settings)
            latency[version] = (time.perf_counter() - start) * 1000.0
        faces_a, faces_b = results[version_a].detections, results[version_b].detections
        pairs = match_faces([f.box for f in faces_a], [f.box for f in faces_b], iou)
        shifts = [faces_b[j].score - faces_a[i].score for i, j in pairs]
        rows.append(
            ImageAgreement(
                image=path.name,
                faces_a=len(faces_a),
                faces_b=len(faces_b),
                matched=len(pairs),
                score_shift=statistics.fmean(shifts) if shifts else None,
                latency_ms_a=latency[version_a],
                latency_ms_b=latency[version_b],
            )
        )
    if not rows:
        raise ClientError(f"no images to compare (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return Comparison(model, version_a, version_b, iou, rows)
