"""Real TorchServe instances for tests: free ports, token auth on, archives from model_store/.

Instances come from :func:`scripts.server.launch`, the same launcher `make serve` and the benchmark
use, so the tests exercise the shipped start-up path.

    server = launch(tmp_path)                 # config.properties as shipped, free ports
    server.client().detect(jpeg_bytes)
    shutdown(server)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from scripts import server as server_lib
from scripts.client import DetectionClient, ManagementClient
from scripts.paths import REPO
from scripts.server import free_ports

__all__ = [
    "MODEL_STORE",
    "STARTUP_TIMEOUT_S",
    "Server",
    "ensure_archives",
    "free_ports",
    "launch",
    "launch_variant",
    "shutdown",
    "store_with",
]

MODEL_STORE = REPO / "model_store"
STARTUP_TIMEOUT_S = 180


class Server(server_lib.Instance):
    def client(self, **kwargs) -> DetectionClient:
        return DetectionClient(self.endpoints, self.tokens, **kwargs)

    def management(self) -> ManagementClient:
        return ManagementClient(self.endpoints, self.tokens)

    def worker_pids(self, model: str = "face_detector", version: str | None = None) -> list[int]:
        """Worker pids of every version of ``model``, or of one ``version``."""
        described = (
            self.management().describe(model, version) if version else self.management().versions(model)
        )
        return sorted(w["pid"] for v in described for w in v["workers"])


def ensure_archives() -> None:
    """Build the default archives when missing or older than the code and configs they pack."""
    subprocess.run([sys.executable, "-m", "scripts.packaging.build_archives"], cwd=REPO, check=True)


def store_with(folder: Path, *archive_keys: str) -> Path:
    """A fresh model store at ``folder`` holding copies of the named default archives (built if needed)."""
    from scripts.packaging.build_archives import ARCHIVES

    ensure_archives()
    folder.mkdir(parents=True)
    for key in archive_keys:
        shutil.copy2(MODEL_STORE / ARCHIVES[key].filename, folder)
    return folder


def launch(run_dir: Path, **overrides: str) -> Server:
    """Start a TorchServe from config.properties with free ports and ``overrides`` applied."""
    ensure_archives()
    return server_lib.launch(run_dir, timeout=STARTUP_TIMEOUT_S, instance_type=Server, **overrides)


def launch_variant(folder: Path, overrides: dict, key: str = "face_detector-2.0") -> Server:
    """A TorchServe serving only archive ``key`` rebuilt with ``overrides`` merged into its
    model-config.yaml (same name and version), as ``python -m scripts.bench --set`` builds it."""
    from scripts.bench.goals import variant_archive

    archive = variant_archive(overrides, folder / "archive", key)
    return launch(folder / "run", model_store=str(archive.parent), load_models=archive.name)


def shutdown(server: Server) -> None:
    server.shutdown()
