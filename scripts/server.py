"""Start, wait for, and stop a TorchServe instance. Used by `make serve` / `make stop` and by the
test fixtures, so both exercise the same start-up path.

An instance lives in a *run directory*: TorchServe is started with it as cwd (its ``key_file.json``
lands there) and as TMPDIR (TorchServe keeps its pid file in the temp dir, so several instances can
run side by side). `make serve` uses the repository root, so ``key_file.json`` sits next to this README.

Readiness is "every worker of every loaded model is READY" from the management API: ``/ping`` says
Healthy while workers are still crash-looping. Properties files are read with
:func:`scripts.config.read_properties` (also importable from here).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scripts.client import ManagementClient
from scripts.config import DEFAULT_CONFIG, ClientError, Endpoints, TokenStore, read_properties
from scripts.paths import REPO
from scripts.versions import ModelAdmin, ServedState, restore

__all__ = [
    "LOG_CONFIG",
    "OPTIONAL_ARCHIVES",
    "PID_FILE",
    "Instance",
    "free_ports",
    "isolated_settings",
    "launch",
    "loaded_models",
    "main",
    "print_endpoints",
    "render_config",
    "restore_serving_state",
    "running_pid",
    "save_serving_state",
    "server_env",
    "start",
    "stop",
    "wait_ready",
    "with_optional_archives",
]

PID_FILE = ".model_server.pid"
LOG_CONFIG = REPO / "monitoring" / "log4j2.xml"  # the frontend's logging, one line per request


def render_config(base: Path, out: Path, overrides: dict[str, str]) -> Path:
    """Copy ``base`` to ``out`` with ``overrides`` replacing (or adding) properties, comments kept."""
    lines, seen = [], set()
    for line in base.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.]+)\s*=", line)
        if match and match.group(1) in overrides:
            key = match.group(1)
            lines.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    out.write_text("\n".join(lines) + "\n")
    return out


def server_env(run_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["TMPDIR"] = str(run_dir / ".run")
    env["LOG_LOCATION"] = str(run_dir / "logs")
    env["METRICS_LOCATION"] = str(run_dir / "logs")
    # The frontend names worker sockets after java.io.tmpdir (/tmp/.ts.sock.9000): give each
    # instance its own, or two instances on one machine steal each other's workers.
    env["JAVA_TOOL_OPTIONS"] = f"-Djava.io.tmpdir={run_dir / '.run'}"
    # The frontend's logging (monitoring/log4j2.xml): one line per request instead of ~20.
    env.setdefault("LOG4J_CONFIGURATION_FILE", str(LOG_CONFIG))
    # Workers inherit this environment (docs/reliability.md, docs/benchmarks.md): fewer glibc malloc
    # arenas keep a worker's RSS from ratcheting up with the image sizes it has seen. The mmap
    # threshold must be set with the trim threshold: setting a trim threshold alone freezes glibc's
    # mmap threshold at 128 KiB, so every frame-sized buffer became a fresh mmap whose pages the
    # kernel zeroes again: +30 % per 640x480 image (33 vs 25 ms, one thread). Buffers up to 32 MiB
    # (a 1080p float canvas is 25 MiB) now come from the heap, and up to 64 MiB free stays mapped.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 * 1024 * 1024))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(64 * 1024 * 1024))
    (run_dir / ".run").mkdir(parents=True, exist_ok=True)
    return env


def running_pid(run_dir: Path) -> int | None:
    pid_file = run_dir / ".run" / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def start(config: Path, run_dir: Path, foreground: bool = False) -> subprocess.Popen | None:
    """Launch TorchServe. Daemonizes unless ``foreground`` (then the Popen is returned)."""
    props = read_properties(config)
    model_store = Path(props.get("model_store", "model_store"))
    if not model_store.is_absolute():
        model_store = (run_dir / model_store).resolve()
    cmd = ["torchserve", "--start", "--ncs", "--ts-config", str(config.resolve()),
           "--model-store", str(model_store)]  # fmt: skip
    if foreground:
        cmd.append("--foreground")
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        log = open(run_dir / "logs" / "torchserve.out", "ab")  # noqa: SIM115 - lives as long as the server
        return subprocess.Popen(cmd, cwd=run_dir, env=server_env(run_dir), stdout=log, stderr=log)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    with open(run_dir / "logs" / "torchserve.out", "ab") as log:
        subprocess.run(cmd, cwd=run_dir, env=server_env(run_dir), check=True, stdout=log, stderr=log)
    return None


def stop(run_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the instance of ``run_dir``; True when one was running."""
    pid = running_pid(run_dir)
    if pid is None:
        return False
    subprocess.run(["torchserve", "--stop"], cwd=run_dir, env=server_env(run_dir),
                   check=False, capture_output=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.kill(pid, 9)
    return True


def loaded_models(props: dict[str, str]) -> list[str]:
    """Model names from ``load_models`` (archive files are named <name>-<version>.mar)."""
    names = []
    for entry in props.get("load_models", "").split(","):
        entry = entry.strip()
        if entry and entry not in ("all", "ALL"):
            names.append(re.sub(r"(-[0-9][^/]*)?\.mar$", "", entry.split("=")[-1]))
    return sorted(set(names))


def wait_ready(
    management: ManagementClient, models: list[str], timeout: float, proc: subprocess.Popen | None = None
) -> float:
    """Block until every worker of every model is READY; returns the seconds it took."""
    start_time = time.monotonic()
    last_error = "no answer yet"
    while time.monotonic() - start_time < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"TorchServe exited with code {proc.returncode} while starting")
        try:
            if all(management.is_ready(model) for model in models):
                return time.monotonic() - start_time
            last_error = "workers not READY yet"
        except ClientError as err:
            last_error = str(err)
        time.sleep(0.5)
    raise TimeoutError(f"models {models} not READY after {timeout:.0f}s: {last_error}")


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free right now (bound together so that they differ)."""
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
class Instance:
    """A TorchServe started by :func:`launch` (tests, benchmarks): foreground, own run dir and ports."""

    run_dir: Path
    endpoints: Endpoints
    tokens: TokenStore
    models: list[str]
    process: subprocess.Popen

    def log(self, name: str = "model_log.log") -> str:
        path = self.run_dir / "logs" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def shutdown(self) -> None:
        stop(self.run_dir)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def isolated_settings(base_config: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """Overrides that let a copy of ``base_config`` run beside any other instance: free loopback
    ports, and the repository's model store and metrics declaration as absolute paths (TorchServe
    reads relative ones from its cwd, which is the copy's run dir)."""
    ports = free_ports(5)
    metrics_config = read_properties(base_config).get("metrics_config")
    anchored = {"metrics_config": str(REPO / metrics_config)} if metrics_config else {}
    return {
        "inference_address": f"http://127.0.0.1:{ports[0]}",
        "management_address": f"http://127.0.0.1:{ports[1]}",
        "metrics_address": f"http://127.0.0.1:{ports[2]}",
        "grpc_inference_port": str(ports[3]),
        "grpc_management_port": str(ports[4]),
        "model_store": str(REPO / "model_store"),
        **anchored,
    }


def launch(
    run_dir: Path,
    base_config: Path = DEFAULT_CONFIG,
    timeout: float = 180.0,
    instance_type: type[Instance] = Instance,
    **overrides: str,
) -> Instance:
    """Start TorchServe from ``base_config`` on free loopback ports with ``overrides`` applied and
    wait until READY. ``model_store`` defaults to the repository's model_store/."""
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = {**isolated_settings(base_config), **overrides}
    config = render_config(base_config, run_dir / "config.properties", settings)
    props = read_properties(config)
    endpoints = Endpoints.from_properties(props, env={})
    tokens = TokenStore(run_dir / "key_file.json", endpoints)
    process = start(config, run_dir, foreground=True)
    instance = instance_type(run_dir, endpoints, tokens, loaded_models(props), process)
    try:
        wait_ready(ManagementClient(endpoints, tokens), instance.models, timeout, process)
    except Exception:
        instance.shutdown()
        print(instance.log("torchserve.out")[-4000:], instance.log()[-4000:], sep="\n", file=sys.stderr)
        raise
    return instance


def print_endpoints(endpoints: Endpoints, tokens: TokenStore, models: list[str]) -> None:
    key = tokens.get("inference")
    model = models[0] if models else "face_detector"
    print(f"inference:  {endpoints.inference}/predictions/<model>[/<version>]")
    print(f"management: {endpoints.management}/models")
    print(f"metrics:    {endpoints.metrics}/metrics")
    print(f"models:     {', '.join(models)}")
    if "object_detector" not in models:  # archives are built from the user's own weights
        print("objects:    no object_detector loaded; to add one see docs/object_detection.md")
    print(f"grpc:       {endpoints.grpc_inference} (inference; scripts.stream --transport grpc)")
    print(f"tokens:     {tokens.key_file} (inference key expires; scripts renew it)")
    sample = write_sample_image()
    print(f"try (a real photo with one face, written to {sample.relative_to(REPO)}):")
    print(f"  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: image/jpeg' \\\n"
          f"       --data-binary @{sample} {endpoints.inference}/predictions/{model}")  # fmt: skip


SAMPLE_IMAGE = REPO / "build" / "sample.jpg"


def write_sample_image(path: Path | None = None) -> Path:
    """A JPEG the printed curl can send: matplotlib's Grace Hopper portrait (one face, 512x600)."""
    from scripts.samples import grace_hopper_bytes  # scikit-image / matplotlib: only when printing

    path = path or SAMPLE_IMAGE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(grace_hopper_bytes())
    return path


def save_serving_state(endpoints: Endpoints, tokens: TokenStore, run_dir: Path, models: list[str]) -> None:
    """Record default versions and worker counts before stopping (scripts/versions.py)."""
    try:
        state = ServedState.for_run_dir(run_dir)
        admin = ModelAdmin(endpoints, tokens, timeout=10.0)
        state.snapshot(admin, sorted(set(models) | {m["modelName"] for m in admin.list_models()}))
        state.save()
        print(f"saved default versions and worker counts to {state.path}")
    except (ClientError, ValueError) as err:
        print(f"warning: could not save default versions and worker counts: {err}", file=sys.stderr)


def restore_serving_state(endpoints: Endpoints, tokens: TokenStore, run_dir: Path, props: dict) -> None:
    """Re-apply the default versions and worker counts saved by scripts/manage.py or the last stop."""
    try:
        state = ServedState.for_run_dir(run_dir)
        if not state.models:
            return
        model_api = props.get("enable_model_api", "false").lower() == "true"
        admin = ModelAdmin(endpoints, tokens, timeout=300.0)  # scaling waits for new workers
        for line in restore(admin, state, model_api):
            print(f"restored: {line}")
    except (ClientError, ValueError) as err:
        print(f"warning: saved default versions / worker counts not re-applied: {err}", file=sys.stderr)


OPTIONAL_ARCHIVES = "object_detector-*.mar"  # built from the user's own weights, when they exist


def with_optional_archives(config: Path, run_dir: Path) -> Path:
    """``config``, or a copy under .run/ whose load_models also lists the optional archives found
    in the model store (e.g. an object detector built with `make object-detector`)."""
    props = read_properties(config)
    store = Path(props.get("model_store", "model_store"))
    store = store if store.is_absolute() else run_dir / store
    listed = [m.strip() for m in props.get("load_models", "").split(",") if m.strip()]
    extra = sorted(p.name for p in store.glob(OPTIONAL_ARCHIVES) if p.name not in listed)
    if not extra:
        return config
    (run_dir / ".run").mkdir(parents=True, exist_ok=True)
    print(f"also loading {', '.join(extra)} found in {store}")
    return render_config(
        config, run_dir / ".run" / "serving.properties", {"load_models": ",".join(listed + extra)}
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start or stop the TorchServe instance of this repo.")
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--run-dir", type=Path, default=REPO)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for READY")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if args.action == "start":
        args.config = with_optional_archives(args.config, run_dir)
    props = read_properties(args.config)
    endpoints = Endpoints.from_properties(props)
    tokens = TokenStore(run_dir / "key_file.json", endpoints)
    models = loaded_models(props)

    if args.action == "stop":
        if running_pid(run_dir):
            save_serving_state(endpoints, tokens, run_dir, models)
        print("TorchServe stopped" if stop(run_dir) else "TorchServe was not running")
        return
    if args.action == "status":
        pid = running_pid(run_dir)
        print(f"TorchServe running, pid {pid}" if pid else "TorchServe is not running")
        sys.exit(0 if pid else 1)

    if shutil.which("java") is None:
        sys.exit("Java 17 is required: sudo apt-get install -y openjdk-17-jre-headless")
    pid = running_pid(run_dir)
    if pid:
        print(f"TorchServe already running (pid {pid}); checking readiness")
    else:
        start(args.config, run_dir)
    try:
        seconds = wait_ready(ManagementClient(endpoints, tokens), models, args.timeout)
    except (TimeoutError, RuntimeError) as err:
        sys.exit(f"{err}\nsee {run_dir / 'logs' / 'model_log.log'}")
    print(f"ready in {seconds:.1f}s")
    restore_serving_state(endpoints, tokens, run_dir, props)
    print_endpoints(endpoints, tokens, models)


if __name__ == "__main__":
    main()
