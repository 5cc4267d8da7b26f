"""Batch scoring end to end against a real TorchServe (the session ``server``) and in-process.

Real public images, a truncated JPEG, a text file and an empty file; a run SIGKILLed midway and
resumed; server and in-process modes compared; date ranges; overlapping runs refused; detector
settings sent with every request and kept for the output.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from scripts.cli import Exit
from scripts.paths import REPO
from tests.support.images import (
    ASTRONAUT_FACE,
    CAMERA_FACE,
    GRACE_HOPPER_FACE,
    astronaut,
    encode,
    grace_hopper_bytes,
    iou,
    tiny_faces_jpeg,
)
from tests.support.servers import Server

MODEL = ["--model", "face_detector", "--version", "2.0"]
EXPECTED_ERRORS = {"corrupt.jpg": "decode", "notes.txt": "unsupported_format", "empty.jpg": "bad_request"}


def batch(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scripts.batch", "--progress", "log", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def server_args(server: Server) -> list[str]:
    return [
        "--url", server.endpoints.inference,
        "--management-url", server.endpoints.management,
        "--key-file", server.run_dir / "key_file.json",
    ]  # fmt: skip


def rows(path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_name = {Path(line["path"]).name: line for line in lines}
    assert len(by_name) == len(lines), "one row per input"
    return by_name


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real photos with a face, one without, and three inputs that must become error rows."""
    root = tmp_path_factory.mktemp("batch-in")
    (root / "grace_hopper.jpg").write_bytes(grace_hopper_bytes())
    (root / "sub").mkdir()
    (root / "sub" / "astronaut.png").write_bytes(encode(astronaut(), "PNG"))
    (root / "sub" / "camera.jpg").write_bytes(encode(skdata.camera()))
    (root / "coffee.jpg").write_bytes(encode(skdata.coffee()))
    (root / "corrupt.jpg").write_bytes(grace_hopper_bytes()[:4000])
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real images (public samples at several sizes and qualities) for kill / overlap runs."""
    root = tmp_path_factory.mktemp("batch-many")
    sources = [astronaut(), skdata.camera(), skdata.coffee(), skdata.chelsea(), np.asarray(Image.open(
        __import__("io").BytesIO(grace_hopper_bytes())).convert("RGB"))]  # fmt: skip
    for i in range(40):
        image = Image.fromarray(sources[i % len(sources)])
        side = 256 + 32 * (i % 8)
        image.thumbnail((side, side))
        (root / f"img{i:02d}.jpg").write_bytes(encode(np.asarray(image), quality=70 + i % 25))
    return root


def test_server_run_scores_images_and_writes_error_rows(server: Server, folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    done = batch(folder, "-o", output, *MODEL, *server_args(server), "--concurrency", "3")
    assert done.returncode == 1, done.stderr  # some inputs failed
    found = rows(output)
    assert sorted(found) == sorted(p.name for p in folder.rglob("*") if p.is_file())
    for name, box in [
        ("grace_hopper.jpg", GRACE_HOPPER_FACE),
        ("astronaut.png", ASTRONAUT_FACE),
        ("camera.jpg", CAMERA_FACE),
    ]:
        row = found[name]
        assert row["status"] == "ok" and row["error"] is None
        assert row["result"]["model"] == "face_detector" and row["result"]["version"] == "2.0"
        assert iou(row["result"]["detections"][0]["box"], box) > 0.5
    assert found["coffee.jpg"]["status"] == "ok"
    for name, reason in EXPECTED_ERRORS.items():
        assert found[name]["status"] == "error" and found[name]["result"] is None
        assert found[name]["error"]["reason"] == reason and not found[name]["error"]["retryable"]
    assert "errors          : 3" in done.stdout and "exit code       : 1" in done.stdout

    again = batch(folder, "-o", output, *MODEL, *server_args(server))  # idempotent rerun
    assert again.returncode == 1 and "scored now      : 0" in again.stdout
    assert rows(output) == found


@pytest.mark.parametrize("fmt", ["csv", "coco"])
def test_server_run_other_formats(server: Server, folder: Path, tmp_path: Path, fmt: str) -> None:
    output = tmp_path / ("out.csv" if fmt == "csv" else "out.json")
    done = batch(folder, "-o", output, *MODEL, *server_args(server))
    assert done.returncode == 1, done.stderr
    inputs = sum(1 for p in folder.rglob("*") if p.is_file())
    if fmt == "csv":
        lines = list(csv.DictReader(output.open()))
        assert len(lines) == inputs
        assert sorted(line["error_reason"] for line in lines if line["status"] == "error") == sorted(
            EXPECTED_ERRORS.values()
        )
    else:
        coco = json.loads(output.read_text())
        assert len(coco["images"]) == inputs and coco["categories"] == [{"id": 1, "name": "face"}]
        assert len(coco["annotations"]) >= 3
        assert sum(image["status"] == "error" for image in coco["images"]) == 3


def test_inprocess_gives_the_same_detections_as_the_server(
    server: Server, folder: Path, tmp_path: Path
) -> None:
    served, local = tmp_path / "server.jsonl", tmp_path / "inprocess.jsonl"
    assert batch(folder, "-o", served, *MODEL, *server_args(server)).returncode == 1
    # As documented: no --version, so the default version's archive (first in load_models: 2.0).
    run = batch(folder, "-o", local, "--model", "face_detector", "--mode", "inprocess", "--device", "cpu")
    assert run.returncode == 1, run.stderr
    assert "face_detector-2.0.mar, the default version" in run.stderr
    a, b = rows(served), rows(local)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name]["status"] == b[name]["status"], name
        if a[name]["status"] == "ok":
            for key in ("model", "version", "image", "detections"):
                assert a[name]["result"][key] == b[name]["result"][key], (name, key)
        else:
            assert (a[name]["error"]["status"], a[name]["error"]["reason"]) == (
                b[name]["error"]["status"],
                b[name]["error"]["reason"],
            ), name


def _journal_rows(output: Path) -> list[dict]:
    journal = output.with_name(f".{output.name}.journal")
    if not journal.exists():
        return []
    lines = journal.read_bytes().split(b"\n")[1:]
    return [json.loads(line) for line in lines if line.strip() and line.endswith(b"}")]


def test_killed_run_resumes_without_duplicates_or_gaps(server: Server, many: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "scripts.batch", many, "-o", output, *MODEL, *server_args(server)]
    proc = subprocess.Popen(
        [*map(str, command), "--concurrency", "1"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(_journal_rows(output)) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(_journal_rows(output))
    assert 5 <= before < 40, "the kill must land midway"
    assert not output.exists(), "no output before every input has a row"

    resumed = batch(many, "-o", output, *MODEL, *server_args(server))
    assert resumed.returncode == 0, resumed.stderr
    found = rows(output)
    assert sorted(found) == sorted(p.name for p in many.iterdir())
    assert all(row["status"] == "ok" for row in found.values())
    journaled = [row["path"] for row in _journal_rows(output)]
    assert len(journaled) == len(set(journaled)) == 40, "nothing scored twice"
    assert f"done before     : {before}" in resumed.stdout


def test_date_range_selects_by_folder_and_by_mtime(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "in"
    jpeg = encode(astronaut())
    for rel in ["2026-11-25/a.jpg", "2026-11-26/b.jpg", "2026/11/26/c.jpg", "2026/11/27/d.jpg", "misc/e.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg)
    stamp = datetime(2026, 11, 26, 12).timestamp()
    os.utime(root / "misc/e.jpg", (stamp, stamp))

    by_folder = tmp_path / "folder-{since}.jsonl"
    run = batch(
        root,
        "-o",
        by_folder,
        "--date-by",
        "folder",
        "--since",
        "2026-11-26",
        "--until",
        "2026-11-26",
        *MODEL,
        *server_args(server),
    )
    assert run.returncode == 0, run.stderr
    assert sorted(rows(tmp_path / "folder-2026-11-26.jsonl")) == ["b.jpg", "c.jpg"]

    by_mtime = tmp_path / "mtime.jsonl"
    run = batch(
        root,
        "-o",
        by_mtime,
        "--since",
        "2026-11-26",
        "--until",
        "2026-11-26T23:59",
        *MODEL,
        *server_args(server),
    )
    assert run.returncode == 0, run.stderr
    assert sorted(rows(by_mtime)) == ["e.jpg"]


def test_overlapping_runs_are_refused(server: Server, many: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    lock = output.with_name(f".{output.name}.lock")
    with open(lock, "a") as held:  # another run holds this output
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = batch(many, "-o", output, *MODEL, *server_args(server))
    assert refused.returncode == Exit.LOCK_HELD and "holds" in refused.stderr
    assert not output.exists() and not _journal_rows(output)

    # Through the cron wrapper, started elsewhere with relative paths (read from where it starts):
    # the second run is refused while the first is still scoring.
    env = {**os.environ, "BATCH_LOCK": str(tmp_path / "cron.lock"), "BATCH_LOG_DIR": str(tmp_path / "logs")}
    wrapper = [
        str(REPO / "scripts/batch/cron.sh"),
        os.path.relpath(many, tmp_path),
        "-o",
        output.name,
        *MODEL,
        *map(str, server_args(server)),
        "--concurrency",
        "1",
    ]
    first = subprocess.Popen(wrapper, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 120
    while not _journal_rows(output) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = subprocess.run(wrapper, cwd=tmp_path, env=env, timeout=60)
    assert first.poll() is None, "the first run must still be going"
    assert second.returncode == Exit.LOCK_HELD
    assert first.wait(timeout=300) == 0
    assert len(rows(output)) == 40
    log = next((tmp_path / "logs").glob("batch-*.log")).read_text()
    assert "not starting (exit 6)" in log and "end: exit 0" in log and "batch_score summary" in log


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--url", "http://127.0.0.1:9"], Exit.UNREACHABLE, "not reachable"),
        (["--version", "9.9"], Exit.REFUSED, "not loaded"),
        (
            ["--key-file", "/nonexistent/key_file.json"],
            Exit.AUTH,
            "/nonexistent/key_file.json does not exist",
        ),
    ],
)
def test_server_trouble_exit_codes(
    server: Server, folder: Path, tmp_path: Path, extra, code: int, message: str
) -> None:
    output = tmp_path / "out.jsonl"
    run = batch(
        folder, "-o", output, "--model", "face_detector", *server_args(server), *extra, "--retries", "0"
    )
    assert run.returncode == code, run.stderr
    assert message in run.stderr
    assert not output.exists()


def test_the_version_answered_is_kept_for_the_output(server: Server, folder: Path, tmp_path: Path) -> None:
    """A run without --version records the version the server answered with: a rerun with that
    --version resumes the output, a rerun with another one is refused with the fix."""
    output = tmp_path / "out.jsonl"
    first = batch(folder, "-o", output, "--model", "face_detector", *server_args(server))
    assert first.returncode == Exit.FAILED_ITEMS, first.stderr
    assert {r["result"]["version"] for r in rows(output).values() if r["result"]} == {"2.0"}

    same = batch(folder, "-o", output, *MODEL, *server_args(server))
    assert same.returncode == Exit.FAILED_ITEMS and "scored now      : 0" in same.stdout, same.stderr

    other = batch(folder, "-o", output, "--model", "face_detector", "--version", "1.0", *server_args(server))
    assert other.returncode == Exit.USAGE and "--version 2.0" in other.stderr


def test_detector_settings_reach_every_request_and_stay_with_the_output(
    server: Server, tmp_path: Path
) -> None:
    """--small-faces and --score-threshold go with every request (server) and into every request
    dict (in-process); the journal records them and a rerun with other settings is refused."""
    root = tmp_path / "in"
    root.mkdir()
    (root / "tiny.jpg").write_bytes(tiny_faces_jpeg(12))  # faces 12 px wide: found only with tiles
    (root / "grace_hopper.jpg").write_bytes(grace_hopper_bytes())
    plain, tiled, local = tmp_path / "plain.jsonl", tmp_path / "tiled.jsonl", tmp_path / "local.jsonl"
    settings = ["--small-faces", "--score-threshold", "0.95"]
    assert batch(root, "-o", plain, *MODEL, *server_args(server)).returncode == 0
    run = batch(root, "-o", tiled, *MODEL, *server_args(server), *settings)
    assert run.returncode == 0, run.stderr
    without, with_settings = rows(plain), rows(tiled)
    assert without["tiny.jpg"]["result"]["detections"] == []
    assert with_settings["tiny.jpg"]["result"]["detections"], "small_faces did not reach the server"
    for row in with_settings.values():
        assert all(d["score"] >= 0.95 for d in row["result"]["detections"])
    assert iou(with_settings["grace_hopper.jpg"]["result"]["detections"][0]["box"], GRACE_HOPPER_FACE) > 0.5
    header = json.loads(tiled.with_name(f".{tiled.name}.journal").read_text().splitlines()[0])
    assert header["settings"] == {"small_faces": True, "score_threshold": 0.95}

    other = batch(root, "-o", tiled, *MODEL, *server_args(server))  # the same output without them
    assert other.returncode == Exit.USAGE
    assert "--score-threshold 0.95 --small-faces" in other.stderr and "no setting options" in other.stderr
    same = batch(root, "-o", tiled, *MODEL, *server_args(server), *settings)
    assert same.returncode == 0 and "scored now      : 0" in same.stdout, same.stderr

    run = batch(root, "-o", local, *MODEL, "--mode", "inprocess", "--device", "cpu", *settings)
    assert run.returncode == 0, run.stderr
    for name, row in rows(local).items():
        assert row["result"]["detections"] == with_settings[name]["result"]["detections"], name
