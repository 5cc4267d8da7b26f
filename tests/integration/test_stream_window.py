"""The window client as a person sees it: a real X server (Xvfb), a real TorchServe, the client run as
`python -m scripts.stream <clip>` in a real window, keys pressed with xdotool, screenshots of the
whole screen taken with ImageMagick's `import` while it runs.

The clip is the synthetic moving-faces clip (scripts/stream/synthetic.py) at 640x480 and 30 fps,
replayed like a camera (latest-frame). Which clip frame a screenshot shows is read from the picture
(tests/support/browser.py compares it with every clip frame) and from the status line the window
draws, matched pixel for pixel against the status lines the client can write; the boxes on screen
are then checked against that frame's known faces and against the client's own JSONL for it.
Screenshots and the figures of the run are kept in build/window/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from scripts.paths import REPO
from scripts.stream.output import (
    BOX_COLOR,
    LABEL_COLOR,
    LANDMARK_COLORS,
    STATUS_BAND,
    STATUS_FONT,
    WINDOW_TITLE,
    put_status,
)
from scripts.stream.synthetic import SyntheticClip
from tests.support.browser import FrameFinder, drawn_boxes, overlay_mask
from tests.support.images import iou
from tests.support.tools import require

ARTEFACTS = REPO / "build" / "window"
ARCHIVE = REPO / "model_store" / "face_detector-2.0.mar"  # the served default version
CLIP = SyntheticClip(seconds=20.0, fps=30.0, width=640, height=480)  # 600 frames; q comes after ~10 s
SCREEN = (1280, 1024)
MIN_IOU = 0.5
MAX_PICTURE_DIFF = 8.0  # mean grey levels between the window and the clip frame it shows (MJPG noise ~1)
COLOR_TOLERANCE = 8  # per channel: the window shows the drawn pixels 1:1, so a few levels at most
MIN_TAG_SIZE = (60, 14)  # px: a "face 0.99" tag at least this wide and high


def x_env(display: str, server=None) -> dict[str, str]:
    env = dict(os.environ) | {"DISPLAY": display}
    if server is not None:
        env |= {
            "TS_INFERENCE_URL": server.endpoints.inference,
            "TS_MANAGEMENT_URL": server.endpoints.management,
            "TS_GRPC_ADDRESS": server.endpoints.grpc_inference,
            "TS_KEY_FILE": str(server.tokens.key_file),
        }
    return env


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A fresh Xvfb on the first free display number (Xvfb picks it: -displayfd), 24-bit colour."""
    xvfb = require("Xvfb")
    for tool in ("xwininfo", "xdotool", "import"):
        require(tool)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "{}x{}x24".format(*SCREEN), "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)  # written once the server accepts clients
        number = os.read(read_end, 16).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb did not start: {proc.stderr.read1(4000).decode(errors='replace')}"
        assert Path(f"/tmp/.X11-unix/X{number}").exists()
        yield f":{number}"
    finally:
        os.close(read_end)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return CLIP.write(tmp_path_factory.mktemp("clip") / "faces-30fps.avi")


@pytest.fixture(scope="module")
def finder() -> FrameFinder:
    return FrameFinder(CLIP)


def start_client(clip: Path, display: str, server, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scripts.stream", str(clip), "--policy", "latest-frame", *extra]
    return subprocess.Popen(
        cmd, cwd=REPO, env=x_env(display, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def window_geometry(display: str, client: subprocess.Popen, timeout: float = 120.0) -> dict[str, int]:
    """x, y, width, height of the client's window once it is mapped (xwininfo finds it by name)."""
    deadline, settled = time.monotonic() + timeout, False
    while time.monotonic() < deadline:
        if client.poll() is not None:
            pytest.fail(
                f"the client exited ({client.returncode}) before its window showed: {client.stderr.read()}"
            )
        info = subprocess.run(
            ["xwininfo", "-name", WINDOW_TITLE], env=x_env(display), capture_output=True, text=True
        )
        if info.returncode == 0 and "IsViewable" in info.stdout and not settled:
            settled = True  # read it again a moment later: what a person sees once the window is up
            time.sleep(1.0)
            continue
        if info.returncode == 0 and "IsViewable" in info.stdout:
            fields = dict(line.strip().split(": ", 1) for line in info.stdout.splitlines() if ": " in line)
            return {
                "x": int(fields["Absolute upper-left X"]),
                "y": int(fields["Absolute upper-left Y"]),
                "width": int(fields["Width"]),
                "height": int(fields["Height"]),
            }
        time.sleep(0.2)
    pytest.fail(f"no window named {WINDOW_TITLE!r} within {timeout:.0f}s")


def press(display: str, key: str) -> None:
    """Focus the window and type ``key`` into it, as a person would (no window manager here)."""
    subprocess.run(
        ["xdotool", "search", "--name", f"^{WINDOW_TITLE}$", "windowfocus", "--sync", "key", key],
        env=x_env(display), check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def screenshot(display: str, path: Path) -> np.ndarray:
    """The whole screen (root window), BGR (1024, 1280, 3), kept at ``path``."""
    subprocess.run(["import", "-window", "root", str(path)], env=x_env(display), check=True, timeout=60)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (SCREEN[1], SCREEN[0], 3), f"unreadable screenshot {path}"
    return image


def read_status(band: np.ndarray, near_frame: int, latencies: dict[int, float]) -> tuple[int, float, int]:
    """(frame, fps, latency ms) of the status line in ``band`` (the window's top STATUS_BAND rows),
    found by drawing every line the client could have written for the frames around ``near_frame``.

    Compared on the smallest channel: the white text blends the same way over the black band and
    over a green label drawn under it (both have 0 in blue and red)."""
    seen = band.min(axis=2).astype(np.int16)
    for frame in range(max(0, near_frame - 4), near_frame + 5):
        if frame not in latencies:
            continue
        for latency in {int(np.floor(latencies[frame])), int(np.ceil(latencies[frame]))}:
            for tenths in range(0, 1000):
                text = status_line_text(frame, tenths / 10, latency)
                (width, _), _ = cv2.getTextSize(text, *STATUS_FONT)
                drawn = np.zeros((STATUS_BAND, width + 16, 3), np.uint8)
                put_status(drawn, text)
                if np.abs(seen[:, : width + 16] - drawn.min(axis=2)).max() <= COLOR_TOLERANCE:
                    return frame, tenths / 10, latency
    pytest.fail(f"the status line near frame {near_frame} is not 'frame N  F fps  end-to-end L ms'")


def status_line_text(frame: int, fps: float, latency: int) -> str:
    return f"frame {frame}  {fps:.1f} fps  end-to-end {latency} ms"


def check_screenshot(
    screen: np.ndarray, geometry: dict[str, int], finder: FrameFinder, records: dict
) -> dict:
    """Everything a person would look at in one screenshot; returns what was read from it."""
    x, y, w, h = geometry["x"], geometry["y"], geometry["width"], geometry["height"]
    window = screen[y : y + h, x : x + w]
    green = overlay_mask(window, BOX_COLOR, COLOR_TOLERANCE)  # (480, 640) bool
    outside = screen.copy()
    outside[y : y + h, x : x + w] = 0
    assert not overlay_mask(outside, BOX_COLOR, COLOR_TOLERANCE).any(), "box colour outside the window"

    # The "label score" tags: filled rectangles of the label colour with dark text in them.
    tag_mask = overlay_mask(window, LABEL_COLOR, COLOR_TOLERANCE)
    tags = [t for t in drawn_boxes(tag_mask, min_side=4) if t[2] - t[0] >= 10]
    # Which clip frame is on screen: the picture outside the overlay and the status band.
    overlay = cv2.dilate(green.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    for x1, y1, x2, y2 in (map(round, t) for t in tags):
        overlay[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
    for color in LANDMARK_COLORS:
        overlay |= cv2.dilate(overlay_mask(window, color, 60).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    keep = ~overlay
    keep[:STATUS_BAND] = False
    near, picture_diff = finder.find_picture(window, keep)
    assert picture_diff <= MAX_PICTURE_DIFF, (
        f"the window does not show a clip frame (diff {picture_diff:.1f})"
    )

    latencies = {k: r["latency_ms"] for k, r in records.items()}
    frame, fps, latency = read_status(window[:STATUS_BAND], near, latencies)
    assert abs(frame - near) <= 2 and fps > 0
    record = records[frame]
    assert record["error"] is None, record["error"]

    # The boxes on screen: the client's detections of that very frame, on that frame's known faces.
    boxes = drawn_boxes(green, min_side=20)
    detected = [d["box"] for d in record["detections"]]
    assert len(boxes) == len(detected) == len(CLIP.faces(frame)), (boxes, detected)
    for face in CLIP.faces(frame):
        assert max(iou(face, b) for b in boxes) >= MIN_IOU, f"no box on the face at {face} in frame {frame}"
    for box in boxes:
        nearest = min(detected, key=lambda d: sum(abs(a - b) for a, b in zip(d, box)))
        assert np.allclose(box, nearest, atol=3), f"box drawn at {box}, detected at {nearest}"

    # Nothing green elsewhere: every green pixel is on a box outline.
    allowed = np.zeros_like(green)
    for x1, y1, x2, y2 in (map(round, b) for b in boxes):
        allowed[max(0, y1 - 2) : y2 + 3, max(0, x1 - 2) : x2 + 3] = True
    stray = green & ~allowed
    assert not stray.any(), f"{int(stray.sum())} box-coloured pixels away from the faces"

    # One readable tag per box, touching it (above, below or inside its top edge), off the status
    # band, with dark text on it: what a person reads as "face 0.99".
    assert len(tags) == len(boxes), f"{len(tags)} label tags for {len(boxes)} boxes: {tags}"
    status_width = cv2.getTextSize(status_line_text(frame, fps, latency), *STATUS_FONT)[0][0] + 16
    for box in boxes:
        x1, y1, x2, y2 = box
        tag = min(tags, key=lambda t: abs(t[0] - x1) + min(abs(t[3] - y1), abs(t[1] - y2), abs(t[1] - y1)))
        tx1, ty1, tx2, ty2 = tag
        assert tx2 - tx1 >= MIN_TAG_SIZE[0] and ty2 - ty1 >= MIN_TAG_SIZE[1], f"tag {tag} too small"
        assert abs(tx1 - x1) <= 3, f"tag {tag} not aligned with its box {box}"
        assert min(abs(ty2 - y1), abs(ty1 - y2), abs(ty1 - y1)) <= 4, f"tag {tag} not at its box {box}"
        assert not (ty1 < STATUS_BAND and tx1 < status_width), f"tag {tag} covers the status band"
        inside = window[round(ty1) : round(ty2), round(tx1) : round(tx2)].max(axis=2)
        assert (inside < 100).sum() >= 40, f"no dark text on the tag {tag}"

    # Five landmarks per face, each in its colour, inside the box.
    for x1, y1, x2, y2 in (map(round, b) for b in boxes):
        inside = window[y1:y2, x1:x2]
        for color in LANDMARK_COLORS:
            assert overlay_mask(inside, color, COLOR_TOLERANCE).any(), f"landmark {color} missing in a box"
    return {"frame": frame, "fps": fps, "latency_ms": latency, "picture_diff": round(picture_diff, 2)}


def inprocess_latency_ms(runs: int = 40) -> dict[str, float]:
    """The archive's own pipeline, in this process, one 640x480 clip frame (JPEG 90, as the client
    sends it) at a time: the floor under the client's end-to-end latency."""
    from scripts.inprocess import ArchivedModel

    _, jpeg = cv2.imencode(".jpg", CLIP.frame(0), [cv2.IMWRITE_JPEG_QUALITY, 90])
    body = jpeg.tobytes()
    times = []
    with ArchivedModel(ARCHIVE, device="cpu") as model:
        for _ in range(5):  # warm-up: first calls allocate
            model.process([{"body": body}])
        for _ in range(runs):
            start = time.perf_counter()
            (result,) = model.process([{"body": body}])
            times.append((time.perf_counter() - start) * 1000)
            assert len(result.detections) == 2
    ordered = sorted(times)
    return {
        "p50": round(statistics.median(times), 1),
        "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 1),
    }


def test_window_shows_the_faces_boxed_with_fps_and_latency_and_q_quits(server, display, clip_path, finder):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    jsonl, summary = ARTEFACTS / "frames.jsonl", ARTEFACTS / "summary.json"
    client = start_client(clip_path, display, server, "--jsonl", str(jsonl), "--summary-json", str(summary))
    try:
        geometry = window_geometry(display, client)
        assert (geometry["width"], geometry["height"]) == (CLIP.width, CLIP.height), geometry
        shown_at = time.monotonic()
        time.sleep(3.0)  # the server warmed up, the fps meter filled
        shots = [screenshot(display, ARTEFACTS / "screen-1.png")]
        time.sleep(2.0)
        shots.append(screenshot(display, ARTEFACTS / "screen-2.png"))
        time.sleep(max(0.0, 10.0 - (time.monotonic() - shown_at)))
        assert client.poll() is None, "the client ended before q was pressed"
        press(display, "q")
        _, stderr = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, stderr
    assert "frames: read" in stderr and "Traceback" not in stderr

    records = {r["frame"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    seen = [check_screenshot(shot, geometry, finder, records) for shot in shots]
    assert seen[1]["frame"] > seen[0]["frame"], "the window did not move on between the screenshots"

    stats = json.loads(summary.read_text())
    assert stats["read"] < CLIP.frame_count, "q did not stop the run: the whole clip was read"
    assert stats["processed"] > 0 and stats["failed"] == 0
    figures = {
        "window_client": {
            "source": f"{CLIP.width}x{CLIP.height} {CLIP.fps:.0f} fps clip, latest-frame, 2 in flight",
            "seconds": stats["elapsed_s"],
            "processed_fps": stats["fps"],
            "latency_p50_ms": stats["latency_ms"]["p50"],
            "latency_p99_ms": stats["latency_ms"]["p99"],
            "dropped_share": stats["dropped_share"],
        },
        "inprocess_single_image_ms": inprocess_latency_ms(),
        "screenshots": seen,
    }
    (ARTEFACTS / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\nwindow client figures:", json.dumps(figures))


def test_escape_quits(server, display, clip_path):
    client = start_client(clip_path, display, server)
    try:
        window_geometry(display, client)
        time.sleep(1.0)
        press(display, "Escape")
        _, stderr = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 0, stderr
    assert "frames: read" in stderr


def test_a_camera_that_does_not_exist_says_so_and_exits_3(server, display):
    if Path("/dev/video7").exists():
        pytest.skip("this machine has a /dev/video7")
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.stream", "7"], cwd=REPO, env=x_env(display, server),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "camera 7 does not exist: there is no /dev/video7" in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert "[ WARN" not in proc.stderr, "OpenCV's own warnings leaked out"


@pytest.mark.parametrize(
    ("display_value", "message"),
    [(None, "DISPLAY is not set"), (":{free}", "no X server answers on DISPLAY=:{free}")],
)
def test_no_display_says_how_to_run_headless(clip_path, display_value, message):
    free = next(n for n in range(250, 400) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    if display_value is not None:
        env["DISPLAY"] = display_value.format(free=free)
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.stream", str(clip_path)], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr  # USAGE, before any server or camera is tried
    assert message.format(free=free) in proc.stderr and "--headless" in proc.stderr
    assert "Traceback" not in proc.stderr
