"""Per-request detector settings of a batch run: options, bounds, header values, and the in-process
scorer passing them to the archive's own pipeline."""

from __future__ import annotations

import pytest

from scripts.batch.cli import build_parser, check_args
from scripts.batch.scorers import InProcessScorer
from scripts.batch.selection import InputFile
from scripts.batch.settings import request_values, settings_flags, settings_from_args
from scripts.cli import UsageError
from scripts.inprocess import ArchivedModel
from tests.support.images import tiny_faces_jpeg
from tests.support.servers import MODEL_STORE, ensure_archives


def parse(*argv: str):
    return build_parser().parse_args(["in", "-o", "out.jsonl", *argv])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {}),  # nothing asked: the model's defaults, nothing sent
        (["--small-faces"], {"small_faces": True}),
        (["--no-small-faces"], {"small_faces": False}),
        (["--score-threshold", "0.3"], {"score_threshold": 0.3}),
        (["--inference-size", "1280"], {"inference_size": 1280}),
        (
            ["--inference-size", "1280.0", "--score-threshold", "1"],
            {"inference_size": 1280, "score_threshold": 1.0},
        ),
    ],
)
def test_settings_from_args(argv: list[str], expected: dict) -> None:
    settings = settings_from_args(parse(*argv))
    assert settings == expected
    assert all(type(settings[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--score-threshold", "2"], "--score-threshold=2 is outside [0.0, 1.0]"),
        (["--score-threshold", "high"], "--score-threshold must be a number between 0.0 and 1.0"),
        (["--inference-size", "32"], "--inference-size=32 is outside [64, 2048]"),
        (["--inference-size", "640.5"], "--inference-size must be a whole number"),
    ],
)
def test_out_of_bounds_settings_are_usage_errors(argv: list[str], words: str) -> None:
    args = parse(*argv)
    with pytest.raises(UsageError) as raised:
        check_args(args)
    assert words in str(raised.value)


@pytest.mark.parametrize(
    ("settings", "headers", "flags"),
    [
        ({}, {}, "no setting options (the model's defaults)"),
        ({"small_faces": True}, {"small_faces": "true"}, "--small-faces"),
        ({"small_faces": False}, {"small_faces": "false"}, "--no-small-faces"),
        (
            {"small_faces": True, "score_threshold": 0.3, "inference_size": 1280},
            {"small_faces": "true", "score_threshold": "0.3", "inference_size": "1280"},
            "--inference-size 1280 --score-threshold 0.3 --small-faces",
        ),
    ],
)
def test_header_values_and_flags(settings: dict, headers: dict, flags: str) -> None:
    assert request_values(settings) == headers
    assert settings_flags(settings) == flags


@pytest.fixture(scope="module")
def model():
    ensure_archives()
    with ArchivedModel(MODEL_STORE / "face_detector-2.0.mar", device="cpu") as loaded:
        yield loaded


def test_inprocess_scorer_passes_the_settings_to_the_pipeline(model: ArchivedModel) -> None:
    """Faces 12 px wide: the full-frame pass finds none, small_faces finds all three."""
    item = InputFile("/in/tiny.jpg", 1.0, 1)
    payload = tiny_faces_jpeg(12)
    (plain,) = InProcessScorer(model, 1).score_batch([item], [payload])
    (tiled,) = InProcessScorer(model, 1, {"small_faces": True}).score_batch([item], [payload])
    (strict,) = InProcessScorer(model, 1, {"small_faces": True, "score_threshold": 0.95}).score_batch(
        [item], [payload]
    )
    assert plain.ok and tiled.ok and strict.ok
    assert len(plain.result.detections) == 0
    assert len(tiled.result.detections) == 3
    # The threshold is applied by the pipeline: exactly the tiled detections scoring 0.95 or more.
    assert strict.result.detections == [d for d in tiled.result.detections if d.score >= 0.95]
