"""The archive loader: a .mar run in-process with TorchServe's own loader, imported in isolation."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

import handlers.pipeline
from handlers.errors import InputError
from handlers.schema import DetectionResult
from scripts.inprocess import ArchivedModel, ArchiveError, gpu_for
from tests.support.images import ASTRONAUT_FACE, astronaut, encode, iou
from tests.support.servers import MODEL_STORE, ensure_archives

ARCHIVE = MODEL_STORE / "face_detector-2.0.mar"
NO_CONFIG = {"modelName": "m", "handler": "h.py", "configFile": "c.yaml"}


@pytest.fixture(scope="module")
def model():
    ensure_archives()
    with ArchivedModel(ARCHIVE, device="cpu") as loaded:
        yield loaded


def test_reads_name_version_and_batch_size_from_the_archive(model: ArchivedModel) -> None:
    assert (model.name, model.version) == ("face_detector", "2.0")
    assert model.batch_size == model.config["batchSize"]
    assert model.context.model_yaml_config["handler"]["score_threshold"] == 0.5


def test_runs_the_archive_code_not_the_repository_copy(model: ArchivedModel) -> None:
    pipeline_file = Path(sys.modules[type(model.pipeline).__module__].__file__ or "")
    archived_file = Path(model.modules["handlers.pipeline"].__file__)
    assert archived_file.is_relative_to(model.model_dir)
    assert type(model.pipeline) is not handlers.pipeline.DetectionPipeline
    assert sys.modules["handlers.pipeline"] is handlers.pipeline  # the repository's is back
    assert pipeline_file == Path(handlers.pipeline.__file__)


def test_outcomes_are_this_process_types(model: ArchivedModel) -> None:
    result, error = model.process([{"body": encode(astronaut())}, {"body": b"plain text"}])
    assert isinstance(result, DetectionResult)
    assert iou(result.detections[0].box, ASTRONAUT_FACE) > 0.5
    assert isinstance(error, InputError) and (error.status, error.reason) == (415, "unsupported_format")


@pytest.mark.parametrize("requests", [[], [{"body": b""}]])
def test_empty_batches_and_empty_bodies(model: ArchivedModel, requests: list) -> None:
    outcomes = model.process(requests)
    assert len(outcomes) == len(requests)
    assert all(isinstance(o, InputError) and o.status == 400 for o in outcomes)


def test_detect_bytes_raises_for_bad_input(model: ArchivedModel) -> None:
    with pytest.raises(InputError):
        model.detect_bytes(b"\xff\xd8\xff truncated")


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.mar", "not found"),
        (lambda d: (d / "plain.mar").write_text("hello") and d / "plain.mar", "zip"),
        (lambda d: _zip(d / "empty.mar", {"x.txt": ""}), "MANIFEST"),
        (lambda d: _zip(d / "bad.mar", {"MAR-INF/MANIFEST.json": '{"model": {}}'}), "modelName"),
        (
            lambda d: _zip(
                d / "noconf.mar",
                {
                    "MAR-INF/MANIFEST.json": json.dumps(
                        {"model": {"modelName": "m", "handler": "h.py", "configFile": "c.yaml"}}
                    )
                },
            ),
            "c.yaml",
        ),
    ],
)
def test_rejects_what_is_not_a_usable_archive(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        ArchivedModel(make(tmp_path), device="cpu")


@pytest.mark.parametrize(("device", "expected"), [("cpu", None), ("CPU", None)])
def test_gpu_for(device: str, expected: int | None) -> None:
    assert gpu_for(device) == expected


@pytest.mark.parametrize("device", ["gpu", "", "tpu:0"])
def test_gpu_for_rejects_unknown_devices(device: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu"):
        gpu_for(device)
