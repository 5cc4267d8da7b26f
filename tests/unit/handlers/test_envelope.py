"""``DetectionHandler.handle`` called through TorchServe's own KServe envelope
(ts/torch_handler/request_envelope/kserve.py, what ``service_envelope=kserve`` wraps around the
handler in a worker), driven by a fake context (tests/support/fake_context.py) with ONE request, as
TorchServe hands the envelope under the kserve target's batchSize 1.

The envelope passes the handler the ``instances`` of request 0 and wraps what it returns as
``[{"predictions": [...]}]``: every instance must come back as an object in its place, statuses and
headers must only ever touch index 0, and one bad instance must not fail the others.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import yaml
from ts.torch_handler.request_envelope.kserve import KServeEnvelope

from handlers.face_handler import RetinaFaceHandler
from handlers.ts_adapter import SETTING_HEADERS, called_by_kserve_envelope
from scripts.packaging.build_archives import ARCHIVES
from scripts.paths import REPO
from tests.support.fake_context import FakeContext
from tests.support.images import TRUNCATED_JPEG, astronaut, encode

SPEC = ARCHIVES["face_detector-2.0"]
CONFIG = yaml.safe_load(SPEC.config.read_text())
GOOD = base64.b64encode(encode(astronaut())).decode()


@pytest.fixture(scope="module")
def handler() -> Iterator[RetinaFaceHandler]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTION_FEATURE_LOG", "off")  # metrics on, no files written
        threads = torch.get_num_threads()  # initialize() applies the yaml's torch_threads
        loaded = RetinaFaceHandler()
        loaded.context = FakeContext(SPEC.weights.parent, CONFIG)
        loaded.initialize(loaded.context)
        yield loaded
        torch.set_num_threads(threads)


def through_envelope(handler: RetinaFaceHandler, body: Any, headers: dict[str, str] | None = None):
    """One KServe v1 request (JSON body, already decoded by the frontend) -> (predictions, context)."""
    context = handler.context.new_batch({0: headers} if headers else None)
    answer = KServeEnvelope(handler.handle).handle([{"body": body}], context)
    assert isinstance(answer, list) and len(answer) == 1  # one response for the one request
    return answer[0]["predictions"], context


def instance(image: str = GOOD, **settings: Any) -> dict[str, Any]:
    return {"data": {"image": image, **settings}}


def test_predictions_are_objects_not_json_strings(handler):
    predictions, context = through_envelope(handler, {"instances": [instance()]})
    (result,) = predictions
    assert isinstance(result, dict) and result["model"] == "face_detector"
    assert len(result["detections"]) >= 1
    assert context.statuses == {} and context.content_types == {0: "application/json"}


@pytest.mark.parametrize("bad_at", [0, 1, 2])
def test_one_bad_instance_of_three_fails_alone(handler, bad_at):
    instances = [instance() for _ in range(3)]
    instances[bad_at] = instance(base64.b64encode(TRUNCATED_JPEG).decode())
    predictions, context = through_envelope(handler, {"instances": instances})
    assert len(predictions) == 3
    for idx, prediction in enumerate(predictions):
        if idx == bad_at:
            assert prediction["code"] == 400 and prediction["type"] and prediction["message"]
        else:
            assert prediction["model"] == "face_detector" and prediction["detections"]
    # The request succeeded as a whole; no status or header was set for an index that is no request.
    assert context.statuses == {} and set(context.content_types) == {0}


def test_per_instance_score_threshold_is_honoured_and_wins_over_the_header(handler):
    (first,), _ = through_envelope(handler, {"instances": [instance()]})
    top = max(d["score"] for d in first["detections"])
    above, below = min(1.0, top + 0.005), top - 0.005
    instances = [instance(), instance(score_threshold=below), instance(score_threshold=above)]
    predictions, _ = through_envelope(handler, {"instances": instances}, {"X-Score-Threshold": str(above)})
    counts = [len(p["detections"]) for p in predictions]
    # 0: the request's header applies; 1: its own lower threshold wins; 2: its own higher one.
    assert counts[0] == 0 and counts[1] >= 1 and counts[2] == 0, counts
    assert all(d["score"] >= below for d in predictions[1]["detections"])


@pytest.mark.parametrize(
    ("body", "count", "message"),
    [
        ({"instances": []}, 1, "non-empty list"),
        ({"inputs": [instance()]}, 1, '"instances"'),
        ({"instances": "not a list"}, 1, "non-empty list"),
        ({"instances": ["aGVsbG8="]}, 1, "instance 0 is a str"),
        ({"instances": [instance("!!not base64!!"), 42]}, 2, "base64"),
        ({"instances": [instance(score_threshold=7)]}, 1, "score_threshold=7 is outside"),
    ],
)
def test_a_request_with_no_good_instance_is_a_4xx_with_one_error_per_instance(handler, body, count, message):
    predictions, context = through_envelope(handler, body)
    assert len(predictions) == count and all(p["code"] == 400 for p in predictions)
    # The first instance's error is the request's status and phrase (a lone bad image answers as on
    # the bare API).
    assert list(context.statuses) == [0] and context.statuses[0][0] == 400
    assert message in context.statuses[0][1] and message in predictions[0]["message"]


def test_the_bare_api_still_answers_json_strings_per_request(handler):
    context = handler.context.new_batch()
    answer = handler.handle([{"body": bytearray(encode(astronaut()))}], context)
    assert isinstance(answer[0], str) and not called_by_kserve_envelope(depth=1)


def test_the_wrapper_forwards_exactly_the_setting_headers():
    spec = importlib.util.spec_from_file_location(
        "kserve_wrapper_settings_envelope", REPO / "deploy" / "kserve" / "wrapper" / "settings.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert sorted(module.FORWARDED_HEADERS) == sorted(SETTING_HEADERS)
