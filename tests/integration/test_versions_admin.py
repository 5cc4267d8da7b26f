"""An admin instance (enable_model_api=true): register / unregister from the model store, and
compare / promote / rollback, including a candidate that disagrees (a face_detector 3.0 built with
a score threshold no face can pass) which promote must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from skimage import data as skdata

from scripts.cli import Exit
from scripts.manage import main as manage_main
from scripts.packaging.build_archives import ARCHIVES, ArchiveSpec, build
from tests.support.images import astronaut, encode, grace_hopper_bytes
from tests.support.servers import launch, shutdown, store_with

MODEL = "face_detector"


def write_images(folder: Path) -> Path:
    """Public images: 3 with one face each, 3 without, plus a mirrored and a shrunk face."""
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(encode(astronaut()))
    (folder / "astronaut_mirrored.jpg").write_bytes(encode(astronaut()[:, ::-1].copy()))
    (folder / "grace_hopper.jpg").write_bytes(grace_hopper_bytes())
    (folder / "camera.png").write_bytes(encode(skdata.camera(), "PNG"))
    for name in ("coffee", "chelsea", "rocket"):
        (folder / f"{name}.jpg").write_bytes(encode(getattr(skdata, name)()))
    (folder / "notes.txt").write_text("not an image: skipped")
    return folder


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ts-admin")
    store = store_with(root / "store", "face_detector-1.0", "face_detector-2.0")
    base = ARCHIVES["face_detector-1.0"]
    config = root / "face_detector-3.0.yaml"
    config.write_text(base.config.read_text().replace("score_threshold: 0.7", "score_threshold: 1.0", 1))
    assert "score_threshold: 1.0" in config.read_text()
    build(ArchiveSpec(MODEL, "3.0", base.handler, base.weights, config, "drops every face"), store)
    server = launch(root / "run", enable_model_api="true", model_store=str(store))
    server.images = write_images(root / "images")
    yield server
    shutdown(server)


def manage(server, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    config = server.run_dir / "config.properties"
    code = manage_main(["--config", str(config), "--run-dir", str(server.run_dir), *args])
    out, err = capsys.readouterr()
    return code, out, err


def versions(server) -> set[str]:
    return {str(v["modelVersion"]) for v in server.management().versions(MODEL)}


def test_compare_2_0_and_1_0_agree(admin, capsys):
    code, out, _ = manage(
        admin, capsys, "--json", "compare", MODEL, "2.0", "1.0", "--images", str(admin.images)
    )
    summary = json.loads(out)
    assert code == Exit.OK and summary["passed"]
    assert summary["images"] == 7 and summary["matched"] == 4 and summary["agreement"] == 1.0
    assert summary["latency_ms_a"]["p50"] > 0 and summary["latency_ms_b"]["p50"] > 0
    code, out, _ = manage(admin, capsys, "compare", MODEL, "2.0", "1.0", "--images", str(admin.images))
    assert code == 0 and "PASS: agreement 1.000" in out and "astronaut_mirrored.jpg" in out


def test_register_promote_refuses_disagreeing_candidate_then_unregister(admin, capsys):
    code, out, _ = manage(admin, capsys, "register", "face_detector-3.0.mar")
    assert code == 0 and versions(admin) == {"1.0", "2.0", "3.0"}
    assert admin.client().detect(encode(astronaut()), MODEL, "3.0").detections == []

    code, out, _ = manage(admin, capsys, "promote", MODEL, "3.0", "--images", str(admin.images))
    assert code == Exit.FAILED_ITEMS and "promotion refused" in out and "FAIL: agreement 0.000" in out
    assert admin.management().describe(MODEL)[0]["modelVersion"] == "2.0"

    code, out, _ = manage(admin, capsys, "unregister", MODEL, "3.0")
    assert code == 0 and versions(admin) == {"1.0", "2.0"}


def test_promote_agreeing_candidate_then_rollback(admin, capsys):
    code, out, _ = manage(admin, capsys, "promote", MODEL, "1.0", "--images", str(admin.images))
    assert code == 0 and "promoted: face_detector default 2.0 -> 1.0" in out
    assert admin.client().detect(encode(astronaut())).version == "1.0"
    code, _, err = manage(admin, capsys, "unregister", MODEL, "1.0")
    assert code == Exit.REFUSED and "403" in err  # the default version cannot be removed
    code, out, _ = manage(admin, capsys, "rollback", MODEL)
    assert code == 0 and admin.client().detect(encode(astronaut())).version == "2.0"


def test_register_unknown_archive_is_refused(admin, capsys):
    code, _, err = manage(admin, capsys, "register", "no_such_model-1.0.mar")
    assert code == Exit.REFUSED and "no_such_model-1.0.mar" in err


def test_compare_without_images_is_a_usage_error(admin, capsys, tmp_path):
    code, _, err = manage(admin, capsys, "compare", MODEL, "2.0", "1.0", "--images", str(tmp_path / "none"))
    assert code == Exit.USAGE and "not a folder" in err
