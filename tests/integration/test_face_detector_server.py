"""face_detector 2.0 served by a real TorchServe: accuracy on public images, batching, bad input."""

from __future__ import annotations

import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from skimage import data as skdata

from scripts.client import RequestRejected
from scripts.server import running_pid
from tests.support.images import (
    ASTRONAUT_FACE,
    BAD_INPUTS,
    CAMERA_FACE,
    GRACE_HOPPER_FACE,
    TRUNCATED_JPEG,
    astronaut,
    encode,
    grace_hopper,
    grace_hopper_bytes,
    iou,
)

FAST_REJECT_S = 2.0


def faces_above(result, threshold: float = 0.5):
    return [d for d in result.detections if d.score >= threshold]


def test_astronaut_one_face_with_landmarks_inside(server):
    result = server.client().detect(encode(astronaut()))
    faces = faces_above(result)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) >= 0.7
    assert len(face.landmarks) == 5
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    assert (result.model, result.version) == ("face_detector", "2.0")
    assert (result.width, result.height) == (512, 512)
    assert set(result.timings_ms) == {"decode", "preprocess", "inference", "postprocess"}


def test_grace_hopper_one_face(server):
    faces = faces_above(server.client().detect(grace_hopper_bytes()))
    assert len(faces) == 1
    assert iou(faces[0].box, GRACE_HOPPER_FACE) >= 0.7


def test_grayscale_camera_one_face(server):
    faces = faces_above(server.client().detect(encode(skdata.camera(), "PNG")))
    assert len(faces) == 1
    assert iou(faces[0].box, CAMERA_FACE) >= 0.5


@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_no_face_in_negatives(server, name):
    result = server.client().detect(encode(getattr(skdata, name)()))
    assert faces_above(result) == []


def test_response_is_sorted_clipped_and_schema_exact(server):
    # A low threshold yields many candidates: all must be inside the image and sorted by score.
    image = encode(astronaut()[:150, :220])  # the crop cuts the face: boxes must be clipped
    response = server.client().detect_raw(image, score_threshold=0.0, max_detections=50)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"model", "version", "image", "detections", "timings_ms"}
    scores = [d["score"] for d in body["detections"]]
    assert scores == sorted(scores, reverse=True) and len(scores) == 50
    for det in body["detections"]:
        assert set(det) == {"label", "score", "box", "landmarks"}
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 <= x2 <= 220 and 0 <= y1 <= y2 <= 150


@pytest.mark.parametrize(
    "settings, check",
    [
        ({"score_threshold": 0.9999}, lambda r: all(d.score >= 0.9999 for d in r.detections)),
        ({"score_threshold": 0.01, "max_detections": 3}, lambda r: len(r.detections) == 3),
        ({"inference_size": 256}, lambda r: len(faces_above(r)) == 1),
    ],
)
def test_per_request_overrides(server, settings, check):
    assert check(server.client().detect(encode(astronaut()), **settings))


def test_override_out_of_bounds_is_400(server):
    with pytest.raises(RequestRejected, match=r"score_threshold=1.5 is outside") as err:
        server.client().detect(encode(astronaut()), score_threshold=1.5)
    assert err.value.status == 400


def test_json_base64_and_multipart_bodies(server):
    client = server.client()
    payload = {"image": base64.b64encode(grace_hopper_bytes()).decode(), "score_threshold": 0.6}
    as_json = client.api.request("POST", "/predictions/face_detector", json=payload)
    as_form = client.api.request(
        "POST", "/predictions/face_detector", files={"data": ("g.jpg", grace_hopper_bytes(), "image/jpeg")}
    )
    raw = client.detect(grace_hopper_bytes()).to_json()["detections"]
    assert as_json.status_code == as_form.status_code == 200
    assert as_json.json()["detections"] == as_form.json()["detections"] == raw


def _resized(image: np.ndarray, width: int, height: int) -> bytes:
    return encode(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def test_concurrent_mixed_sizes_batch_like_single_requests(batched_server):
    server = batched_server
    sizes = [(512, 512), (640, 480), (480, 640), (400, 300), (333, 517), (720, 405), (256, 256), (600, 700)]
    images = [_resized(astronaut() if i % 2 else grace_hopper(), w, h) for i, (w, h) in enumerate(sizes)]
    client = server.client()
    singles = [client.detect(img).to_json()["detections"] for img in images]

    # Occupy every worker with a large image so that the 8 requests queue up and are handed over
    # together in batches (batchSize 4 in this variant; the shipped CPU config has 1).
    blocker = encode(cv2.resize(astronaut(), (2400, 2400)))
    workers = len(server.management().describe("face_detector", "2.0")[0]["workers"])
    log_offset = len(server.log())
    with ThreadPoolExecutor(max_workers=8 + workers) as pool:
        busy = [pool.submit(client.detect_raw, blocker, inference_size=2048) for _ in range(workers)]
        time.sleep(0.3)
        futures = [pool.submit(client.detect_raw, img) for img in images]
        responses = [f.result() for f in futures]
        assert all(b.result().status_code == 200 for b in busy)
    assert all(r.status_code == 200 for r in responses)
    batch_sizes = [int(n) for n in re.findall(r"batch of (\d+):", server.log()[log_offset:])]
    assert max(batch_sizes) > 1, f"requests were not batched: {batch_sizes}"
    for single, response in zip(singles, responses):
        batched = response.json()["detections"]
        assert len(batched) == len(single) >= 1
        for a, b in zip(batched, single):
            assert np.allclose(a["box"], b["box"], atol=0.05) and abs(a["score"] - b["score"]) < 1e-3


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_fast_4xx_and_worker_survives(server, name):
    data, status, message = BAD_INPUTS[name]
    pids_before = server.worker_pids()
    start = time.perf_counter()
    response = server.client().detect_raw(data)
    elapsed = time.perf_counter() - start
    assert response.status_code == status
    body = response.json()
    assert body["code"] == status and message in body["message"]
    assert elapsed < FAST_REJECT_S
    assert server.worker_pids() == pids_before
    assert server.client().detect(grace_hopper_bytes()).detections  # still serving


def test_one_pixel_image_is_valid_and_empty(server):
    result = server.client().detect(encode(np.full((1, 1, 3), 128, np.uint8), "PNG"))
    assert (result.width, result.height, result.detections) == (1, 1, [])


def test_one_bad_request_among_good_ones_fails_alone(server):
    client = server.client()
    good = encode(astronaut())
    bodies = [good] * 3 + [TRUNCATED_JPEG] + [good] * 3
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(client.detect_raw, bodies))
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 400, 200, 200, 200]
    assert all(len(faces_above_json(r.json())) == 1 for i, r in enumerate(responses) if i != 3)


def faces_above_json(body: dict, threshold: float = 0.5) -> list:
    return [d for d in body["detections"] if d["score"] >= threshold]


def test_text_content_type_gets_clear_error(server):
    client = server.client()
    response = client.api.request(
        "POST", "/predictions/face_detector", data=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400 and "text" in response.json()["message"]


def test_unknown_model_is_404(server):
    response = requests.post(
        f"{server.endpoints.inference}/predictions/no_such_model",
        data=b"x",
        headers={"Authorization": f"Bearer {server.tokens.get('inference')}"},
        timeout=10,
    )
    assert response.status_code == 404


def test_logs_hold_a_line_per_request_not_twenty(server):
    """monitoring/log4j2.xml (scripts/server.py sets LOG4J_CONFIGURATION_FILE): each request is one
    access-log line and one handler "batch of" line; the frontend's log gets none of the jar
    default's per-request lines (12 metric lines, response times, job ids, each written twice)."""
    logs = server.run_dir / "logs"
    names = ("ts_log.log", "access_log.log", "model_log.log")
    sizes = {name: len((logs / name).read_text()) for name in names}
    client = server.client()
    requests_sent = 10
    for _ in range(requests_sent):
        assert client.detect(grace_hopper_bytes()).detections
    time.sleep(1.0)  # worker lines reach the frontend asynchronously
    added = {name: (logs / name).read_text()[size:] for name, size in sizes.items()}
    assert added["access_log.log"].count("POST /predictions/face_detector") == requests_sent
    assert added["model_log.log"].count("batch of 1:") >= requests_sent
    assert "Backend received inference at" not in added["model_log.log"]
    assert "result=[METRICS]" not in added["ts_log.log"] and "jobId" not in added["ts_log.log"]
    assert added["ts_log.log"].count("\n") < requests_sent, added["ts_log.log"][-2000:]


def test_frontend_hands_requests_to_workers_on_pooled_threads(server):
    """TorchServe passes each batch to its worker with CompletableFuture.runAsync. With the JVM's
    default on a 2-CPU machine (common pool parallelism 1) Java starts a thread per task: one per
    request. config.properties' vmargs sets the pool's parallelism, so the frontend keeps pooled
    threads ("ForkJoinPool.commonPool-worker-N") and reuses them."""
    java = running_pid(server.run_dir)
    assert (
        "-Djava.util.concurrent.ForkJoinPool.common.parallelism=" in Path(f"/proc/{java}/cmdline").read_text()
    )
    client = server.client()
    for _ in range(5):
        assert client.detect(grace_hopper_bytes()).detections
    names = [(task / "comm").read_text().strip() for task in Path(f"/proc/{java}/task").iterdir()]
    assert any(name.startswith("ForkJoinPool.co") for name in names), sorted(set(names))
