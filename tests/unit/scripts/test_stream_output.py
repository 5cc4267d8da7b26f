"""Drawing, JSONL records, the window checks and the OpenCV build of scripts/stream/output.py."""

from __future__ import annotations

import json
import re
import socket
import time

import cv2
import numpy as np
import pytest

from handlers.schema import Detection, DetectionResult
from scripts.paths import REPO
from scripts.stream.core import FrameResult
from scripts.stream.frames import Frame
from scripts.stream.output import (
    BOX_COLOR,
    LABEL_COLOR,
    LANDMARK_COLORS,
    STATUS_BAND,
    AnnotatedView,
    FpsMeter,
    JsonlSink,
    annotate,
    display_problem,
    draw_detections,
    frame_record,
    label_origin,
    status_line,
    window_support,
)
from tests.support.servers import free_ports

FACE = Detection(
    "face", 0.97, (40.0, 50.0, 90.0, 110.0), [(50.0, 70.0), (80.0, 70.0), (65, 85), (55, 95), (75, 95)]
)
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.MULTILINE)


def item(detections=None, error=None, image=None) -> FrameResult:
    image = np.zeros((120, 160, 3), np.uint8) if image is None else image
    frame = Frame(7, image, 1700000000.5, time.monotonic())
    result = None if error else DetectionResult("face_detector", "2.0", 160, 120, detections or [])
    return FrameResult(frame, result, error, 42.0, 1234)


@pytest.mark.parametrize(
    ("detections", "error", "count"), [([], None, 0), ([FACE], None, 1), (None, "server gone", 0)]
)
def test_frame_record(detections, error, count):
    record = frame_record(item(detections, error))
    assert record["frame"] == 7 and record["captured_at"] == 1700000000.5 and record["latency_ms"] == 42.0
    assert record["error"] == error and len(record["detections"]) == count
    json.dumps(record)


def test_annotate_draws_on_a_copy():
    source = item([FACE])
    image = annotate(source, fps=12.5)
    assert source.frame.image.sum() == 0 and image.sum() > 0
    assert tuple(image[50, 65]) == BOX_COLOR  # top edge of the box
    assert tuple(image[110, 40]) == BOX_COLOR  # bottom left corner
    for (x, y), color in zip(FACE.landmarks, LANDMARK_COLORS):
        assert tuple(image[round(y), round(x)]) == color


@pytest.mark.parametrize(
    ("box", "keep_clear", "expected"),
    [
        ((100, 200, 180, 280), 0, (99, 180)),  # room above: just above the 2 px outline
        ((100, 10, 180, 90), 0, (99, 92)),  # no room above: below the box
        ((100, 40, 180, 120), 300, (99, 122)),  # above would cover the status band: below
        ((400, 40, 480, 120), 300, (399, 20)),  # right of the band: above is fine
        ((100, 5, 180, 475), 0, (99, 7)),  # no room above or below: inside the top edge
        ((630, 200, 639, 240), 0, (560, 180)),  # never off the right edge of the frame
    ],
)
def test_label_tag_goes_next_to_its_box_and_off_the_status_band(box, keep_clear, expected):
    assert label_origin(box, (80, 18), (480, 640), keep_clear) == expected


def test_label_is_dark_text_on_a_tag_of_its_own_colour():
    image = np.full((240, 320, 3), 128, np.uint8)
    draw_detections(image, [FACE])
    tag = image[30:48, 39:100]  # above the box, from its left edge
    assert (tag == LABEL_COLOR).all(axis=2).mean() > 0.5  # mostly tag colour ...
    assert (tag.max(axis=2) < 80).sum() > 30  # ... with dark text on it
    assert not (image == BOX_COLOR).all(axis=2)[30:47, 39:100].any()  # the outline colour is the box's only


def test_status_line_says_frame_fps_and_end_to_end_latency():
    assert status_line(item(), 24.94) == "frame 7  24.9 fps  end-to-end 42 ms"


def test_status_is_white_text_on_a_black_band_whatever_the_scene():
    black, white = (annotate(item(image=np.full((120, 400, 3), v, np.uint8)), fps=12.5) for v in (0, 255))
    band = black[:STATUS_BAND, :200]
    assert (band == white[:STATUS_BAND, :200]).all()  # the scene does not show through
    assert 0.05 < (band.min(axis=2) > 128).mean() < 0.3 and (band == 0).all(axis=2).mean() > 0.6
    assert (band.max(axis=2) == band.min(axis=2)).all()  # grey levels only: white text, antialiased
    assert (white[STATUS_BAND:] == 255).all() and (white[:, 380:] == 255).all()  # the rest untouched


def test_an_error_is_written_in_red_under_the_band():
    image = annotate(item(error="server gone"), fps=0.0)
    assert (image[STATUS_BAND:50] == (0, 0, 255)).all(axis=2).any()


def test_jsonl_sink_writes_one_line_per_result(tmp_path):
    sink = JsonlSink(tmp_path / "out" / "frames.jsonl")
    sink(item([FACE]))
    sink(item(error="timeout"))
    sink.close()
    lines = (tmp_path / "out" / "frames.jsonl").read_text().splitlines()
    assert [json.loads(x)["error"] for x in lines] == [None, "timeout"]


def test_fps_meter():
    meter = FpsMeter(window=2.0)
    assert meter.tick(0.0) == 0.0
    for k in range(1, 11):
        fps = meter.tick(k * 0.1)
    assert fps == pytest.approx(10.0)


def test_annotated_video_is_written(tmp_path):
    view = AnnotatedView(tmp_path / "a.avi", 10.0, display=False)
    for _ in range(3):
        view(item([FACE]))
    view.close()
    capture = cv2.VideoCapture(str(tmp_path / "a.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_the_client_venv_has_a_gui_opencv_of_the_server_images_version():
    """One cv2 per venv: opencv-python here (window), opencv-python-headless in the server image."""
    client = dict(PIN.findall((REPO / "requirements-client.txt").read_text()))
    server = dict(PIN.findall((REPO / "requirements-headless.txt").read_text()))
    assert list(client) == ["opencv-python"] and list(server) == ["opencv-python-headless"]
    assert client["opencv-python"] == server["opencv-python-headless"]
    shared = [name for name, _ in PIN.findall((REPO / "requirements.txt").read_text())]
    assert shared and not [name for name in shared if name.lower().startswith("opencv")]
    assert window_support(), "this venv has no window support: `make venv` installs opencv-python"


def listening_display(number: int) -> socket.socket:
    """A socket where an X server for display ``number`` would listen (Linux abstract namespace)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(f"\0/tmp/.X11-unix/X{number}")
    sock.listen(1)
    return sock


def free_display() -> int:
    for number in range(400, 600):
        try:
            listening_display(number).close()
            return number
        except OSError:
            continue
    raise RuntimeError("no free display number")


def test_display_problem_names_what_is_missing_and_how_to_run_headless():
    number = free_display()
    (port,) = free_ports(1)
    assert "DISPLAY is not set" in display_problem({})
    assert f"no X server answers on DISPLAY=:{number}" in display_problem({"DISPLAY": f":{number}"})
    tcp = f"127.0.0.1:{port - 6000}.0"  # ssh -X style: TCP port 6000 + N, nothing listening
    assert f"no X server answers on DISPLAY={tcp}" in display_problem({"DISPLAY": tcp})
    for env in ({}, {"DISPLAY": f":{number}"}):
        assert "--headless" in display_problem(env)
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}) is None  # Qt told where to draw


def test_a_display_with_a_server_listening_is_fine():
    number = free_display()
    with listening_display(number):
        assert display_problem({"DISPLAY": f":{number}"}) is None
        assert display_problem({"DISPLAY": f"unix:{number}.0"}) is None


def test_a_window_without_a_display_says_how_to_run_headless(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    with pytest.raises(RuntimeError, match="--headless"):
        AnnotatedView(None, 25.0, display=True)
