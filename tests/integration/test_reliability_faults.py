"""Faults (issue 9, cases 9, 10, 11, 14, 15 and the soak's leak check) on an instance of its own.

It serves, with no GPU visible (CUDA_VISIBLE_DEVICES=""):
  face_detector 2.0   the shipped archive
  fault_detector 1.0  face_detector 2.0 with tests/support/fault_handler.py as entry: a request header
                      X-Fault-Sleep-S makes the worker sleep; one worker, batch 1, queue of 2,
                      responseTimeout 3 s (tests/support/fault_archives.py)
  leaky_detector 1.0  the same, keeping 8 MiB per request forever
The last test stops the instance with requests in flight.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests

from scripts import server as server_lib
from scripts.bench.soak import run_soak
from scripts.client import AuthError, ClientError, ServerUnavailable
from scripts.samples import sample_jpeg
from tests.support.fault_archives import FAULT_CONFIG, LEAKY_CONFIG, store_with
from tests.support.images import grace_hopper_bytes
from tests.support.servers import launch, shutdown

READY_WITHIN_S = 15.0
LEAK_KB = 8192


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ts-faults")
    leaky = {**LEAKY_CONFIG, "faults": {"leak_kb_per_request": LEAK_KB}}
    store = store_with(root, ("fault_detector", FAULT_CONFIG), ("leaky_detector", leaky))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "")  # inherited by the frontend and its workers
        instance = launch(
            root / "run",
            model_store=str(store),
            load_models="face_detector-2.0.mar,fault_detector-1.0.mar,leaky_detector-1.0.mar",
        )
    yield instance
    shutdown(instance)


def workers(server, model: str) -> list[dict]:
    return [w for v in server.management().versions(model) for w in v["workers"]]


def wait_for_new_ready_worker(server, model: str, old_pid: int, timeout: float) -> float:
    """Seconds until ``model`` has a READY worker other than ``old_pid``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        current = workers(server, model)
        if current and all(w["status"] == "READY" and w["pid"] != old_pid for w in current):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{model}: no new READY worker within {timeout}s: {workers(server, model)}")


# --- 15. no GPU ----------------------------------------------------------------------------------


def test_models_run_on_cpu_without_a_visible_gpu(faults):
    for model in ("face_detector", "fault_detector"):
        for worker in workers(faults, model):
            assert psutil.Process(worker["pid"]).environ().get("CUDA_VISIBLE_DEVICES") == ""
            assert worker.get("gpu") is False
    log = faults.log()
    assert "loaded face_detector 2.0 on cpu" in log and "loaded fault_detector 1.0 on cpu" in log
    assert " on cuda" not in log
    result = faults.client().detect(grace_hopper_bytes(), version="2.0")
    assert len([d for d in result.detections if d.score >= 0.5]) == 1


# --- 9. worker killed mid-request ----------------------------------------------------------------


def test_worker_killed_mid_request(faults):
    client = faults.client(timeout=60)
    assert client.detect_raw(grace_hopper_bytes(), "fault_detector").status_code == 200
    [worker] = workers(faults, "fault_detector")
    outcome: dict = {}

    def slow_request() -> None:
        try:
            client.detect(grace_hopper_bytes(), "fault_detector", fault_sleep_s=30)
        except ClientError as err:
            outcome["error"] = err

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(1.0)  # the request is in the worker, sleeping
    os.kill(worker["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the killed request hung"
    error = outcome["error"]
    assert error.status in (500, 507) and "Worker died" in str(error)  # 507: the exit code was 137
    recovery_s = wait_for_new_ready_worker(faults, "fault_detector", worker["pid"], READY_WITHIN_S)
    ready_s = time.monotonic() - killed_at
    print(f"\nworker SIGKILLed: READY again after {ready_s:.1f}s (seen by polling after {recovery_s:.1f}s)")
    assert client.detect_raw(grace_hopper_bytes(), "fault_detector").status_code == 200


# --- 10. response timeout ------------------------------------------------------------------------


def test_handler_over_its_response_timeout_is_recovered(faults):
    timeout_s = FAULT_CONFIG["responseTimeout"]
    client = faults.client(timeout=60)
    assert client.detect_raw(grace_hopper_bytes(), "fault_detector").status_code == 200  # worker warm
    [worker] = workers(faults, "fault_detector")
    start = time.monotonic()
    response = client.detect_raw(grace_hopper_bytes(), "fault_detector", fault_sleep_s=3 * timeout_s)
    elapsed = time.monotonic() - start
    assert response.status_code == 500 and "Worker died" in response.text
    assert timeout_s - 0.5 <= elapsed < 2 * timeout_s, f"answered after {elapsed:.1f}s"
    wait_for_new_ready_worker(faults, "fault_detector", worker["pid"], READY_WITHIN_S)
    assert client.detect_raw(grace_hopper_bytes(), "fault_detector").status_code == 200


# --- 11. full queue --------------------------------------------------------------------------------


def test_full_queue_answers_503_at_once(faults):
    def timed_post(_: int) -> tuple[int, float]:
        start = time.monotonic()
        response = faults.client(timeout=60).detect_raw(
            grace_hopper_bytes(), "fault_detector", fault_sleep_s=1.5
        )
        return response.status_code, time.monotonic() - start

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(timed_post, range(10)))
    refused = [seconds for status, seconds in results if status == 503]
    served = [status for status, _ in results if status != 503]
    # One request in the worker plus FAULT_CONFIG["jobQueueSize"] queued; the rest are refused.
    assert len(refused) >= 10 - 1 - FAULT_CONFIG["jobQueueSize"] - 1, results
    assert served and set(served) == {200}, results
    assert max(refused) < 1.0, f"503 answered after {max(refused):.2f}s"
    client = faults.client(timeout=60)
    assert [client.detect_raw(grace_hopper_bytes(), "fault_detector").status_code for _ in range(4)] == [
        200
    ] * 4
    # The retry policy turns a 503 burst into successes when given room (3 retries, 1 s apart at first).
    patient = faults.client(timeout=60, retries=4, backoff=1.0)
    with ThreadPoolExecutor(5) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    patient.detect_raw(grace_hopper_bytes(), "fault_detector", fault_sleep_s=0.5).status_code
                ),
                range(5),
            )
        )
    assert statuses == [200] * 5


# --- 17 (check can fail). the soak's memory check on a leaking handler ----------------------------


def test_soak_memory_check_fails_on_a_leaking_handler(faults):
    java = server_lib.running_pid(faults.run_dir)
    report = run_soak(
        faults.endpoints, faults.tokens, java, "leaky_detector", None, duration_s=12, concurrency=2,
        malformed=6, warmup_s=1, sample_every_s=0.5, image=sample_jpeg(160, 120),
    )  # fmt: skip
    summary = report.to_json()
    assert report.good_failed == 0 and report.malformed_4xx == 6, summary
    assert report.memory is not None and not report.memory.passed, summary
    assert report.memory.growth_mb > 2 * report.memory.limit_mb, summary
    assert not report.passed


# --- 14. stop with requests in flight (last: it stops the instance) -------------------------------


class CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def request(self, *args, **kwargs):
        self.attempts += 1
        return super().request(*args, **kwargs)


def test_stop_with_requests_in_flight(faults):
    retries, backoff = 2, 0.5
    outcomes: dict[int, object] = {}
    sessions = [CountingSession() for _ in range(3)]

    def in_flight(i: int) -> None:
        client = faults.client(timeout=90, retries=retries, backoff=backoff, session=sessions[i])
        try:
            if i < 2:  # one request sleeping in the fault_detector worker, one queued behind it
                outcomes[i] = client.detect(grace_hopper_bytes(), "fault_detector", fault_sleep_s=20)
            else:  # steady traffic on face_detector 2.0 until the server goes away
                while True:
                    outcomes[i] = client.detect(grace_hopper_bytes(), version="2.0")
        except ClientError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=in_flight, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    java = server_lib.running_pid(faults.run_dir)
    start = time.monotonic()
    assert server_lib.stop(faults.run_dir, timeout=60)
    stopped_s = time.monotonic() - start
    faults.process.wait(timeout=30)
    assert not psutil.pid_exists(java) or psutil.Process(java).status() == psutil.STATUS_ZOMBIE
    assert stopped_s < 55, f"the server took {stopped_s:.1f}s to stop"  # stop() kills after 60 s
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    print(f"\nstopped in {stopped_s:.1f}s; client outcomes: {outcomes}")
    for i, outcome in outcomes.items():
        assert isinstance(outcome, ClientError), (i, outcome)  # typed, never a raw requests exception
        assert not isinstance(outcome, AuthError), (i, outcome)  # key_file.json vanishes at stop
        if i < 2 and isinstance(outcome, ServerUnavailable):
            assert sessions[i].attempts == 1 + retries, (i, sessions[i].attempts)
    # A request to the stopped server is retried as the policy says, then fails cleanly.
    session = CountingSession()
    client = faults.client(timeout=5, retries=retries, backoff=backoff, session=session)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable, match="not reachable"):
        client.detect(grace_hopper_bytes(), "face_detector")
    assert session.attempts == 1 + retries
    assert time.monotonic() - start >= backoff * (1 + 2) - 0.05
