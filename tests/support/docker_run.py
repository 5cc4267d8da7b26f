"""A Docker engine, the project's image and containers of it, for tests/integration/test_container_run.py.

Network rules of these machines: dockerd runs without a bridge (``--bridge=none --iptables=false
--ip-masq=false``) and every container uses ``--network host`` with TorchServe on 127.0.0.1 only.
The image's own config binds 0.0.0.0 (right behind a port mapping, wrong on the host's network), so
a container here runs with that config copied out of the image and only its listen addresses moved to
free loopback ports, mounted back over ``/opt/model-server/config.properties`` (the health check and
the CMD keep reading that path).

    reason = engine_unavailable()            # None, or why there is no engine (the tests skip)
    image = build_image()                    # face-detection:cpu, BuildKit cache makes rebuilds quick
    box = start_container(image, tmp_path, "fd-test")
    box.wait_healthy(); box.inference_url; box.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.packaging import image_build
from scripts.paths import REPO
from scripts.server import free_ports, render_config

__all__ = [
    "Container",
    "DOCKERD_ARGS",
    "LOCAL_BASE",
    "OFFICIAL_BASE",
    "base_image",
    "build_image",
    "disk_short",
    "docker",
    "engine_unavailable",
    "start_container",
    "stop_engine",
    "trim_cache",
]

DOCKERD_ARGS = ["--bridge=none", "--iptables=false", "--ip-masq=false"]
OFFICIAL_BASE = image_build.DEFAULT_BASE
LOCAL_BASE = "face-detection-base:bookworm"  # make base-image
IMAGE_CONFIG = "/opt/model-server/config.properties"  # what the CMD and the HEALTHCHECK read
_started: list[subprocess.Popen] = []  # the dockerd this module started, if any


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([image_build.docker_command(), *args], capture_output=True, text=True, check=check,
                          timeout=timeout, **kwargs)  # fmt: skip


def _engine_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def engine_unavailable() -> str | None:
    """None when a Docker engine answers (started here, as root, when none runs); else the reason."""
    if not shutil.which("docker"):
        return "no docker client (apt-get install -y docker.io)"
    if _engine_answers():
        return None
    if not shutil.which("dockerd"):
        return "no Docker engine answers and dockerd is not installed (apt-get install -y docker.io)"
    if os.geteuid() != 0:
        return "no Docker engine answers and starting dockerd needs root"
    log = REPO / "build" / "dockerd.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(["dockerd", *DOCKERD_ARGS], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"dockerd exited with {process.returncode}: {log.read_text(errors='replace')[-600:]}"
        if _engine_answers():
            _started.append(process)
            return None
        time.sleep(1)
    process.terminate()
    return f"dockerd did not answer within 60 s: {log.read_text(errors='replace')[-600:]}"


def disk_short(image: str, cold_gb: float = 25.0, warm_gb: float = 3.0) -> str | None:
    """Why the engine's disk cannot take a build of ``image``, or None. A first build needs room for
    the venv twice (the python-deps stage and its copy in the image, ~6.5 GB each with the CUDA torch
    wheels) plus the export; a rebuild with ``image`` present reuses those layers."""
    root = docker("info", "--format", "{{.DockerRootDir}}").stdout.strip() or "/var/lib/docker"
    free_gb = shutil.disk_usage(root if Path(root).exists() else "/").free / 1e9
    need = warm_gb if _has_image(image) else cold_gb
    return (
        None
        if free_gb >= need
        else f"{free_gb:.0f} GB free under {root}, a build of {image} needs {need:.0f} GB"
    )


def trim_cache(keep: str = "20gb") -> None:
    """Drop dangling images and the build cache beyond ``keep`` (least recently used first)."""
    docker("image", "prune", "-f", check=False)
    docker("builder", "prune", "-f", "--keep-storage", keep, check=False, timeout=600)


def stop_engine() -> None:
    """Stop the dockerd :func:`engine_unavailable` started (none otherwise)."""
    while _started:
        process = _started.pop()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _has_image(name: str) -> bool:
    return docker("image", "inspect", name, check=False).returncode == 0


def base_image() -> str:
    """$CONTAINER_BASE_IMAGE; else the official base when present or pullable; else the local
    Debian base of `make base-image` (built here when missing: machines without a registry)."""
    if os.environ.get("CONTAINER_BASE_IMAGE"):
        return os.environ["CONTAINER_BASE_IMAGE"]
    if _has_image(OFFICIAL_BASE):
        return OFFICIAL_BASE
    if _has_image(LOCAL_BASE):
        return LOCAL_BASE
    try:
        if docker("pull", OFFICIAL_BASE, check=False, timeout=60).returncode == 0:
            return OFFICIAL_BASE
    except subprocess.TimeoutExpired:
        pass
    subprocess.run(
        ["make", "base-image", f"LOCAL_BASE_IMAGE={LOCAL_BASE}"], cwd=REPO, check=True, timeout=900
    )
    return LOCAL_BASE


def build_image(target: str = "runtime") -> image_build.BuildReport:
    """The CPU image of ``target`` (face-detection:cpu / face-detection-kserve:cpu) from this checkout.
    torch comes from $CONTAINER_TORCH_INDEX_URL, default ``pip``: the sources this machine's pip uses,
    which installed the development venv the other tests run on."""
    index = os.environ.get("CONTAINER_TORCH_INDEX_URL", "pip")
    return image_build.build(target=target, base_image=base_image(), torch_index_url=index)


@dataclass
class Container:
    name: str
    image: str
    ports: dict[str, int]  # inference, management, metrics, grpc_inference, grpc_management
    started: float = field(default_factory=time.monotonic)

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.ports[kind]}"

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def health(self) -> str:
        return self.inspect()["State"].get("Health", {}).get("Status", "none")

    def wait_healthy(self, timeout: float = 300) -> float:
        """Seconds from ``started`` until the HEALTHCHECK reports healthy."""
        while time.monotonic() - self.started < timeout:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise RuntimeError(f"{self.name} exited with {state['ExitCode']}:\n{self.logs()}")
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - self.started
            time.sleep(1)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f}s: {self.health()}\n{self.logs()}")

    def exec(self, *command: str) -> str:
        return docker("exec", self.name, *command).stdout

    def logs(self, tail: int = 60) -> str:
        done = docker("logs", "--tail", str(tail), self.name, check=False)
        return done.stdout + done.stderr

    def stop(self, timeout: int = 30) -> float:
        start = time.monotonic()
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - start

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def start_container(image: str, tmp: Path, name: str, stop_timeout: int = 30) -> Container:
    """``docker run -d --network host`` of ``image`` with its config's addresses on free loopback ports."""
    docker("rm", "-f", name, check=False)
    config = tmp / f"{name}.properties"
    shown = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", image, IMAGE_CONFIG)
    config.write_text(shown.stdout)
    kinds = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    ports = dict(zip(kinds, free_ports(len(kinds))))
    render_config(config, config, {
        **{f"{k}_address": f"http://127.0.0.1:{ports[k]}" for k in ("inference", "management", "metrics")},
        "grpc_inference_address": "127.0.0.1", "grpc_inference_port": str(ports["grpc_inference"]),
        "grpc_management_address": "127.0.0.1", "grpc_management_port": str(ports["grpc_management"]),
    })  # fmt: skip
    config.chmod(0o644)
    box = Container(name, image, ports)
    docker("run", "-d", "--name", name, "--network", "host", "--stop-timeout", str(stop_timeout),
           "-v", f"{config}:{IMAGE_CONFIG}:ro", image)  # fmt: skip
    return box
