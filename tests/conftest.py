"""Fixtures: real TorchServe instances on free ports with token auth on, built from model_store/.

``make test`` builds the archives first; the fixtures build them too when run by plain pytest.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.client import DetectionClient, Endpoints, ManagementClient, TokenStore
from scripts.server import loaded_models, read_properties, render_config, start, stop, wait_ready

REPO = Path(__file__).resolve().parent.parent
MODEL_STORE = REPO / "model_store"
STARTUP_TIMEOUT_S = 180


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Server:
    run_dir: Path
    endpoints: Endpoints
    tokens: TokenStore
    models: list[str]
    process: subprocess.Popen

    def client(self, **kwargs) -> DetectionClient:
        return DetectionClient(self.endpoints, self.tokens, **kwargs)

    def management(self) -> ManagementClient:
        return ManagementClient(self.endpoints, self.tokens)

    def worker_pids(self, model: str = "face_detector") -> list[int]:
        return sorted(w["pid"] for v in self.management().versions(model) for w in v["workers"])

    def log(self, name: str = "model_log.log") -> str:
        path = self.run_dir / "logs" / name
        return path.read_text(errors="replace") if path.exists() else ""


def ensure_archives() -> None:
    """Build the default archives when missing or older than the code and configs they pack."""
    subprocess.run([sys.executable, "-m", "scripts.build_archives"], cwd=REPO, check=True)


def launch(run_dir: Path, **overrides: str) -> Server:
    """Start a TorchServe from config.properties with free ports and ``overrides`` applied."""
    ensure_archives()
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(5)
    settings = {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "grpc_inference_port": str(ports[3]),
        "grpc_management_port": str(ports[4]),
        "model_store": str(MODEL_STORE),
        **overrides,
    }
    config = render_config(REPO / "config.properties", run_dir / "config.properties", settings)
    props = read_properties(config)
    endpoints = Endpoints.from_properties(props, env={})
    tokens = TokenStore(run_dir / "key_file.json", endpoints)
    process = start(config, run_dir, foreground=True)
    server = Server(run_dir, endpoints, tokens, loaded_models(props), process)
    try:
        wait_ready(server.management(), server.models, STARTUP_TIMEOUT_S, process)
    except Exception:
        shutdown(server)
        print(server.log("torchserve.out")[-4000:], server.log()[-4000:], sep="\n")
        raise
    return server


def shutdown(server: Server) -> None:
    stop(server.run_dir)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The shared instance: config.properties as shipped, on free ports."""
    instance = launch(tmp_path_factory.mktemp("ts-main"))
    yield instance
    shutdown(instance)
