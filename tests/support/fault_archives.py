"""Test-only archive variants of face_detector 2.0, built into temporary model stores.

They reuse the shipped handler package and weights, swap the entry file for tests/support/fault_handler.py
(injectable sleep and leak) and override model-config.yaml keys. Nothing here goes to model_store/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from scripts.packaging.build_archives import ARCHIVES, ArchiveSpec, build
from tests.support.servers import MODEL_STORE, ensure_archives

FAULT_HANDLER = Path(__file__).resolve().parent / "fault_handler.py"
BASE = ARCHIVES["face_detector-2.0"]

# One worker, one request per batch, a 2-slot queue and a 3 s response timeout: slow requests
# (X-Fault-Sleep-S) fill the queue at once, and a 6 s sleep exceeds the timeout.
FAULT_CONFIG = {
    "minWorkers": 1, "maxWorkers": 1, "batchSize": 1, "maxBatchDelay": 1,
    "jobQueueSize": 2, "responseTimeout": 3,
}  # fmt: skip
# Keeps 2 MiB per request forever: the soak's memory check must fail on it.
LEAKY_CONFIG = {"batchSize": 1, "maxBatchDelay": 1, "faults": {"leak_kb_per_request": 2048}}


def build_variant(store: Path, name: str, overrides: dict[str, Any], version: str = "1.0") -> Path:
    """Build ``<name>-<version>.mar``: face_detector 2.0 with ``overrides`` merged into its yaml."""
    config = yaml.safe_load(BASE.config.read_text())
    config.update(overrides)
    config_file = store.parent / f"{name}-{version}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    spec = ArchiveSpec(name, version, FAULT_HANDLER, BASE.weights, config_file, f"test variant: {name}")
    return build(spec, store)


def store_with(root: Path, *variants: tuple[str, dict[str, Any]]) -> Path:
    """A model store under ``root`` holding face_detector-2.0.mar plus the given variants."""
    ensure_archives()
    store = root / "store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MODEL_STORE / BASE.filename, store)
    for name, overrides in variants:
        build_variant(store, name, overrides)
    return store
