"""Fixtures: real TorchServe instances on free ports with token auth on, built from model_store/.

``make test`` builds the archives first; the fixtures build them too when run by plain pytest.
Instances come from :func:`scripts.server.launch`, the same launcher the benchmark uses.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import server as server_lib
from scripts.client import DetectionClient, ManagementClient
from scripts.server import free_ports  # noqa: F401 - re-exported for tests

REPO = Path(__file__).resolve().parent.parent
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


def shutdown(server: Server) -> None:
    server.shutdown()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The shared instance: config.properties as shipped, on free ports."""
    instance = launch(tmp_path_factory.mktemp("ts-main"))
    yield instance
    shutdown(instance)
