"""The drift command lines without a server: the profile is never overwritten silently, and --since /
--until take the date forms of the batch tool as well as epoch seconds."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from scripts.cli import Exit
from scripts.drift import cli as drift
from scripts.drift import profile

DAY = datetime(2026, 11, 26, 12).timestamp()


def write_log(folder: Path, count: int = 60, ts: float = DAY) -> Path:
    """A feature log as the handler writes it: one JSON line per request."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        {"ts": ts + i, "model": "face_detector", "version": "2.0", "width": 640, "height": 480,
         "brightness": float(rng.normal(120, 20)), "contrast": float(rng.normal(50, 5)),
         "sharpness": float(rng.normal(30, 4)), "detections": 1, "score": [float(rng.uniform(0.8, 1))],
         "box_size": [float(rng.uniform(0.1, 0.3))]}
        for i in range(count)
    ]  # fmt: skip
    (folder / "features-1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_profile_refuses_to_overwrite_without_force(tmp_path, capsys):
    log = write_log(tmp_path / "features")
    out = tmp_path / "reference_profile.json"
    out.write_text("tracked reference\n")
    code = profile.main(["log", str(log), "--out", str(out)])
    assert code == Exit.USAGE and out.read_text() == "tracked reference\n"
    assert "--force" in capsys.readouterr().err

    assert profile.main(["log", str(log), "--out", str(out), "--force"]) == Exit.OK
    assert json.loads(out.read_text())["images"] == 60


def test_profile_writes_a_new_file_without_force(tmp_path):
    out = tmp_path / "new.json"
    assert profile.main(["log", str(write_log(tmp_path / "f")), "--out", str(out)]) == Exit.OK
    assert json.loads(out.read_text())["model"] == "face_detector"


def test_the_default_out_is_the_tracked_profile_and_needs_force(capsys):
    assert profile.build_parser().parse_args(["log", "x"]).out == drift.DEFAULT_PROFILE
    assert drift.DEFAULT_PROFILE.exists()
    before = drift.DEFAULT_PROFILE.read_bytes()
    assert profile.main(["log", "nowhere"]) == Exit.USAGE
    assert drift.DEFAULT_PROFILE.read_bytes() == before


@pytest.mark.parametrize(
    ("since", "until", "images"),
    [
        ("2026-11-26", "2026-11-26", 60),  # the whole day, as batch --since/--until read it
        (str(int(DAY)), str(int(DAY) + 30), 30),  # epoch seconds, as before
        ("2026-11-26T12:00:30", None, 30),
        ("2026-11-27", None, 0),
    ],
)
def test_profile_log_window_takes_dates_and_epochs(tmp_path, since, until, images):
    out = tmp_path / "p.json"
    argv = ["log", str(write_log(tmp_path / "f")), "--out", str(out), "--since", since]
    argv += ["--until", until] if until else []
    code = profile.main(argv)
    if images:
        assert code == Exit.OK and json.loads(out.read_text())["images"] == images
    else:
        assert code == Exit.USAGE and not out.exists()


def test_report_rejects_a_date_it_cannot_read(capsys):
    with pytest.raises(SystemExit) as caught:  # argparse: exit 2 with the accepted forms
        drift.main(["report", "--since", "soon"])
    assert caught.value.code == Exit.USAGE and "yesterday" in capsys.readouterr().err


def test_report_without_a_profile_is_a_usage_error(capsys):
    assert drift.main(["report", "--profile", "/nowhere.json"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.startswith("python -m scripts.drift: error: cannot read the reference profile")


def test_report_reads_the_window_from_dates(tmp_path, capsys):
    log = write_log(tmp_path / "f")
    ref = tmp_path / "ref.json"
    assert profile.main(["log", str(log), "--out", str(ref)]) == Exit.OK
    code = drift.main(["report", "--profile", str(ref), "--log-dir", str(log), "--since", "2026-11-26",
                       "--until", "2026-11-26", "--fail-on-drift"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == Exit.OK and "60 images from 2026-11-26 00:00:00, 86400s window" in out
