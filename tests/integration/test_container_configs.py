"""Every container target's TorchServe serves from the files its image holds, started in an empty
working directory as a container starts it.

The image is not built: tests/support/dockerfile.py lays out what the target's COPY lines put where
(configs rendered by the same container_config commands the Dockerfile runs, the same archives), and
tests/support/containers.py moves only absolute image paths and listen addresses. A path the config
gives relative to the repository, or a file the image does not copy, fails here as in the container:
TorchServe hands ``metrics_config`` to every worker, and a worker that cannot open it never becomes
READY.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from scripts.config import read_properties
from scripts.packaging import container_config
from scripts.paths import REPO
from scripts.server import free_ports
from tests.support.containers import TARGETS, lay_out_target, relative_paths, start_target
from tests.support.dockerfile import parse_stages
from tests.support.images import encode, grace_hopper
from tests.support.servers import STARTUP_TIMEOUT_S


def test_every_container_target_is_run_by_an_image():
    assert sorted(TARGETS) == sorted(container_config.TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_path_of_the_config_is_a_file_of_the_image(target, tmp_path):
    """Fast (no server): each path-valued property names something the laid-out image holds."""
    laid = lay_out_target(target, tmp_path)
    props = read_properties(laid.config)
    paths = {k: v for k, v in props.items() if k in container_config.PATH_KEYS}
    assert paths.keys() >= {"model_store", "metrics_config"} and not relative_paths(props)
    missing = {k: v for k, v in paths.items() if not laid.layout.path(v).exists()}
    assert not missing, f"{target}: the image has no {missing}"
    store = laid.layout.path(props["model_store"])
    assert {p.name for p in store.glob("*.mar")} >= set(container_config.archive_files(props))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_serves_from_the_image_layout_in_an_empty_workdir(target, tmp_path):
    run = start_target(target, tmp_path)
    try:
        try:
            run.wait_ready(timeout=STARTUP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as err:
            pytest.fail(f"{target}: {err}\n{run.logs()}")
        statuses = run.worker_statuses()
        versions = container_config.archive_files(run.props)
        assert len(statuses) == len(versions), f"{target}: {statuses} for {versions}"
        assert all(s and set(s) == {"READY"} for s in statuses.values()), f"{target}: {statuses}"
        response = run.predict(encode(grace_hopper()))
        assert response.status_code == 200, f"{target}: {response.status_code} {response.text[:500]}"
        body = response.json()
        result = body["predictions"][0] if "predictions" in body else body  # KServe: one object each
        assert isinstance(result, dict), json.dumps(body)[:500]
        assert result["model"] == "face_detector" and len(result["detections"]) >= 1, json.dumps(body)[:500]
        # The image's log configuration is the one the frontend read (LOG4J_CONFIGURATION_FILE in the
        # Dockerfile's ENV): the request is in the access log, and the jar's default per-request lines
        # (a metric line per handler metric) are not in ts_log.log.
        logs = run.workdir / "logs"
        assert (logs / "access_log.log").read_text().strip(), f"{target}: empty access log"
        assert "result=[METRICS]" not in (logs / "ts_log.log").read_text(), f"{target}: default log config"
    finally:
        run.shutdown()


# --- the kserve image's wrapper in front of that TorchServe ------------------------------------------

# Python of a venv with requirements-kserve.txt: `make test` builds .venv-kserve and sets it.
KSERVE_PYTHON = os.environ.get("KSERVE_PYTHON") or str(REPO / ".venv-kserve" / "bin" / "python")


def wrapper_script(run) -> Path:
    """The wrapper the kserve image's entry point execs, as laid out from the image."""
    entrypoint = parse_stages()["kserve"].exec_form("ENTRYPOINT")
    script = run.layout.path(next(a for a in entrypoint if a.endswith(".sh")))
    exec_line = next(line for line in script.read_text().splitlines() if line.startswith("exec "))
    return run.layout.path(exec_line.split()[-1])


def get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return None


NO_KSERVE = (
    "no kserve venv at {}: kserve cannot share the project's venv (requirements-kserve.txt). "
    "`make test` builds .venv-kserve; by hand: python -m venv .venv-kserve && "
    ".venv-kserve/bin/pip install -r requirements-kserve.txt (or set KSERVE_PYTHON)"
)


def instance(image: bytes, **settings) -> dict:
    return {"data": {"image": base64.b64encode(image).decode(), **settings}}


def check_kserve_predictions(url: str) -> None:
    """KServe v1 through the wrapper and TorchServe's envelope (docs/deployment.md, KServe)."""
    good = encode(grace_hopper())
    response = requests.post(url, json={"instances": [instance(good)]}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    (result,) = response.json()["predictions"]
    assert isinstance(result, dict), response.text[:500]  # an object, not the handler's JSON as a string
    assert result["model"] == "face_detector" and len(result["detections"]) >= 1
    top = max(d["score"] for d in result["detections"])

    # Three instances, the middle one not an image: three entries in order, no 5xx.
    body = {"instances": [instance(good), instance(b"not an image"), instance(good)]}
    response = requests.post(url, json=body, timeout=60)
    assert response.status_code == 200, response.text[:500]
    first, bad, last = response.json()["predictions"]
    assert first["detections"] and last["detections"], response.text[:500]
    assert bad["code"] == 415 and bad["type"] == "unsupported_format" and bad["message"], bad

    # Settings: the header reaches TorchServe through the wrapper; an instance's own field wins.
    above, below = min(1.0, top + 0.005), top - 0.005
    body = {"instances": [instance(good), instance(good, score_threshold=below)]}
    response = requests.post(url, json=body, headers={"X-Score-Threshold": str(above)}, timeout=60)
    assert response.status_code == 200, response.text[:500]
    counts = [len(p["detections"]) for p in response.json()["predictions"]]
    assert counts[0] == 0 and counts[1] >= 1, counts

    # Nothing succeeds: kserve's 400 with the handler's message, not kserve's 500 for a predictor error.
    body = {"instances": [instance(good, score_threshold=7)]}
    response = requests.post(url, json=body, timeout=60)
    assert response.status_code == 400 and "score_threshold=7 is outside" in response.json()["error"], (
        response.status_code,
        response.text[:500],
    )


def test_kserve_wrapper_forwards_and_follows_torchserve_workers(tmp_path):
    if not Path(KSERVE_PYTHON).is_file():
        pytest.fail(NO_KSERVE.format(KSERVE_PYTHON), pytrace=False)
    run = start_target("kserve", tmp_path)
    wrapper = None
    try:
        run.wait_ready(timeout=STARTUP_TIMEOUT_S)
        http_port, grpc_port = free_ports(2)
        env = {**os.environ, "CONFIG_PATH": str(run.config), "MODEL_LOAD_DELAY": "1"}
        with open(tmp_path / "wrapper.out", "wb") as out:
            wrapper = subprocess.Popen(
                [KSERVE_PYTHON, str(wrapper_script(run)), "--http_port", str(http_port),
                 "--grpc_port", str(grpc_port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        base = f"http://127.0.0.1:{http_port}/v1/models/face_detector"
        deadline = time.monotonic() + 120
        while (answer := get(base)) is None or answer.status_code != 200:
            log = (tmp_path / "wrapper.out").read_text()[-3000:]
            assert wrapper.poll() is None and time.monotonic() < deadline, log
            time.sleep(0.5)
        assert answer.json()["ready"] is True

        check_kserve_predictions(f"{base}:predict")

        run.shutdown()  # TorchServe gone: the wrapper's readiness must follow, not stay at its start value
        answer = get(base)
        assert answer is not None and answer.status_code == 503, answer and answer.text
    finally:
        run.shutdown()
        if wrapper is not None:
            wrapper.terminate()
            wrapper.wait(timeout=30)
