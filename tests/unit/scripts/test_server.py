"""Pure parts of scripts/server.py: config rendering, model names, optional archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.config import read_properties
from scripts.server import loaded_models, render_config, with_optional_archives


@pytest.mark.parametrize(
    "load_models, names",
    [
        ("", []),
        ("face_detector-2.0.mar", ["face_detector"]),
        ("face_detector-2.0.mar,face_detector-1.0.mar", ["face_detector"]),
        ("face_detector-2.0.mar, object_detector-1.0.mar", ["face_detector", "object_detector"]),
        ("all", []),
    ],
)
def test_loaded_models(load_models, names):
    assert loaded_models({"load_models": load_models}) == names


def test_render_config_replaces_keeps_comments_and_adds(tmp_path):
    base = tmp_path / "base.properties"
    base.write_text("# comment\na=1\nb=2\n")
    out = render_config(base, tmp_path / "out.properties", {"b": "3", "c": "4"})
    assert out.read_text() == "# comment\na=1\nb=3\nc=4\n"
    assert read_properties(out) == {"a": "1", "b": "3", "c": "4"}


def test_optional_archives_are_added_only_when_present(tmp_path):
    store = tmp_path / "model_store"
    store.mkdir()
    config = tmp_path / "config.properties"
    config.write_text("model_store=model_store\nload_models=face_detector-2.0.mar\n")
    assert with_optional_archives(config, tmp_path) == config  # nothing extra: unchanged
    (store / "object_detector-1.0.mar").write_bytes(b"")
    rendered = with_optional_archives(config, tmp_path)
    assert read_properties(rendered)["load_models"] == "face_detector-2.0.mar,object_detector-1.0.mar"


def test_printed_curl_sends_a_file_that_exists_and_grpc_is_shown(tmp_path, capsys, monkeypatch):
    """`make serve` prints a request a user can paste: its @file exists and holds a JPEG with a face."""
    import re

    from scripts import server
    from scripts.config import Endpoints

    class Tokens:
        key_file = tmp_path / "key_file.json"

        def get(self, kind: str) -> str:
            return "KEY"

    monkeypatch.setattr(server, "SAMPLE_IMAGE", tmp_path / "build" / "sample.jpg")
    monkeypatch.setattr(server, "REPO", tmp_path)
    url = "http://127.0.0.1:8080"
    server.print_endpoints(Endpoints(url, url, url), Tokens(), ["face_detector"])
    out = capsys.readouterr().out
    sent = Path(re.search(r"--data-binary @(\S+)", out).group(1))
    assert sent.is_file() and sent.read_bytes()[:3] == b"\xff\xd8\xff"
    assert re.search(r"^grpc: +127\.0\.0\.1:\d+", out, re.MULTILINE)
