"""Drawing, JSONL records and the window check of scripts/stream/output.py."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from handlers.schema import Detection, DetectionResult
from scripts.stream.core import FrameResult
from scripts.stream.frames import Frame
from scripts.stream.output import AnnotatedView, FpsMeter, JsonlSink, annotate, frame_record

FACE = Detection("face", 0.97, (10.0, 10.0, 40.0, 50.0), [(20.0, 25.0)] * 5)


def item(detections=None, error=None) -> FrameResult:
    frame = Frame(7, np.zeros((60, 80, 3), np.uint8), 1700000000.5, time.monotonic())
    result = None if error else DetectionResult("face_detector", "2.0", 80, 60, detections or [])
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
    assert tuple(image[10, 25]) == (0, 220, 0)  # top edge of the box


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


@pytest.mark.skipif(
    "GUI:                           NONE" not in cv2.getBuildInformation(), reason="GUI OpenCV"
)
def test_a_window_without_gui_support_says_how_to_run_headless():
    with pytest.raises(RuntimeError, match="--headless"):
        AnnotatedView(None, 25.0, display=True)
