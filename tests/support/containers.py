"""TorchServe started the way each container target starts it, from the files its image holds.

For each target of ``scripts.packaging.container_config`` the table below names the Dockerfile stage
whose image runs it and where its command comes from (the image's CMD, or the Kubernetes manifest's
args). :func:`start_target` lays that image out under a temporary root (tests/support/dockerfile.py),
rewrites only the image's absolute paths (``/opt/model-server/x`` -> ``<root>/opt/model-server/x``)
and the listen addresses (free loopback ports), and starts TorchServe in the image's WORKDIR, an
empty folder, as a container does. A relative path in the config then resolves against that empty
folder exactly as in the container, and fails the same way.

    run = start_target("docker", tmp_path)
    run.wait_ready(); run.predict(jpeg_bytes).status_code   # 200
    run.shutdown()
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import grpc
import requests
import yaml

from scripts.client import DetectionClient, Endpoints, TokenStore
from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.packaging.grpc_stubs import OUT as STUBS_DIR
from scripts.packaging.grpc_stubs import ensure as ensure_grpc_stubs
from scripts.paths import REPO
from scripts.server import Instance, free_ports, loaded_models, render_config, server_env
from tests.support.dockerfile import ImageLayout, Stage, chain, parse_stages

__all__ = [
    "TARGETS",
    "ContainerRun",
    "LaidOut",
    "Target",
    "image_path_args",
    "lay_out_target",
    "option",
    "relative_paths",
    "start_target",
]

DEPLOYMENT = REPO / "deploy" / "base" / "deployment.yaml"


def _cmd(stage: str) -> Callable[[dict[str, Stage]], list[str]]:
    def command(stages: dict[str, Stage]) -> list[str]:
        found = [s.exec_form("CMD") for s in chain(stages, stage) if s.exec_form("CMD")]
        if not found:
            raise ValueError(f"stage {stage} has no CMD in exec form")
        return found[-1]

    return command


def _k8s_args(_: dict[str, Stage]) -> list[str]:
    docs = [d for d in yaml.safe_load_all(DEPLOYMENT.read_text()) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "torchserve")["args"]


@dataclass(frozen=True)
class Target:
    stage: str  # Dockerfile stage of the image that runs this config
    command: Callable[[dict[str, Stage]], list[str]]  # TorchServe's command line in that container
    mounts: dict[str, str] = field(default_factory=dict)  # image folder -> stage mounted there


TARGETS = {
    "docker": Target("runtime", _cmd("runtime")),
    "k8s": Target("runtime", _k8s_args),
    # KServe's runtime mounts the storageUri (the kserve-store stage's files) at /mnt/models and runs
    # the command the kserve image's CMD repeats.
    "kserve": Target("kserve", _cmd("kserve"), {"/mnt/models": "kserve-store"}),
}


def option(args: list[str], name: str) -> str:
    """The value of ``--name X`` or ``--name=X`` in ``args``."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise ValueError(f"{name} not in {args}")


def image_path_args(args: list[str], layout: ImageLayout) -> list[str]:
    """``args`` with every absolute image path (``/x`` or ``--opt=/x``) moved into ``layout``."""
    moved = []
    for arg in args:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if value.startswith("/"):
            value = str(layout.path(value))
        moved.append(f"{flag}{eq}{value}")
    return moved


@dataclass
class ContainerRun:
    target: str
    layout: ImageLayout
    config: Path  # the config TorchServe runs, inside the layout
    workdir: Path  # the image's WORKDIR, TorchServe's cwd (empty at start)
    state: Path  # TMPDIR, pid file, worker sockets: outside the image layout
    props: dict[str, str]
    endpoints: Endpoints
    tokens: TokenStore
    process: subprocess.Popen

    @property
    def models(self) -> list[str]:
        return loaded_models(self.props)

    def worker_statuses(self) -> dict[str, list[str]]:
        """``"<model> <version>"`` -> the status of each of its workers, for every loaded model.

        Asked over gRPC management: where inference and management share one port (the kserve
        config), TorchServe routes REST ``/models/<name>/<version>`` to the inference API (404), so
        REST shows the default version only."""
        ensure_grpc_stubs()
        if str(STUBS_DIR) not in sys.path:
            sys.path.insert(0, str(STUBS_DIR))
        from torchserve_grpc import management_pb2, management_pb2_grpc

        key = self.tokens.get("management")
        metadata = [("authorization", f"Bearer {key}")] if key else []
        address = f"127.0.0.1:{self.props['grpc_management_port']}"
        statuses: dict[str, list[str]] = {}
        with grpc.insecure_channel(address) as channel:
            stub = management_pb2_grpc.ManagementAPIsServiceStub(channel)
            for model in self.models:
                request = management_pb2.DescribeModelRequest(model_name=model, model_version="all")
                described = json.loads(stub.DescribeModel(request, metadata=metadata, timeout=10).msg)
                for version in described:
                    key_ = f"{model} {version['modelVersion']}"
                    statuses[key_] = [w["status"] for w in version.get("workers", [])]
        return statuses

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Block until every worker of every version of every loaded model is READY."""
        start, last = time.monotonic(), "no answer yet"
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with code {self.process.returncode} while starting")
            try:
                statuses = self.worker_statuses()
                if statuses and all(s and set(s) == {"READY"} for s in statuses.values()):
                    return time.monotonic() - start
                last = f"workers: {statuses}"
            except grpc.RpcError as err:
                last = f"{err.code()}: {err.details()}"
            time.sleep(0.5)
        raise TimeoutError(f"{self.target}: not every worker READY after {timeout:.0f}s; {last}")

    def predict(self, image: bytes, model: str = "face_detector") -> requests.Response:
        """One inference the way this target's clients send it: TorchServe's KServe v1 envelope
        (``{"instances": [{"data": {"image": <base64>}}]}``) for KServe, the raw image otherwise."""
        if self.props.get("service_envelope") == "kserve":
            body = {"instances": [{"data": {"image": base64.b64encode(image).decode()}}]}
            url = f"{self.endpoints.inference}/v1/models/{model}:predict"
            return requests.post(url, json=body, timeout=60)
        return DetectionClient(self.endpoints, self.tokens, timeout=60).detect_raw(image, model)

    def logs(self) -> str:
        text = []
        for name in ("torchserve.out", "ts_log.log", "model_log.log"):
            for path in (self.state / name, self.workdir / "logs" / name):
                if path.exists():
                    text.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(text)

    def shutdown(self) -> None:
        Instance(self.state, self.endpoints, self.tokens, self.models, self.process).shutdown()


def loopback_addresses(props: dict[str, str]) -> dict[str, str]:
    """Listen addresses on free 127.0.0.1 ports; addresses that share a port keep sharing one."""
    keys = [k for k in ("inference_address", "management_address", "metrics_address") if k in props]
    ports = {props[k].rsplit(":", 1)[-1] for k in keys}
    ports |= {props.get(k, d) for k, d in (("grpc_inference_port", "7070"), ("grpc_management_port", "7071"))}
    fresh = dict(zip(sorted(ports), free_ports(len(ports))))
    moved = {k: f"http://127.0.0.1:{fresh[props[k].rsplit(':', 1)[-1]]}" for k in keys}
    for kind, default in (("grpc_inference", "7070"), ("grpc_management", "7071")):
        moved[f"{kind}_address"] = "127.0.0.1"
        moved[f"{kind}_port"] = str(fresh[props.get(f"{kind}_port", default)])
    return moved


@dataclass
class LaidOut:
    layout: ImageLayout
    stages: dict[str, Stage]
    args: list[str]  # TorchServe's command line in the container, image paths as they are
    config: Path  # the config that command names, inside the layout (as rendered at build time)


def lay_out_target(target: str, tmp: Path) -> LaidOut:
    """The image of ``target`` laid out under ``tmp/image``; nothing rewritten yet."""
    spec = TARGETS[target]
    stages = parse_stages()
    layout = ImageLayout(tmp / "image", stages)
    layout.lay_out(spec.stage, spec.mounts)
    args = spec.command(stages)
    return LaidOut(layout, stages, args, layout.path(option(args, "--ts-config")))


def start_target(target: str, tmp: Path) -> ContainerRun:
    """Lay out the image of ``target`` under ``tmp/image`` and start its TorchServe (foreground)."""
    spec = TARGETS[target]
    laid = lay_out_target(target, tmp)
    layout, stages, args, config = laid.layout, laid.stages, laid.args, laid.config
    props = read_properties(config)
    # Only absolute paths move with the image; a relative one stays as the container would see it.
    paths = {k: v for k, v in props.items() if k in container_config.PATH_KEYS}
    moved = {k: str(layout.path(v)) for k, v in paths.items() if v.startswith("/")}
    render_config(config, config, {**moved, **loopback_addresses(props)})
    props = read_properties(config)

    workdirs = [w for s in chain(stages, spec.stage) for w in s.keyword("WORKDIR")]
    workdir = layout.path(str(PurePosixPath("/", *workdirs)))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise AssertionError(f"the image's WORKDIR is not empty: {sorted(p.name for p in workdir.iterdir())}")
    state = tmp / "state"
    env = {k: v for k, v in server_env(state).items() if not k.startswith("TS_")}
    # The image's ENV: its log folders, and the frontend's log configuration where the image has it.
    image_env = {k: v for s in chain(stages, spec.stage) for k, v in s.env().items()}
    env["LOG_LOCATION"] = str(layout.path(image_env["LOG_LOCATION"]))
    env["METRICS_LOCATION"] = str(layout.path(image_env["METRICS_LOCATION"]))
    env["LOG4J_CONFIGURATION_FILE"] = str(layout.path(image_env["LOG4J_CONFIGURATION_FILE"]))
    command = image_path_args(args, layout)
    if "--foreground" not in command:
        command.insert(command.index("--start") + 1, "--foreground")  # keep the process to stop it
    command[0] = str(Path(sys.executable).parent / command[0])
    out = open(state / "torchserve.out", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    endpoints = Endpoints.from_properties(props, env={})
    tokens = TokenStore(workdir / "key_file.json", endpoints)
    return ContainerRun(target, layout, config, workdir, state, props, endpoints, tokens, process)


def relative_paths(props: dict[str, str]) -> dict[str, str]:
    """Path-valued properties that are not absolute."""
    return {k: v for k, v in props.items() if k in container_config.PATH_KEYS and not os.path.isabs(v)}
