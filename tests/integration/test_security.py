"""Security (issue 9, cases 1-6): loopback-only sockets, token auth and expiry, registration locked
down, archives with path-escaping entries, no unsafe loaders in handler code, request size limit.

Case 3 and 4 need an admin instance (model API on, its own model store); it also runs with keys that
expire after 6 s so that case 2 can watch the clients renew them.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import shutil
import socket
import socketserver
import threading
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest
import requests

from scripts.client import DetectionClient, ManagementClient
from scripts.config import read_properties
from scripts.packaging.build_archives import ARCHIVES
from scripts.paths import REPO
from tests.support.images import astronaut, encode, grace_hopper_bytes
from tests.support.servers import MODEL_STORE, launch, shutdown, store_with

PREDICT_20 = "/predictions/face_detector/2.0"
TOKEN_TTL_MIN = 0.1  # 6 s: the admin instance's keys expire during the test


def _ipv4(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def _process_tree(server) -> list[psutil.Process]:
    root = psutil.Process(server.process.pid)  # the torchserve launcher: java and workers below it
    return [root, *root.children(recursive=True)]


# --- 1. sockets -------------------------------------------------------------------------------


def test_every_listening_socket_is_on_loopback(server):
    processes = _process_tree(server)
    workers = set(server.worker_pids())
    assert workers <= {p.pid for p in processes}, "workers must be children of the frontend"
    bound = []  # (pid, address): TCP listeners and bound UDP sockets of every process
    for process in processes:
        for conn in process.net_connections("inet"):
            listening = conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM
            if listening and conn.laddr:
                bound.append((process.pid, conn.laddr))
    ports = {urlparse(getattr(server.endpoints, k)).port for k in ("inference", "management", "metrics")}
    assert ports <= {addr.port for _, addr in bound}, f"REST ports not found among {bound}"
    assert len(bound) >= 5, f"expected REST x3 + gRPC x2 listeners, found {bound}"
    assert [(pid, addr) for pid, addr in bound if _ipv4(addr.ip) != "127.0.0.1"] == []
    for pid in workers:  # workers talk to the frontend over unix sockets only
        worker = psutil.Process(pid)
        assert [c for c in worker.net_connections("inet") if c.status == psutil.CONN_LISTEN] == []
        assert worker.net_connections("unix"), f"worker {pid} has no unix socket"


# --- 2. tokens --------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Bearer ", "Basic dXNlcjpwdw=="])
@pytest.mark.parametrize("api", ["inference", "management"])
def test_missing_or_wrong_token_is_rejected(server, api, authorization):
    base = getattr(server.endpoints, api)
    url = f"{base}{PREDICT_20}" if api == "inference" else f"{base}/models"
    headers = {"Content-Type": "image/jpeg"} | ({"Authorization": authorization} if authorization else {})
    if api == "inference":
        response = requests.post(url, data=grace_hopper_bytes(), headers=headers, timeout=30)
    else:
        response = requests.get(url, headers=headers, timeout=30)
    assert response.status_code in (400, 401, 403)
    assert response.json()["type"] == "InvalidKeyException"


def test_right_token_is_accepted(server):
    key = server.tokens.get("inference")
    response = requests.post(
        f"{server.endpoints.inference}{PREDICT_20}",
        data=grace_hopper_bytes(),
        headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["version"] == "2.0"


def test_clients_survive_token_expiry(admin):
    client, management = (
        DetectionClient(admin.endpoints, admin.tokens),
        ManagementClient(admin.endpoints, admin.tokens),
    )
    assert client.detect(grace_hopper_bytes(), version="2.0").detections
    keys_before = json.loads(admin.tokens.key_file.read_text())
    time.sleep(TOKEN_TTL_MIN * 60 + 1.5)
    stale = requests.post(
        f"{admin.endpoints.inference}{PREDICT_20}",
        data=grace_hopper_bytes(),
        headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {keys_before['inference']['key']}"},
        timeout=30,
    )
    assert stale.status_code in (400, 401, 403), "the key should have expired"
    assert client.detect(grace_hopper_bytes(), version="2.0").detections  # renewed by the client
    assert any(m["modelName"] == "face_detector" for m in management.list_models())
    keys_after = json.loads(admin.tokens.key_file.read_text())
    assert keys_after["inference"]["key"] != keys_before["inference"]["key"]


# --- 3. registration ------------------------------------------------------------------------------


class _Probe(socketserver.ThreadingTCPServer):
    """Counts every TCP connection made to it (HTTP or TLS alike) and answers nothing useful."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _ProbeHandler)


class _ProbeHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.server.connections += 1
        self.request.recv(1024)
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope")


@pytest.fixture
def probe():
    server = _Probe()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_register_and_delete_are_disabled(server):
    api = server.management().api
    assert api.request("POST", "/models", params={"url": "face_detector-2.0.mar"}).status_code == 405
    assert api.request("DELETE", "/models/face_detector/1.0").status_code == 405
    assert {v["modelVersion"] for v in server.management().versions("face_detector")} >= {"1.0", "2.0"}


def test_registration_only_from_the_model_store(admin, probe, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = shutil.copy2(
        MODEL_STORE / ARCHIVES["face_detector-1.0"].filename, outside / "elsewhere-1.0.mar"
    )
    port = probe.server_address[1]
    urls = [
        f"http://127.0.0.1:{port}/face_detector-1.0.mar",
        f"https://127.0.0.1:{port}/face_detector-1.0.mar",
        f"file://{archive}",
        str(archive),
        "../" + "/".join(Path(archive).parts[-2:]),
    ]
    api = ManagementClient(admin.endpoints, admin.tokens).api
    models_before = _models(admin)
    for url in urls:
        response = api.request("POST", "/models", params={"url": url, "synchronous": "true"})
        assert 400 <= response.status_code < 500, (url, response.status_code, response.text)
    time.sleep(0.5)  # a late fetch would still reach the probe
    assert probe.connections == 0
    assert _models(admin) == models_before


def _models(server) -> list[tuple[str, str]]:
    management = ManagementClient(server.endpoints, server.tokens)
    return sorted(
        (m["modelName"], v["modelVersion"])
        for m in management.list_models()
        for v in management.versions(m["modelName"])
    )


# --- 4. path-escaping archive ---------------------------------------------------------------------


def build_escaping_archive(target: Path, escape_to: Path) -> Path:
    """face_detector 2.0 renamed 'escape', plus a '../' entry and one aiming at ``escape_to``."""
    source_path = MODEL_STORE / ARCHIVES["face_detector-2.0"].filename
    with zipfile.ZipFile(source_path) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["modelName"] = "escape"
                data = json.dumps(manifest).encode()
            out.writestr(info.filename, data)
        out.writestr("../escaped-relative.txt", b"escaped")
        out.writestr("../" * 40 + str(escape_to / "escaped-absolute.txt").lstrip("/"), b"escaped")
    return target


def test_path_escaping_archive_is_refused_and_writes_nothing_outside(admin):
    escape_to = admin.root / "escape-target"
    outside_before = _snapshot(admin.root, exclude=admin.run_dir / ".run")
    response = ManagementClient(admin.endpoints, admin.tokens).api.request(
        "POST", "/models", params={"url": "escape-1.0.mar", "synchronous": "true"}
    )
    assert response.status_code >= 400, response.text  # TorchServe 0.12.0 answers 500 "Failed to save model"
    assert "escape" not in {name for name, _ in _models(admin)}
    assert not escape_to.exists() or not any(escape_to.iterdir())
    # The archive is unpacked under the server's temp dir (run/.run); nothing may land beside it.
    assert not list(admin.run_dir.glob(".run/escaped-*")) and not list(admin.root.rglob("escaped-*.txt"))
    assert _snapshot(admin.root, exclude=admin.run_dir / ".run") == outside_before
    assert (
        DetectionClient(admin.endpoints, admin.tokens).detect(grace_hopper_bytes(), version="2.0").detections
    )


def _snapshot(root: Path, exclude: Path) -> set[str]:
    """Every path under ``root`` except ``exclude`` and the logs (which grow by themselves)."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_relative_to(exclude)
        and "logs" not in p.relative_to(root).parts
        and p.name != "key_file.json"
    }


# --- 5. handler sources -------------------------------------------------------------------------

HANDLER_SOURCES = sorted((REPO / "handlers").glob("*.py")) + [REPO / "tests" / "support" / "fault_handler.py"]


PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "dill", "joblib", "marshal", "shelve")


def unsafe_calls(source: str) -> list[str]:
    """torch.load without weights_only=True, pickle loads, yaml.load without a safe loader, eval/exec."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in PICKLE_MODULES:
            names = [a.name for a in node.names if "load" in a.name or a.name == "Unpickler"]
            found += [f"line {node.lineno}: from {node.module} import {name}" for name in names]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        if owner == "torch" and name == "load":
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif owner in PICKLE_MODULES and ("load" in name or name in ("Unpickler", "open")):
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
            loader = keywords.get("Loader")
            safe = isinstance(loader, ast.Attribute) and loader.attr in ("SafeLoader", "CSafeLoader")
            if not safe:
                found.append(f"line {node.lineno}: yaml.{name} without SafeLoader")
        elif isinstance(func, ast.Name) and name in ("eval", "exec", "__import__"):
            found.append(f"line {node.lineno}: {name}()")
    return found


@pytest.mark.parametrize("source", [
    "torch.load(p)", "torch.load(p, weights_only=False)", "pickle.loads(b)", "yaml.load(s)",
    "yaml.load(s, Loader=yaml.Loader)", "eval('1')", "exec(code)", "from pickle import loads",
    "pickle.Unpickler(f).load()", "shelve.open(p)",
])  # fmt: skip
def test_unsafe_call_detector_finds_each_pattern(source):
    assert unsafe_calls(source)


def test_unsafe_call_detector_accepts_the_safe_forms():
    safe = (
        "torch.load(p, weights_only=True)\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\nm.eval()"
    )
    assert unsafe_calls(safe) == []


@pytest.mark.parametrize("path", HANDLER_SOURCES, ids=lambda p: p.name)
def test_handler_sources_have_no_unsafe_loaders(path):
    assert unsafe_calls(path.read_text()) == []  # importing pickle for its exception type is fine


# --- 6. request size ----------------------------------------------------------------------------


def _limit(server) -> int:
    return int(read_properties(server.run_dir / "config.properties")["max_request_size"])


def test_body_over_the_limit_is_413(server):
    url = urlparse(server.endpoints.inference)
    key = server.tokens.get("inference")
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST {PREDICT_20} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: image/jpeg\r\nContent-Length: {_limit(server) + 1}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    # Without Expect the frontend refuses while the body is still arriving: 413 or a reset, never 200.
    try:
        status = (
            server.client()
            .api.request(
                "POST",
                PREDICT_20,
                data=b"\xff" * (_limit(server) + 1),
                headers={"Content-Type": "image/jpeg"},
            )
            .status_code
        )
    except Exception as err:  # noqa: BLE001 - ServerUnavailable after a connection reset
        status = type(err).__name__
    assert status in (413, "ServerUnavailable")


def test_body_just_under_the_limit_is_served(server):
    jpeg = encode(astronaut())
    body = jpeg + b"\0" * (_limit(server) - 16 - len(jpeg))  # bytes after the JPEG end marker are ignored
    response = server.client(timeout=120).detect_raw(body, version="2.0")
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 512, "height": 512}


# --- the admin instance ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ts-security")
    store = store_with(root / "store", "face_detector-2.0")
    build_escaping_archive(store / "escape-1.0.mar", root / "escape-target")
    instance = launch(
        root / "run",
        enable_model_api="true",
        model_store=str(store),
        load_models="face_detector-2.0.mar",
        token_expiration_min=str(TOKEN_TTL_MIN),
    )
    instance.root = root
    yield instance
    shutdown(instance)
