"""Frame sources (scripts/stream/frames.py): parsing, files, folders, pacing, reconnects, mailbox."""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from scripts.stream.frames import (
    Backoff,
    Frame,
    LatestFrameMailbox,
    Source,
    SourceKind,
    camera_problem,
    read_frames,
    source_fps,
)


def write_video(path, count: int, fps: float = 25.0, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for index in range(count):
        writer.write(np.full((size[1], size[0], 3), index * 10 % 256, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("0", SourceKind.CAMERA), ("12", SourceKind.CAMERA), ("rtsp://cam.local/stream", SourceKind.URL),
     ("HTTP://host/mjpg", SourceKind.URL)],
)  # fmt: skip
def test_parse_cameras_and_urls(spec, kind):
    assert Source.parse(spec).kind is kind
    assert kind.is_live


def test_parse_files_and_folders(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3)
    assert Source.parse(str(video)).kind is SourceKind.FILE
    assert Source.parse(str(tmp_path)).kind is SourceKind.FOLDER
    assert not SourceKind.FILE.is_live and not SourceKind.FOLDER.is_live
    with pytest.raises(ValueError, match="not a camera index"):
        Source.parse(str(tmp_path / "missing.mp4"))


def test_video_file_frames_in_order_then_end(tmp_path):
    video = write_video(tmp_path / "clip.avi", 7, fps=30)
    frames = list(read_frames(Source.parse(str(video))))
    assert [f.index for f in frames] == list(range(7))
    assert frames[0].image.shape == (48, 64, 3)
    assert source_fps(Source.parse(str(video))) == pytest.approx(30)


def test_empty_folder_and_unreadable_files(tmp_path, caplog):
    assert list(read_frames(Source.parse(str(tmp_path)))) == []
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((8, 8, 3), 255, np.uint8))
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    with caplog.at_level(logging.WARNING, logger="stream"):
        frames = list(read_frames(Source.parse(str(tmp_path))))
    assert [int(f.image.mean()) for f in frames] == [255, 0]  # sorted by name: a.jpg, b.png
    assert "c.jpg" in caplog.text


def test_a_file_that_is_not_a_video_is_a_readable_error(tmp_path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="not a video OpenCV can read"):
        list(read_frames(Source.parse(str(bogus))))


def test_pacing_replays_a_file_at_its_rate(tmp_path):
    video = write_video(tmp_path / "clip.avi", 6)
    start = time.monotonic()
    list(read_frames(Source.parse(str(video)), pace_fps=25))
    assert time.monotonic() - start >= 5 / 25 - 0.01


def test_a_lost_live_source_is_retried_with_backoff_then_given_up(caplog):
    source = Source("rtsp://127.0.0.1:9/nothing-here", SourceKind.URL)
    with caplog.at_level(logging.WARNING, logger="stream"), pytest.raises(ConnectionError, match="giving up"):
        list(read_frames(source, backoff=Backoff(0.05, 2, 0.1), give_up_after=0.3))
    assert "reconnecting in 0.1s" in caplog.text


def test_backoff_grows_to_its_cap_and_resets():
    backoff = Backoff(0.5, 2, 3)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    backoff.reset()
    assert backoff.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 2, 1)


def frame(index: int) -> Frame:
    return Frame(index, np.zeros((2, 2, 3), np.uint8), time.time(), time.monotonic())


def test_mailbox_keeps_only_the_newest_frame():
    gate = threading.Event()

    def source():
        for index in range(5):
            yield frame(index)
        gate.set()

    mailbox = LatestFrameMailbox(source()).start()
    gate.wait(5)
    mailbox.join()
    assert mailbox.take(1).index == 4
    assert (mailbox.read, mailbox.dropped) == (5, 4)
    assert mailbox.take(0.1) is None and mailbox.finished


def test_mailbox_wake_returns_without_a_frame_and_errors_are_kept():
    def failing():
        yield frame(0)
        raise ConnectionError("camera unplugged")

    mailbox = LatestFrameMailbox(iter(())).start()
    mailbox.join()
    mailbox.wake()
    assert mailbox.take(1) is None
    broken = LatestFrameMailbox(failing()).start()
    broken.join()
    assert isinstance(broken.error, ConnectionError)


@pytest.mark.parametrize(
    ("devices", "spec", "expected"),
    [
        (
            ["video0", "video2", "video10"],
            "7",
            "cameras found: 0 ({d}/video0), 2 ({d}/video2), 10 ({d}/video10)",
        ),
        ([], "7", "there is no {d}/video7 (cameras found: none)"),
        (["video7"], "7", None),
        (["video0"], "00", None),  # "00" is camera 0
    ],
)
def test_camera_problem_names_the_missing_device_and_the_cameras_there_are(tmp_path, devices, spec, expected):
    for name in devices:
        (tmp_path / name).touch()
    problem = camera_problem(Source.parse(spec), devices=tmp_path)
    if expected is None:
        assert problem is None
    else:
        assert (
            problem.startswith(f"camera {int(spec)} does not exist")
            and expected.format(d=tmp_path) in problem
        )


def test_camera_problem_only_judges_cameras(tmp_path):
    assert camera_problem(Source.parse(str(tmp_path)), devices=tmp_path) is None
    assert camera_problem(Source.parse("rtsp://cam/stream"), devices=tmp_path) is None
