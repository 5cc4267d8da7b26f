"""The stream command line without a server: options and help, giving up on a camera or server never
reached (exit 3, bounded), and the summary when no frame was processed."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from scripts.cli import Exit, ToolError
from scripts.client import Endpoints, TokenStore
from scripts.stream.cli import build_parser, connect_server, main, probe_source
from scripts.stream.core import StreamStats
from scripts.stream.frames import Source
from scripts.stream.transport import ModelOptions, make_transport
from tests.support.servers import free_ports


def test_help_states_each_default_once_and_names_the_module():
    parser = build_parser()
    assert parser.prog == "python -m scripts.stream"
    for action in parser._actions:
        if action.option_strings and action.help != "==SUPPRESS==":
            assert action.help, f"{action.option_strings} has no help text"
            assert action.help.count("(default:") <= 1, action.help
    text = parser.format_help()
    assert "(default: None)" not in text and "--model-version" not in text and "--output" not in text


@pytest.mark.parametrize(
    ("argv", "version", "video_out"),
    [
        ([], None, None),
        (["--version", "1.0", "--video-out", "a.mp4"], "1.0", "a.mp4"),
        (["--model-version", "1.0", "--output", "a.mp4"], "1.0", "a.mp4"),  # old spellings still work
    ],
)
def test_version_and_video_out_with_their_old_spellings(argv, version, video_out):
    args = build_parser().parse_args(["0", *argv])
    assert args.version == version
    assert (str(args.video_out) if args.video_out else None) == video_out


@pytest.mark.parametrize("spec", ["7", "http://127.0.0.1:{port}/video.mjpg"])
def test_a_live_source_never_reached_gives_up(spec):
    (port,) = free_ports(1)
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        probe_source(Source.parse(spec.format(port=port)), attempts=2)
    assert err.value.code == Exit.UNREACHABLE and "after 2 attempts" in str(err.value)
    assert time.monotonic() - start < 10


def test_files_and_folders_need_no_probe(tmp_path):
    assert probe_source(Source.parse(str(tmp_path)), attempts=1) is None


def test_a_server_never_reached_gives_up():
    (port,) = free_ports(1)
    endpoints = Endpoints.from_properties({"inference_address": f"http://127.0.0.1:{port}"}, env={})
    transport = make_transport("rest", endpoints, TokenStore(None, endpoints), ModelOptions("face_detector"))
    with pytest.raises(ToolError) as err:
        connect_server(transport, endpoints.inference, attempts=2)
    assert err.value.code == Exit.UNREACHABLE and "not reachable" in str(err.value)


def test_cli_exits_unreachable_without_retrying_forever(tmp_path, monkeypatch, capsys):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    (port,) = free_ports(1)
    monkeypatch.setenv("TS_INFERENCE_URL", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    code = main([str(tmp_path), "--headless", "--connect-attempts", "2", "--jsonl", str(tmp_path / "j")])
    err = capsys.readouterr().err
    assert code == Exit.UNREACHABLE and time.monotonic() - start < 10
    assert err.count("error:") == 1 and "not reachable" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--resize", "big"], ["--jpeg-quality", "0"], ["--connect-attempts", "0"]])
def test_bad_settings_are_usage_errors(tmp_path, capsys, argv):
    assert main([str(tmp_path), "--headless", *argv]) == Exit.USAGE
    assert "error:" in capsys.readouterr().err


def test_summary_without_processed_frames_says_so():
    stats = StreamStats(read=3, sent=3, failed=3, elapsed_s=1.0)
    assert "no frames processed" in stats.summary() and "nan" not in stats.summary()
    assert json.loads(json.dumps(stats.to_json(), allow_nan=False))["latency_ms"]["p50"] is None
