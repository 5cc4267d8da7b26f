"""The browser demo (scripts/demo/) as a person uses it: Debian's Chromium with a fake camera playing the
synthetic moving-faces clip, the demo app, and a real TorchServe.

The TorchServe instance is this module's own (it is stopped and started again on the same ports to
test recovery) with keys that expire every 6 s (``token_expiration_min=0.1``), so the app renews its
tokens while the page runs. Which clip frame an answer belongs to is read from the JPEG the page sent
(tests/support/browser.py): the fake camera loops the clip at its own pace. Screenshots are kept in
build/demo/.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from scripts.demo.app import DemoConfig, is_loopback
from scripts.demo.fakecam import DEMO_CLIP, write_y4m
from scripts.demo.harness import (
    browser_page,
    demo_state,
    recorded_frames,
    recorded_results,
    start_app,
    wait_for,
)
from scripts.paths import REPO
from scripts.server import free_ports, start, wait_ready
from tests.support.browser import FrameFinder, drawn_boxes, faces_found, overlay_mask
from tests.support.images import GRACE_HOPPER_FACE, TRUNCATED_JPEG, grace_hopper_bytes, iou, tiny_faces_jpeg
from tests.support.servers import STARTUP_TIMEOUT_S, Server, launch, shutdown

ARTEFACTS = REPO / "build" / "demo"
MIN_IOU = 0.5
MIN_HIT_SHARE = 0.9
MAX_IN_FLIGHT = 2  # the app's default, which the page takes from /api/config
MIN_RESULTS = 30  # answers to look at before judging the page
BOX_COLOR, LABEL_COLOR, LANDMARK_COLOR = (0, 255, 0), (255, 212, 0), (0, 229, 255)  # static/view.js, RGB
MAX_FRAME_RMS = 12.0  # grey levels: a sent frame this close to a clip frame is that frame (JPEG noise ~2-5)
MAX_PICTURE_DIFF = 8.0  # mean grey levels between a screenshot and the clip frame it shows
ERROR_KEYS = {"code", "type", "message"}


@pytest.fixture(scope="module")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Server:
    instance = launch(tmp_path_factory.mktemp("ts-demo"), token_expiration_min="0.1")
    yield instance
    shutdown(instance)


@pytest.fixture(scope="module")
def app(ts: Server, tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("demo-app")
    with start_app(free_ports(1)[0], ts.run_dir / "config.properties", ts.run_dir / "key_file.json",
                   log_path=logs / "app.log") as process:  # fmt: skip
        yield process


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_y4m(DEMO_CLIP, tmp_path_factory.mktemp("clip") / "faces.y4m")


@pytest.fixture(scope="module")
def page(app, clip: Path, tmp_path_factory: pytest.TempPathFactory):
    """The page with the fake camera, once it has drawn MIN_RESULTS answers."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page(clip, tmp_path_factory.mktemp("chromium"), keep_frames=400) as browser:
        browser.goto(app.url)
        wait_for(browser, f"() => window.__demoRecord.results.length >= {MIN_RESULTS}", timeout=120)
        yield browser


def post_frame(app, body: bytes, content_type: str | None = "image/jpeg", headers=None, **params):
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    return requests.post(f"{app.url}api/frame", data=body, headers=sent, params=params, timeout=30)


# -- the frame endpoint, with plain HTTP ----------------------------------------------------------

JPEG, FORM = "image/jpeg", "application/x-www-form-urlencoded"
UNSUPPORTED, BAD = "unsupported_format", "bad_request"
BAD_FRAMES = {
    # name: (body, content type, query, status, type, words of the message)
    "text content type": (b"hello", "text/plain", {}, 415, UNSUPPORTED, "Content-Type text/plain"),
    "form content type": (b"a=b", FORM, {}, 415, UNSUPPORTED, "image/jpeg"),
    "no content type": (grace_hopper_bytes(), None, {}, 415, UNSUPPORTED, "not accepted"),
    "not an image": (b"plainly not an image" * 20, JPEG, {}, 415, UNSUPPORTED, "not a recognised"),
    "empty body": (b"", JPEG, {}, 400, BAD, "empty request body"),
    "too large": (b"\xff\xd8\xff" + bytes(4 * 1024 * 1024), JPEG, {}, 413, "too_large", "larger than"),
    "threshold above 1": (grace_hopper_bytes(), JPEG, {"threshold": "2"}, 400, BAD, "threshold"),
    "threshold not a number": (grace_hopper_bytes(), JPEG, {"threshold": "x"}, 400, BAD, "threshold"),
    "small_faces=maybe": (grace_hopper_bytes(), JPEG, {"small_faces": "maybe"}, 400, BAD, "true or false"),
    "model name with a slash": (grace_hopper_bytes(), JPEG, {"model": "../x"}, 400, BAD, "model="),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_frame_endpoint_refuses_bad_input_with_json(app, name: str) -> None:
    body, content_type, query, status, reason, words = BAD_FRAMES[name]
    response = post_frame(app, body, content_type, **query)
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == ERROR_KEYS and answer["code"] == status and answer["type"] == reason
    assert words in answer["message"]


def test_frame_endpoint_passes_the_servers_own_4xx_through(app, ts: Server) -> None:
    """A body that looks like a JPEG but is cut short is refused by the handler: same status, same JSON."""
    direct = ts.client().detect_raw(TRUNCATED_JPEG)
    through = post_frame(app, TRUNCATED_JPEG)
    assert direct.status_code == 400 and through.status_code == 400
    assert through.json() == direct.json()


def test_frame_endpoint_answers_detections_of_the_chosen_version(app) -> None:
    for version in ("2.0", "1.0"):
        response = post_frame(app, grace_hopper_bytes(), model="face_detector", version=version)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["model"], answer["version"]) == ("face_detector", version)
        assert any(iou(d["box"], GRACE_HOPPER_FACE) >= MIN_IOU for d in answer["detections"])


def test_models_lists_versions_from_the_management_api(app) -> None:
    models = requests.get(f"{app.url}api/models", timeout=30).json()["models"]
    face = next(m for m in models if m["name"] == "face_detector")
    assert face["default"] == "2.0"
    assert {v["version"] for v in face["versions"]} == {"1.0", "2.0"}
    assert all(v["ready"] and v["workers"] >= 1 for v in face["versions"])


def _hold_slot(app, client: str) -> socket.socket:
    """A frame request whose body is left half sent: its slot stays taken until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", app.port))
    head = (f"POST /api/frame HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: 100000\r\nX-Demo-Client: {client}\r\n\r\n")  # fmt: skip
    sock.sendall(head.encode() + b"\xff\xd8\xff" + bytes(1000))
    return sock


TAB_A = {"X-Demo-Client": "tab-a"}


def test_frame_endpoint_bounds_frames_in_flight_per_client(app) -> None:
    held = [_hold_slot(app, "tab-a") for _ in range(MAX_IN_FLIGHT)]
    try:
        time.sleep(0.5)  # the app has read both headers and counts both frames
        refused = post_frame(app, grace_hopper_bytes(), headers=TAB_A)
        assert refused.status_code == 429, refused.text
        assert set(refused.json()) == ERROR_KEYS and refused.json()["type"] == "too_many_frames"
        other = post_frame(app, grace_hopper_bytes(), headers={"X-Demo-Client": "tab-b"})
        assert other.status_code == 200, other.text
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (answer := post_frame(app, grace_hopper_bytes(), headers=TAB_A)).status_code == 429:
        assert time.monotonic() < deadline, "closed requests still hold their slots"
        time.sleep(0.2)
    assert answer.status_code == 200, answer.text


def test_api_refuses_a_foreign_host_name(app) -> None:
    """DNS rebinding: a page of another site that resolves its name to 127.0.0.1 gets nothing."""
    response = requests.get(f"{app.url}api/models", headers={"Host": f"evil.example:{app.port}"}, timeout=10)
    assert response.status_code == 403 and response.json()["type"] == "forbidden_host"


def test_page_and_api_never_carry_a_torchserve_key(app, ts: Server) -> None:
    keys = [entry["key"] for entry in json.loads((ts.run_dir / "key_file.json").read_text()).values()]
    texts = [requests.get(f"{app.url}{path}", timeout=30).text
             for path in ("", "static/demo.js", "static/index.html", "api/config", "api/models")]  # fmt: skip
    texts.append(post_frame(app, grace_hopper_bytes()).text)
    assert all(key not in text for key in keys for text in texts)


BAD_SETTINGS = {
    # name: (DemoConfig arguments, words of the error)
    "public host without token": ({"host": "0.0.0.0"}, "DEMO_TOKEN"),
    "lan address without token": ({"host": "192.0.2.7"}, "--token"),
    "short token": ({"token": "abc"}, "8 characters"),
    "port out of range": ({"port": 70000}, "--port"),
    "no frame in flight": ({"max_in_flight": 0}, "--max-in-flight"),
    "model name with a slash": ({"default_model": "a/b"}, "model name"),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_settings_are_checked_at_start(name: str) -> None:
    arguments, words = BAD_SETTINGS[name]
    with pytest.raises(ValueError, match=words):
        DemoConfig(**arguments)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("192.0.2.7", False), ("evil.example", False), ("", False)],
)  # fmt: skip
def test_loopback_names(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listening_off_loopback_needs_a_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "DEMO_TOKEN"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "DEMO_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_a_token_when_given_is_required(ts: Server, tmp_path: Path) -> None:
    token = "demo-test-token-1234"
    config, keys = ts.run_dir / "config.properties", ts.run_dir / "key_file.json"
    with start_app(free_ports(1)[0], config, keys, "--token", token, log_path=tmp_path / "app.log") as app:
        refused = post_frame(app, grace_hopper_bytes())
        assert refused.status_code == 401 and refused.json()["type"] == "unauthorized"
        wrong = post_frame(app, grace_hopper_bytes(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = post_frame(app, grace_hopper_bytes(), headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, allowed.text


def test_token_renewal_failure_is_a_readable_error(ts: Server, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_key_file.json"
    config = ts.run_dir / "config.properties"
    with start_app(free_ports(1)[0], config, missing, log_path=tmp_path / "app.log") as app:
        response = post_frame(app, grace_hopper_bytes())
    assert response.status_code == 502, response.text
    answer = response.json()
    assert answer["type"] == "token_error" and str(missing) in answer["message"]


# -- the page in Chromium -----------------------------------------------------------------------


def test_without_a_camera_the_page_says_so(app, tmp_path: Path) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page(None, tmp_path / "chromium") as page:
        page.goto(app.url)
        error = wait_for(page, "() => window.demoState.error", timeout=30)
        assert "No camera is available" in error
        assert page.locator("#message").is_visible() and "No camera" in page.locator("#message").inner_text()
        page.screenshot(path=ARTEFACTS / "no-camera.png")


def test_detections_match_the_known_faces(page) -> None:
    results = recorded_results(page)
    frames = recorded_frames(page)
    finder = FrameFinder(DEMO_CLIP)
    judged, hits = 0, 0
    for result in results:
        if result["seq"] not in frames:
            continue
        index, rms = finder.find(frames[result["seq"]])
        assert rms <= MAX_FRAME_RMS, f"frame {result['seq']} matches no clip frame (RMS {rms:.1f})"
        judged += 1
        hits += faces_found(result["detections"], DEMO_CLIP.faces(index), MIN_IOU)
    assert judged >= MIN_RESULTS, f"only {judged} answers could be matched to a clip frame"
    assert hits / judged >= MIN_HIT_SHARE, f"{hits}/{judged} answers found both faces at IoU >= {MIN_IOU}"


def test_overlay_is_drawn_where_the_faces_are(page) -> None:
    """Screenshot pixels, as a person sees the page: the picture is a frame of the clip, and the box
    outlines drawn on it enclose that frame's faces, one box per face and none elsewhere."""
    video = page.locator("#video")
    scale = video.bounding_box()["width"] / video.evaluate("v => v.videoWidth")  # screen px per video px
    png = page.locator("#stage").screenshot(path=ARTEFACTS / "overlay.png")
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(shot, cv2.COLOR_BGR2RGB)
    outlines = overlay_mask(rgb, BOX_COLOR)
    drawn = overlay_mask(rgb, BOX_COLOR) | overlay_mask(rgb, LABEL_COLOR) | overlay_mask(rgb, LANDMARK_COLOR)
    keep = ~cv2.dilate(drawn.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    index, difference = FrameFinder(DEMO_CLIP).find_picture(shot, keep)
    assert difference <= MAX_PICTURE_DIFF, (
        f"the picture on screen is no clip frame ({difference:.1f} grey levels off)"
    )
    boxes = drawn_boxes(outlines, scale)
    known = DEMO_CLIP.faces(index)
    assert len(boxes) == len(known), f"{len(boxes)} boxes drawn on frame {index} with {len(known)} faces"
    for face in known:
        assert max(iou(face, box) for box in boxes) >= MIN_IOU, (
            f"no box on face {face} of frame {index}: {boxes}"
        )


def test_in_flight_bound_latency_and_rates_shown(page) -> None:
    state = demo_state(page)
    assert 1 <= state["inFlightMax"] <= MAX_IN_FLIGHT
    # The server (tens of ms a frame on 2 shared cores) is slower than the 30 fps camera: frames
    # are dropped rather than queued, and latency stays flat instead of growing with a backlog.
    assert state["framesDropped"] > 0
    latencies = [r["latencyMs"] for r in recorded_results(page)][3:]  # the first answers wait for warm-up
    third = len(latencies) // 3
    early, late = statistics.median(latencies[:third]), statistics.median(latencies[-third:])
    assert late <= 2 * early + 300, f"latency grows: median {early:.0f} ms early, {late:.0f} ms late"
    assert state["fps"] > 0 and state["latencyP50Ms"] > 0
    shown_fps = float(page.locator("#fps").inner_text())
    shown_latency = float(page.locator("#latency").inner_text())
    assert shown_fps > 0 and shown_latency > 0
    assert state["model"] == "face_detector" and state["version"] == "2.0" and state["error"] is None


def test_version_selector_switches_the_served_version(page) -> None:
    options = page.locator("#model option").all_inner_texts()
    assert "face_detector 2.0 (default)" in options and "face_detector 1.0" in options
    page.select_option("#model", "face_detector\t1.0")
    wait_for(page, "() => window.demoState.version === '1.0' && window.demoState.lastDetections.length", 60)
    page.select_option("#model", "face_detector\t2.0")
    wait_for(page, "() => window.demoState.version === '2.0' && window.demoState.lastDetections.length", 60)
    assert page.locator("#served").inner_text().strip() == "face_detector 2.0"


def test_small_faces_box_is_sent_with_every_frame_and_reaches_torchserve(page, app, ts: Server) -> None:
    """The page puts the box's state on every frame it sends (small_faces=true|false), and the app
    passes it to TorchServe: on faces 12 px wide the app's answer is TorchServe's own answer to
    X-Small-Faces (three faces with it, none without)."""

    def frame_with(flag: str):
        return lambda request: "/api/frame?" in request.url and f"small_faces={flag}" in request.url

    with page.expect_request(frame_with("true"), timeout=30_000):
        page.check("#small-faces")
    assert demo_state(page)["smallFaces"] is True
    wait_for(page, "() => window.demoState.lastDetections.length", timeout=60)  # tiled answers drawn
    with page.expect_request(frame_with("false"), timeout=60_000):
        page.uncheck("#small-faces")
    assert demo_state(page)["smallFaces"] is False

    tiny = tiny_faces_jpeg(12)
    found = {}
    for flag in ("true", "false"):
        through = post_frame(app, tiny, small_faces=flag)
        direct = ts.client().detect_raw(tiny, small_faces=flag)
        assert through.status_code == direct.status_code == 200, through.text
        assert through.json()["detections"] == direct.json()["detections"]
        found[flag] = len(through.json()["detections"])
    assert found == {"true": 3, "false": 0}, found


def test_server_outage_is_shown_and_the_page_recovers(page, ts: Server) -> None:
    """Stop TorchServe mid-run, then start it again on the same ports (new keys in key_file.json)."""
    ts.shutdown()
    error = wait_for(page, "() => window.demoState.error", timeout=60)
    assert "TorchServe is not answering" in error
    assert page.locator("#message").is_visible()
    assert demo_state(page)["lastDetections"] == []  # no stale boxes over the moving video
    page.screenshot(path=ARTEFACTS / "outage.png")
    processed = demo_state(page)["framesProcessed"]

    ts.process = start(ts.run_dir / "config.properties", ts.run_dir, foreground=True)
    wait_ready(ts.management(), ts.models, STARTUP_TIMEOUT_S, ts.process)
    wait_for(
        page, "(n) => window.demoState.error === null && window.demoState.framesProcessed > n + 5",
        timeout=120, arg=processed,
    )  # fmt: skip
    assert demo_state(page)["lastDetections"]
    # The selector catches up with the workers that were still loading when frames came back.
    options_ready = (
        "() => ![...document.querySelectorAll('#model option')].some((o) => o.text.includes('not ready'))"
    )
    wait_for(page, options_ready, timeout=30)
    page.screenshot(path=ARTEFACTS / "recovered.png")
