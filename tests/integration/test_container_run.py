"""The image built and run for real: `make image-test`, and part of `make test` where dockerd can start.

The CPU image of this checkout is built once per session (BuildKit's layer cache makes an unchanged
rebuild take seconds; a first build takes about 4 minutes, docs/deployment.md) and run with
``--network host`` on free loopback ports (tests/support/docker_run.py). Without a Docker engine the
whole module skips and says why. Figures (cold start, first request) go to build/container-figures.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time

import pytest
import requests

from handlers.schema import DetectionResult
from scripts.paths import REPO
from tests.support import docker_run
from tests.support.docker_run import Container, docker, start_container
from tests.support.images import encode, grace_hopper

pytestmark = pytest.mark.container

NON_ROOT_UID = 10001
STOP_TIMEOUT_S = 30
FIGURES = REPO / "build" / "container-figures.json"
figures: dict[str, float | str] = {}


@pytest.fixture(scope="module")
def engine():
    reason = docker_run.engine_unavailable()
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    short = docker_run.disk_short("face-detection:cpu")
    if short:
        docker_run.stop_engine()
        pytest.skip(f"not enough disk for the image: {short}")
    yield
    docker_run.trim_cache()
    docker_run.stop_engine()


@pytest.fixture(scope="module")
def image(engine) -> str:
    try:
        report = docker_run.build_image()
    except subprocess.CalledProcessError as err:
        pytest.fail(f"docker build failed with {err.returncode}")
    figures.update(image=report["tag"], base_image=report["base_image"], image_mb=report["size_mb"],
                   build_s=report["build_seconds"])  # fmt: skip
    return report["tag"]


@pytest.fixture(scope="module")
def box(image, tmp_path_factory):
    container = start_container(image, tmp_path_factory.mktemp("container"), "fd-test", STOP_TIMEOUT_S)
    try:
        figures["cold_start_to_healthy_s"] = round(container.wait_healthy(), 1)
        yield container
    finally:
        container.remove()
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2) + "\n")


def documented_token_command(container: str) -> str:
    """The shell line of docs/deployment.md ("Tokens in the container") that reads the inference key,
    for the container ``container`` (the docs call it ``fd``)."""
    text = (REPO / "docs" / "deployment.md").read_text()
    section = text.split("### Tokens in the container", 1)[1]
    (line,) = [ln for ln in section.splitlines() if ln.startswith("TOKEN=$(docker exec fd ")]
    return line.replace("docker exec fd ", f"{docker_run.image_build.docker_command()} exec {container} ", 1)


def token(box: Container) -> str:
    done = subprocess.run(["bash", "-c", documented_token_command(box.name) + '\necho "$TOKEN"'],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return done.stdout.strip()


def management_key(box: Container) -> str:
    return json.loads(box.exec("cat", "/home/model-server/key_file.json"))["management"]["key"]


def detect(box: Container, key: str, timeout: float = 60) -> requests.Response:
    return requests.post(f"{box.url('inference')}/predictions/face_detector", data=encode(grace_hopper()),
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "image/jpeg"},
                         timeout=timeout)  # fmt: skip


def test_healthcheck_turns_healthy(box):
    assert box.health() == "healthy"
    health = box.inspect()["Config"]["Healthcheck"]["Test"]
    assert health[0] == "CMD" and health[-3:] == ["-m", "scripts.packaging.container_config", "healthcheck"]


def test_documented_token_gives_the_documented_schema(box):
    key = token(box)
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,}", key), key
    start = time.perf_counter()
    r = detect(box, key)
    figures.setdefault("first_request_ms", round((time.perf_counter() - start) * 1000, 1))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "version", "image", "detections", "timings_ms"}
    result = DetectionResult.from_json(body)
    assert (result.model, result.version, len(result.detections)) == ("face_detector", "2.0", 1)
    assert set(body["detections"][0]) >= {"box", "score"}


def test_requests_without_the_key_are_refused(box):
    r = requests.post(
        f"{box.url('inference')}/predictions/face_detector", data=encode(grace_hopper()), timeout=30
    )
    # TorchServe 0.12.0 answers a missing key with 400 InvalidKeyException (test_security.py).
    assert r.status_code in (400, 401) and r.json()["type"] == "InvalidKeyException", r.text


def test_management_api_lists_both_face_versions(box):
    r = requests.get(f"{box.url('management')}/models/face_detector/all",
                     headers={"Authorization": f"Bearer {management_key(box)}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    versions = {v["modelVersion"]: [w["status"] for w in v["workers"]] for v in r.json()}
    assert sorted(versions) == ["1.0", "2.0"] and all(s and set(s) == {"READY"} for s in versions.values())


def test_metrics_scrape_has_frontend_and_handler_metrics(box):
    assert detect(box, token(box)).status_code == 200
    text = requests.get(f"{box.url('metrics')}/metrics", timeout=30).text
    assert re.search(r'^ts_inference_requests_total\{.*model_name="face_detector".*\} [1-9]', text, re.M), (
        text[:800]
    )
    # Declared in monitoring/ts_metrics.yaml, read from its absolute path in the image by every worker.
    assert re.search(r"^ts_handler_request_latency_seconds_count\{.*\} [1-9]", text, re.M), text[:800]


def test_every_process_runs_as_the_non_root_user(box):
    assert box.inspect()["Config"]["User"].split(":")[0] == str(NON_ROOT_UID)
    # -ww: without it ps cuts args at 80 columns, and a long pid pushes model_service_worker past it.
    top = docker("top", box.name, "-ww", "-eo", "pid,uid,args").stdout.splitlines()[1:]
    assert top and all(line.split()[1] == str(NON_ROOT_UID) for line in top), top
    assert any("java" in line for line in top) and any("model_service_worker" in line for line in top)
    owner, mode = box.exec("stat", "-c", "%u %a", "/home/model-server/key_file.json").split()
    assert (owner, mode) == (str(NON_ROOT_UID), "600")


def test_restart_keeps_what_the_docs_say(box):
    """docs/deployment.md: a restarted container serves the image's models with the image's default
    version again (a version set with set-default is not kept), has new keys, and keeps its logs."""
    mkey = management_key(box)
    old_token = token(box)
    r = requests.put(f"{box.url('management')}/models/face_detector/1.0/set-default",
                     headers={"Authorization": f"Bearer {mkey}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert detect(box, old_token).json()["version"] == "1.0"
    marker = box.exec("sh", "-c", "wc -l < /home/model-server/logs/ts_log.log").strip()
    docker("restart", "-t", str(STOP_TIMEOUT_S), box.name, timeout=STOP_TIMEOUT_S + 60)
    box.started = time.monotonic()
    figures["restart_to_healthy_s"] = round(box.wait_healthy(), 1)
    new_token = token(box)
    assert new_token != old_token
    stale = detect(box, old_token)
    assert stale.status_code in (400, 401) and stale.json()["type"] == "InvalidKeyException", stale.text
    assert detect(box, new_token).json()["version"] == "2.0"
    assert int(box.exec("sh", "-c", "wc -l < /home/model-server/logs/ts_log.log")) > int(marker)


def test_docker_stop_is_graceful(box):
    """SIGTERM: TorchServe stops, the container exits 0 well within the stop timeout, and requests in
    flight are answered or refused cleanly (never left hanging)."""
    key = token(box)
    outcomes: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                outcomes.append(str(detect(box, key, timeout=STOP_TIMEOUT_S).status_code))
            except requests.ConnectionError:
                outcomes.append("refused")
                return
            except requests.Timeout:
                outcomes.append("timeout")
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    seconds = box.stop(STOP_TIMEOUT_S)
    stop.set()
    for t in threads:
        t.join(timeout=STOP_TIMEOUT_S + 10)
    state = box.inspect()["State"]
    figures["stop_s"] = round(seconds, 1)
    assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, box.logs())
    assert seconds < STOP_TIMEOUT_S - 5, seconds
    assert "200" in outcomes and set(outcomes) <= {"200", "503", "refused"}, outcomes


def test_kserve_target_builds(engine):
    report = docker_run.build_image("kserve")
    figures.update(kserve_image_mb=report["size_mb"], kserve_build_s=report["build_seconds"])
    code = "import kserve, importlib.metadata as m; print(m.version('kserve'))"
    venv_python = "/opt/kserve-venv/bin/python"
    done = docker("run", "--rm", "--network", "none", "--entrypoint", venv_python, report["tag"], "-c", code)
    assert done.stdout.strip() == "0.21.0"
    done = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "torchserve", report["tag"], "--version"
    )
    assert "0.12.0" in done.stdout + done.stderr
