"""``DetectionHandler.initialize``/``handle`` and ``DetectionPipeline.process`` without a frontend.

The handler is face_detector 2.0 as shipped: its entry class, its model-config.yaml and its real
weights (build/, the files the archive packs), driven through a fake TorchServe context
(tests/support/fake_context.py) that records per-index statuses, content types and metrics.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import torch
import yaml

from handlers.config import ConfigError
from handlers.errors import InputError
from handlers.face_handler import RetinaFaceHandler
from handlers.schema import DetectionResult
from scripts.packaging.build_archives import ARCHIVES
from tests.support.fake_context import FakeContext
from tests.support.images import ASTRONAUT_FACE, BAD_INPUTS, astronaut, encode, grace_hopper, iou

SPEC = ARCHIVES["face_detector-2.0"]
MODEL_DIR = SPEC.weights.parent  # build/: retinaface_mobile0.25.pt and .onnx, as in the archive
CONFIG = yaml.safe_load(SPEC.config.read_text())
GOOD = encode(astronaut())


@pytest.fixture(scope="module")
def handler(monkeypatch_module: pytest.MonkeyPatch) -> Iterator[RetinaFaceHandler]:
    monkeypatch_module.setenv("DETECTION_FEATURE_LOG", "off")  # metrics on, no files written
    threads = torch.get_num_threads()  # initialize() applies the yaml's torch_threads to this process
    loaded = RetinaFaceHandler()
    loaded.context = FakeContext(MODEL_DIR, CONFIG)  # kept for handle(), as a worker keeps its own
    loaded.initialize(loaded.context)
    yield loaded
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def run(handler: RetinaFaceHandler, bodies: list[bytes], headers: dict | None = None):
    """handle() on raw bodies -> (parsed responses, context)."""
    context = handler.context.new_batch(headers)
    responses = handler.handle([{"body": bytearray(b)} for b in bodies], context)
    return [json.loads(r) for r in responses], context


def test_initialize_builds_the_pipeline_from_the_shipped_config(handler):
    pipeline = handler.pipeline
    assert (pipeline.model_name, pipeline.version) == ("face_detector", "2.0")
    assert pipeline.defaults.score_threshold == CONFIG["handler"]["score_threshold"]
    assert pipeline.detector.backend == "onnxruntime"  # backend: auto, on CPU, with the .onnx present
    assert pipeline.tensor_decode_device is None  # gpu_jpeg_decode is for CUDA only


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("bad_index", [0, 2])
def test_one_bad_item_fails_alone_at_its_index(handler, kind, bad_index):
    bad_body, status, words = BAD_INPUTS[kind]
    bodies = [GOOD, encode(grace_hopper()), GOOD]
    bodies[bad_index] = bad_body
    responses, context = run(handler, bodies)
    assert len(responses) == len(bodies)
    assert list(context.statuses) == [bad_index]
    code, phrase = context.statuses[bad_index]
    assert code == status and words in phrase
    assert responses[bad_index]["code"] == status and words in responses[bad_index]["message"]
    for index, body in enumerate(responses):
        if index != bad_index:
            assert len(body["detections"]) >= 1 and body["model"] == "face_detector"
    assert context.content_types == dict.fromkeys(range(len(bodies)), "application/json")


def test_header_overrides_apply_per_index(handler):
    headers = {
        1: {"X-Score-Threshold": "1.0"},  # no score exceeds 1: no faces
        2: {"x-score-threshold": "0", "x-max-detections": "3"},  # names are case-insensitive
        3: {"X-Score-Threshold": "7"},  # out of bounds: that request's 400
        4: {"X-Inference-Size": "128", "body": {"content-type": "image/jpeg"}},  # + a parameter header
    }
    responses, context = run(handler, [GOOD] * 5, headers)
    assert len(responses) == 5
    counts = [len(r.get("detections", [])) for r in responses]
    assert counts[0] >= 1 and counts[1] == 0 and counts[2] == 3 and counts[4] >= 1
    assert list(context.statuses) == [3] and context.statuses[3][0] == 400
    assert "score_threshold=7 is outside" in context.statuses[3][1]
    assert iou(responses[0]["detections"][0]["box"], ASTRONAUT_FACE) > 0.5
    assert iou(responses[4]["detections"][0]["box"], ASTRONAUT_FACE) > 0.5  # mapped back from 128 px


def test_empty_batch_returns_an_empty_list(handler):
    responses, context = run(handler, [])
    assert responses == [] and context.statuses == {}


def test_handle_records_metrics_per_batch(handler):
    before = len(handler.context.metrics.calls)
    run(handler, [GOOD, b"", GOOD])
    calls = handler.context.metrics.calls[before:]  # this batch's observations only
    assert [value for name, value, _ in calls if name == "ts_handler_batch_size"] == [3]
    assert [dims for name, _, dims in calls if name == "ts_handler_errors"] == [
        ["face_detector", "2.0", "bad_request"]
    ]
    assert [value for name, value, _ in calls if name == "ts_handler_detections_per_image"] == [1, 1]


@pytest.mark.parametrize(
    "request_, expected",
    [
        ({"body": GOOD}, DetectionResult),
        ({"data": bytearray(GOOD)}, DetectionResult),  # multipart field
        ({"body": {"image": base64.b64encode(GOOD).decode(), "max_detections": 1}}, DetectionResult),
        ({"body": {"image": "!!"}}, InputError),
        ({"body": GOOD, "score": "0.3"}, InputError),  # unknown parameter
        ({}, InputError),
    ],
)
def test_process_one_outcome_per_request_in_order(handler, request_, expected):
    outcomes = handler.pipeline.process([{"body": GOOD}, request_, {"body": GOOD}])
    assert len(outcomes) == 3
    assert isinstance(outcomes[1], expected)
    assert all(isinstance(o, DetectionResult) and o.detections for o in (outcomes[0], outcomes[2]))
    if expected is DetectionResult:
        assert (outcomes[1].width, outcomes[1].height) == (512, 512)
        assert set(outcomes[1].timings_ms) == {"decode", "preprocess", "inference", "postprocess"}
    else:
        assert 400 <= outcomes[1].status < 500


@pytest.mark.parametrize(
    "section, message",
    [
        ({"score_treshold": 0.8}, "unknown key 'score_treshold'; did you mean 'score_threshold'?"),
        ({"fp16": "yes"}, "fp16 must be bool (true or false), got 'yes' (str)"),
        ({"min_face_size": 20}, "unknown key 'min_face_size': it belongs to MTCNN"),
    ],
)
def test_initialize_refuses_a_bad_section_with_the_fix(section, message):
    config = {**CONFIG, "handler": {**CONFIG["handler"], **section}}
    threads = torch.get_num_threads()
    with pytest.raises(ConfigError) as err:
        RetinaFaceHandler().initialize(FakeContext(MODEL_DIR, config))
    assert message in str(err.value)
    assert torch.get_num_threads() == threads  # refused before anything was applied
