"""face_detector 1.0 (MTCNN) and 2.0 (RetinaFace) side by side on a real TorchServe, driven by the
management CLI (scripts/manage.py). The instance is started and stopped the way `make serve` and
`make stop` do it (python -m scripts.server), so the restart test covers the saved state."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from scripts.cli import Exit
from scripts.client import DetectionClient, Endpoints, TokenStore
from scripts.config import read_properties
from scripts.manage import main as manage_main
from scripts.paths import REPO
from scripts.server import isolated_settings, render_config
from tests.support.images import (
    ASTRONAUT_FACE,
    CAMERA_FACE,
    GRACE_HOPPER_FACE,
    astronaut,
    encode,
    grace_hopper,
    grace_hopper_bytes,
    iou,
)
from tests.support.servers import ensure_archives

MODEL = "face_detector"


@dataclass
class Served:
    run_dir: Path
    config: Path

    def server(self, action: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "scripts.server", action, "--config", str(self.config),
               "--run-dir", str(self.run_dir)]  # fmt: skip
        result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def client(self) -> DetectionClient:
        endpoints = Endpoints.from_properties(read_properties(self.config), env={})
        return DetectionClient(endpoints, TokenStore(self.run_dir / "key_file.json", endpoints))

    def log(self) -> str:
        return (self.run_dir / "logs" / "model_log.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """config.properties as shipped (model API off) on free ports, started like `make serve`."""
    ensure_archives()
    run_dir = tmp_path_factory.mktemp("ts-versions")
    config = render_config(REPO / "config.properties", run_dir / "config.properties", isolated_settings())
    instance = Served(run_dir, config)
    instance.server("start")
    yield instance
    instance.server("stop")


def manage(served: Served, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = manage_main(["--config", str(served.config), "--run-dir", str(served.run_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def listing(served: Served, capsys) -> dict[str, dict]:
    code, out, _ = manage(served, capsys, "--json", "list")
    assert code == Exit.OK
    return {row["version"]: row for row in json.loads(out) if row["model"] == MODEL}


def test_both_versions_load_at_start_and_2_0_is_default(served, capsys):
    rows = listing(served, capsys)
    assert set(rows) == {"1.0", "2.0"}
    assert rows["2.0"]["default"] and not rows["1.0"]["default"]
    code, out, _ = manage(served, capsys, "list")
    assert code == 0 and re.search(r"face_detector\s+2\.0\s+\*", out) and "VERSION" in out


def test_describe_shows_workers_pids_and_queue(served, capsys):
    code, out, _ = manage(served, capsys, "describe", MODEL, "1.0", "--json")  # options after the verb
    (described,) = json.loads(out)
    assert code == 0 and described["modelVersion"] == "1.0"
    assert described["workers"][0]["pid"] > 0 and "pendingRequests" in described["jobQueueStatus"]
    code, out, _ = manage(served, capsys, "describe", MODEL)
    assert code == 0 and "face_detector 2.0 (default)" in out and "queue:" in out and "READY" in out
    # memoryUsage is 0 until TorchServe's first system-metrics sample (every 60 s): never shown as 0.
    rows = [line.split() for line in out.splitlines() if "READY" in line]
    assert rows and all(re.search(r"(\d+ MiB|n/a)$", " ".join(row)) for row in rows), out


def test_global_options_go_before_or_after_the_command(served, capsys):
    before = manage(served, capsys, "--json", "list")
    after = manage(served, capsys, "list", "--json")
    assert before[0] == after[0] == Exit.OK
    assert {r["version"] for r in json.loads(before[1])} == {r["version"] for r in json.loads(after[1])}


def test_key_file_from_ts_key_file(served, capsys, monkeypatch, tmp_path):
    """--run-dir without a key file: TS_KEY_FILE is honoured, as by every other tool."""
    monkeypatch.setenv("TS_KEY_FILE", str(served.run_dir / "key_file.json"))
    code, out, err = manage_in(tmp_path, served, capsys, "list", "--json")
    assert code == Exit.OK, err
    assert {r["version"] for r in json.loads(out)} >= {"1.0", "2.0"}


def test_missing_key_file_says_where_it_looked(served, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TS_KEY_FILE", raising=False)
    code, out, err = manage_in(tmp_path, served, capsys, "list")
    assert code == Exit.AUTH and out == ""
    assert f"{tmp_path.resolve() / 'key_file.json'} does not exist" in err
    assert "make serve" in err and "TS_KEY_FILE" in err and "rejected" not in err


def manage_in(run_dir: Path, served: Served, capsys, *args: str) -> tuple[int, str, str]:
    """manage against ``served`` with another run dir (no key file there)."""
    capsys.readouterr()
    code = manage_main(["--config", str(served.config), "--run-dir", str(run_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


FACES = {"astronaut": (lambda: encode(astronaut()), ASTRONAUT_FACE),
         "grace_hopper": (grace_hopper_bytes, GRACE_HOPPER_FACE),
         "camera": (lambda: encode(skdata.camera(), "PNG"), CAMERA_FACE)}  # fmt: skip


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("name", list(FACES))
def test_each_version_finds_the_face(served, version, name):
    image, expected = FACES[name]
    result = served.client().detect(image(), MODEL, version)
    faces = [d for d in result.detections if d.score >= 0.5]
    assert (result.model, result.version) == (MODEL, version)
    assert len(faces) == 1 and iou(faces[0].box, expected) >= 0.6
    x1, y1, x2, y2 = faces[0].box
    assert len(faces[0].landmarks) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in faces[0].landmarks)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
@pytest.mark.parametrize("name", ["coffee", "chelsea"])
def test_each_version_finds_no_face_in_negatives(served, version, name):
    result = served.client().detect(encode(getattr(skdata, name)()), MODEL, version)
    assert [d for d in result.detections if d.score >= 0.5] == []


def test_1_0_bad_input_is_its_own_4xx(served):
    response = served.client().detect_raw(encode(astronaut())[:5000], MODEL, "1.0")
    assert response.status_code == 400 and "cannot decode JPEG" in response.json()["message"]


def test_1_0_batches_mixed_sizes_like_single_requests(served):
    sizes = [(512, 512), (640, 480), (333, 517), (400, 300), (256, 256), (600, 700)]
    images = [encode(cv2.resize(astronaut() if i % 2 else grace_hopper(), size, interpolation=cv2.INTER_AREA))
              for i, size in enumerate(sizes)]  # fmt: skip
    client = served.client()
    singles = [client.detect(img, MODEL, "1.0").to_json()["detections"] for img in images]
    blocker = encode(cv2.resize(astronaut(), (2000, 2000)))  # keeps the worker busy while the rest queue
    offset = len(served.log())
    with ThreadPoolExecutor(max_workers=len(images) + 1) as pool:
        busy = pool.submit(client.detect_raw, blocker, MODEL, "1.0", inference_size=2048)
        time.sleep(0.3)
        responses = [f.result() for f in [pool.submit(client.detect_raw, i, MODEL, "1.0") for i in images]]
        assert busy.result().status_code == 200
    batch_sizes = [int(n) for n in re.findall(r"batch of (\d+):", served.log()[offset:])]
    assert max(batch_sizes) > 1, f"requests were not batched: {batch_sizes}"
    for single, response in zip(singles, responses):
        batched = response.json()["detections"]
        assert response.status_code == 200 and len(batched) == len(single) >= 1
        for a, b in zip(batched, single):
            assert np.allclose(a["box"], b["box"], atol=0.05) and abs(a["score"] - b["score"]) < 1e-3


def test_set_default_then_rollback(served, capsys):
    client = served.client()
    assert client.detect(encode(astronaut())).version == "2.0"
    code, out, _ = manage(served, capsys, "set-default", MODEL, "1.0")
    assert code == 0 and "2.0 -> 1.0" in out
    assert client.detect(encode(astronaut())).version == "1.0"
    code, out, _ = manage(served, capsys, "rollback", MODEL)
    assert code == 0 and "1.0 -> 2.0" in out
    assert client.detect(encode(astronaut())).version == "2.0"
    code, _, err = manage(served, capsys, "rollback", MODEL)
    assert code == Exit.USAGE and "no earlier default" in err


def test_set_default_to_unknown_version_is_refused(served, capsys):
    code, _, err = manage(served, capsys, "set-default", MODEL, "9.9")
    assert code == Exit.REFUSED and "9.9 does not exist" in err


def test_scale_changes_worker_count(served, capsys):
    code, out, _ = manage(served, capsys, "scale", MODEL, "2", "--version", "1.0")
    assert code == 0 and "scaled to 2" in out
    assert listing(served, capsys)["1.0"]["ready"] == "2/2"
    code, _, _ = manage(served, capsys, "scale", MODEL, "1", "--version", "1.0")
    assert code == 0 and listing(served, capsys)["1.0"]["ready"] == "1/1"


def test_wrong_token_is_a_clear_error(served, capsys, monkeypatch):
    monkeypatch.setenv("TS_MANAGEMENT_KEY", "not-a-key")
    monkeypatch.setenv("TS_API_KEY", "not-a-key-either")
    code, out, err = manage(served, capsys, "list")
    assert code == Exit.AUTH and out == ""
    assert "authentication failed" in err and "token" in err and "key file" in err


def test_register_needs_the_model_api(served, capsys):
    code, _, err = manage(served, capsys, "register", "face_detector-1.0.mar")
    assert code == Exit.REFUSED and "enable_model_api=true" in err


def test_default_and_workers_survive_restart(served, capsys):
    assert manage(served, capsys, "set-default", MODEL, "1.0")[0] == 0
    assert manage(served, capsys, "scale", MODEL, "2", "--version", "1.0")[0] == 0
    untouched = listing(served, capsys)["2.0"]["ready"]  # 2.0 keeps its archive's worker count
    served.server("stop")
    started = served.server("start")
    assert "restored: default face_detector -> 1.0" in started.stdout
    rows = listing(served, capsys)
    assert rows["1.0"]["default"] and rows["1.0"]["ready"] == "2/2" and rows["2.0"]["ready"] == untouched
    assert served.client().detect(encode(astronaut())).version == "1.0"
    # Rollback history survives too.
    assert manage(served, capsys, "rollback", MODEL)[0] == 0
    assert served.client().detect(encode(astronaut())).version == "2.0"
