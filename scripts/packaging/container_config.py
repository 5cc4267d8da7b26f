"""Server configs for containers, rendered from the repository's ``config.properties``, and the
readiness check the container runs.

``config.properties`` stays the one place where server settings are written and commented; each
target below changes only what its environment needs, so the other settings (limits, token expiry,
``allowed_urls``, metrics mode, model API off) follow the source file by construction:

    docker   the image's default: every address on 0.0.0.0 (a port mapping reaches only the
             container's own interface), token auth on, archives from the image's model store.
    k8s      a pod behind the token-checking sidecar (deploy/base/auth-proxy-configmap.yaml): REST and
             gRPC on 127.0.0.1 at internal ports, so only containers of the same pod reach them,
             TorchServe's own per-process keys off (every replica would generate different ones);
             metrics on 0.0.0.0:8082 for Prometheus (TorchServe serves them without a token).
    kserve   the layout KServe's TorchServe runtime expects: inference and management on
             127.0.0.1:8085 behind the KServe wrapper (same container; gRPC on 127.0.0.1 too),
             archives under /mnt/models/model-store,
             models declared in ``model_snapshot`` with batchSize 1 (TorchServe's KServe envelope
             reads only the first request of a batch; batch on the KServe side instead).

Every target: each path-valued property (``PATH_KEYS``) is absolute. TorchServe resolves a relative
one against its working directory, an empty folder in a container; ``metrics_config`` becomes
``/opt/model-server/monitoring/ts_metrics.yaml``, which the images copy (Dockerfile ``runtime-base``).

Usage:
    python -m scripts.packaging.container_config render --target docker --out /srv/config.properties
    python -m scripts.packaging.container_config kserve-store --store model_store --out build/kserve
    python -m scripts.packaging.container_config gpu-archives --store /src/model-store   (GPU image)
    python -m scripts.packaging.container_config healthcheck --config /srv/config.properties [--live]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

from scripts.config import read_properties
from scripts.paths import REPO
from scripts.server import loaded_models, render_config

__all__ = [
    "APP_DIR",
    "CONTAINER_STORE",
    "K8S_INTERNAL",
    "KSERVE_STORE",
    "PATH_KEYS",
    "SOURCE",
    "TARGETS",
    "WORK_DIR",
    "archive_files",
    "gpu_archives",
    "healthcheck",
    "kserve_store",
    "main",
    "model_config",
    "model_snapshot",
    "overrides_for",
    "render",
    "target_settings",
]

SOURCE = REPO / "config.properties"
APP_DIR = "/opt/model-server"  # read-only in the image: configs, archives, scripts
WORK_DIR = "/home/model-server"  # writable cwd of TorchServe: key_file.json, logs
CONTAINER_STORE = f"{APP_DIR}/model-store"
KSERVE_STORE = "/mnt/models/model-store"

# Ports the k8s sidecar publishes are the usual 8080/8081/7070; TorchServe moves out of its way.
K8S_INTERNAL = {"inference": 18080, "management": 18081, "grpc_inference": 17070, "grpc_management": 17071}

TARGETS = ("docker", "k8s", "kserve")

# Properties that name a file or folder (TorchServe 0.12.0's ConfigManager and ts/model_server.py).
# TorchServe resolves a relative one against its working directory, which in a container is an empty
# folder (/home/model-server): a relative metrics_config made every worker exit at start. Every target
# therefore gets absolute paths; a relative path of config.properties that no target overrides is
# anchored under APP_DIR, where the images copy it (monitoring/ts_metrics.yaml -> APP_DIR/monitoring/).
PATH_KEYS = (
    "model_store",
    "workflow_store",
    "metrics_config",
    "model_server_home",
    "keystore",
    "certificate_file",
    "private_key_file",
    "cpp_log_config",
    "plugins_path",
)


def overrides_for(target: str, props: dict[str, str]) -> dict[str, str]:
    """Properties that differ from ``config.properties`` for ``target``: the target's own settings,
    and every relative path of :data:`PATH_KEYS` made absolute under :data:`APP_DIR`."""
    overrides = target_settings(target, props)
    anchored = {
        key: f"{APP_DIR}/{value}"
        for key, value in props.items()
        if key in PATH_KEYS and key not in overrides and not value.startswith("/")
    }
    return {**overrides, **anchored}


def target_settings(target: str, props: dict[str, str]) -> dict[str, str]:
    """Addresses, model store, auth and envelope of ``target``."""
    if target == "docker":
        return {
            "inference_address": "http://0.0.0.0:8080",
            "management_address": "http://0.0.0.0:8081",
            "metrics_address": "http://0.0.0.0:8082",
            "grpc_inference_address": "0.0.0.0",
            "grpc_management_address": "0.0.0.0",
            "model_store": CONTAINER_STORE,
        }
    if target == "k8s":
        return {
            "inference_address": f"http://127.0.0.1:{K8S_INTERNAL['inference']}",
            "management_address": f"http://127.0.0.1:{K8S_INTERNAL['management']}",
            "metrics_address": "http://0.0.0.0:8082",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": str(K8S_INTERNAL["grpc_inference"]),
            "grpc_management_port": str(K8S_INTERNAL["grpc_management"]),
            "model_store": CONTAINER_STORE,
            "disable_token_authorization": "true",
        }
    if target == "kserve":
        # Only the wrapper, in the same container, talks to TorchServe: with its keys off, REST
        # management and gRPC must not be reachable from the rest of the cluster.
        return {
            "inference_address": "http://127.0.0.1:8085",
            "management_address": "http://127.0.0.1:8085",
            "metrics_address": "http://0.0.0.0:8082",
            "grpc_inference_address": "127.0.0.1",
            "grpc_management_address": "127.0.0.1",
            "model_store": KSERVE_STORE,
            "disable_token_authorization": "true",
            "enable_envvars_config": "true",
            "service_envelope": "kserve",
            "model_snapshot": json.dumps(model_snapshot(props), separators=(",", ":")),
        }
    raise ValueError(f"unknown target {target!r}; use one of: {', '.join(TARGETS)}")


def archive_files(props: dict[str, str]) -> list[str]:
    """Archive file names listed in ``load_models`` (``name=file.mar`` or ``file.mar``)."""
    entries = [e.strip().split("=")[-1] for e in props.get("load_models", "").split(",")]
    files = [e for e in entries if e.endswith(".mar")]
    if not files:
        raise ValueError("load_models in config.properties lists no .mar file; the containers need it")
    return files


def model_snapshot(props: dict[str, str]) -> dict:
    """The ``model_snapshot`` JSON KServe's wrapper reads to learn model names and versions.

    Workers and timeouts come from each archive's model-config.yaml (the snapshot replaces them);
    batchSize is 1 for the reason in the module docstring. The first archive of a model in
    ``load_models`` is its default version.
    """
    models: dict[str, dict[str, dict]] = {}
    for file in archive_files(props):
        match = re.fullmatch(r"(.+?)-([0-9][^/]*)\.mar", file)
        if match is None:
            raise ValueError(f"archive {file!r} is not named <model>-<version>.mar")
        name, version = match.groups()
        workers = model_config(file)
        versions = models.setdefault(name, {})
        versions[version] = {
            "defaultVersion": not versions,
            "marName": file,
            "minWorkers": int(workers.get("minWorkers", 1)),
            "maxWorkers": int(workers.get("maxWorkers", 1)),
            "batchSize": 1,
            "maxBatchDelay": int(workers.get("maxBatchDelay", 5)),
            "responseTimeout": int(workers.get("responseTimeout", 120)),
            "startupTimeout": int(workers.get("startupTimeout", 120)),
        }
    count = sum(len(v) for v in models.values())
    return {"name": "startup.cfg", "modelCount": count, "models": models}


def model_config(archive_file: str) -> dict:
    """The model-config.yaml packed into ``archive_file`` (from the ARCHIVES registry), or {}."""
    import yaml

    from scripts.packaging.build_archives import ARCHIVES

    spec = next((s for s in ARCHIVES.values() if s.filename == archive_file), None)
    if spec is None or not spec.config.is_file():
        return {}
    return yaml.safe_load(spec.config.read_text()) or {}


def render(target: str, out: Path, source: Path = SOURCE) -> Path:
    props = read_properties(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    return render_config(source, out, overrides_for(target, props))


def kserve_store(store: Path, out: Path, source: Path = SOURCE) -> Path:
    """Lay out ``out/config/config.properties`` and ``out/model-store/*.mar`` for a storageUri."""
    props = read_properties(source)
    files = archive_files(props)
    missing = [f for f in files if not (store / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not in {store}; run `make build` first")
    (out / "model-store").mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(store / file, out / "model-store" / file)
    render("kserve", out / "config" / "config.properties", source)
    return out


def gpu_archives(store: Path) -> list[Path]:
    """The GPU image's face_detector 2.0: rebuilt into ``store`` with model_configs/gpu/ merged over
    its CPU config (1 worker per GPU, batch 64, fp16, nvJPEG) instead of the 2-core CPU tuning
    (2 workers, batch 1). face_detector 1.0 keeps its config (1 worker)."""
    import tempfile

    from scripts.bench.gpu_kit import GPU_CONFIG, merged_config
    from scripts.packaging.build_archives import ARCHIVES, ArchiveSpec, build

    base = ARCHIVES["face_detector-2.0"]
    with tempfile.TemporaryDirectory(prefix="gpu-config-") as tmp:
        config = Path(tmp) / "face_detector-2.0-gpu.yaml"
        config.write_text(yaml.safe_dump(merged_config(base.config, GPU_CONFIG), sort_keys=False))
        spec = ArchiveSpec(
            base.name, base.version, base.handler, base.weights, config, base.description + " (GPU)"
        )
        return [build(spec, store)]


def healthcheck(config: Path, key_file: Path, live: bool = False) -> tuple[bool, str]:
    """Ready: every worker of every loaded model is READY (``/ping`` is not a readiness check).
    Live (``live=True``): the management API answers at all, whatever the workers do."""
    from scripts.client import ClientError, Endpoints, ManagementClient, TokenStore

    props = read_properties(config)
    local = {k: v.replace("0.0.0.0", "127.0.0.1") for k, v in props.items()}
    endpoints = Endpoints.from_properties(local, env={})
    client = ManagementClient(endpoints, TokenStore(key_file, endpoints), timeout=5.0)
    try:
        if live:
            client.list_models()
            return True, "management API answers"
        models = loaded_models(props)
        not_ready = [m for m in models if not client.is_ready(m)]
    except ClientError as err:
        return False, str(err)
    if not_ready:
        return False, f"workers not READY: {', '.join(not_ready)}"
    return True, f"ready: {', '.join(models)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.packaging.container_config",
        description="Container configs and readiness check.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_render = sub.add_parser("render", help="write a config.properties for a container target")
    p_render.add_argument("--target", choices=TARGETS, required=True)
    p_render.add_argument("--out", type=Path, required=True)
    p_render.add_argument("--source", type=Path, default=SOURCE)
    p_store = sub.add_parser("kserve-store", help="lay out config/ and model-store/ for a storageUri")
    p_store.add_argument("--store", type=Path, default=REPO / "model_store")
    p_store.add_argument("--out", type=Path, required=True)
    p_store.add_argument("--source", type=Path, default=SOURCE)
    p_gpu = sub.add_parser("gpu-archives", help="rebuild face_detector 2.0 with the GPU worker settings")
    p_gpu.add_argument("--store", type=Path, required=True)
    p_health = sub.add_parser("healthcheck", help="exit 0 when every worker is READY")
    p_health.add_argument("--config", type=Path, default=Path(APP_DIR) / "config.properties")
    p_health.add_argument("--key-file", type=Path, default=Path(WORK_DIR) / "key_file.json")
    p_health.add_argument("--live", action="store_true", help="only check that the server answers")
    args = parser.parse_args(argv)

    if args.command == "render":
        print(f"rendered {args.target} config -> {render(args.target, args.out, args.source)}")
    elif args.command == "gpu-archives":
        gpu_archives(args.store)
    elif args.command == "kserve-store":
        print(f"KServe storage layout -> {kserve_store(args.store, args.out, args.source)}")
    else:
        ok, message = healthcheck(args.config, args.key_file, args.live)
        print(message)
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
