"""A batch with bad items leaves nothing behind once its outcomes are dropped.

An input error caught inside the pipeline used to keep its traceback, whose frames reach the batch
and its tensors: a reference cycle that only Python's cyclic collector frees. In a TorchServe
worker that showed as memory growing by tens of MB over a soak with malformed requests mixed in.
These tests run with the collector paused and check that nothing of a processed batch is left for
it to find.
"""

from __future__ import annotations

import gc
import types
from collections.abc import Iterator

import pytest
import torch

from handlers.errors import InputError
from handlers.pipeline import DetectionPipeline
from handlers.retinaface_detector import RetinaFaceDetector
from scripts.packaging.build_archives import ARCHIVES
from tests.support.images import BAD_INPUTS, astronaut, encode

WEIGHTS = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt


@pytest.fixture(scope="module")
def pipeline() -> DetectionPipeline:
    return DetectionPipeline(RetinaFaceDetector(WEIGHTS, "cpu"), "face_detector", "2.0")


def cyclic_garbage(work) -> list[object]:
    """Run ``work()`` with the cyclic collector paused; what only the collector could free after."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # collected objects go to gc.garbage instead of being freed
    try:
        work()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


def tensors_and_frames(objects: list[object]) -> Iterator[object]:
    return (o for o in objects if isinstance(o, (torch.Tensor, types.FrameType)))


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_a_batch_with_a_bad_item_is_freed_without_the_cyclic_collector(pipeline, kind):
    bad_body, status, _ = BAD_INPUTS[kind]
    good = encode(astronaut())

    def work() -> None:
        outcomes = pipeline.process([{"body": good}, {"body": bad_body}, {"body": good}])
        assert isinstance(outcomes[1], InputError) and outcomes[1].status == status
        assert not isinstance(outcomes[0], InputError) and outcomes[0].detections

    left = list(tensors_and_frames(cyclic_garbage(work)))
    assert not left, f"{len(left)} tensors/frames were held in reference cycles, e.g. {left[:3]}"


def test_json_errors_are_freed_without_the_cyclic_collector(pipeline):
    bodies = [b'{"image": "!!not base64!!"}', b"[1, 2, 3]", b"[" * 50000 + b"]" * 50000]

    def work() -> None:
        outcomes = pipeline.process([{"body": b} for b in bodies] + [{"body": encode(astronaut())}])
        assert all(isinstance(o, InputError) for o in outcomes[:-1])

    assert not list(tensors_and_frames(cyclic_garbage(work)))


def test_detached_error_drops_traceback_and_chain():
    try:
        try:
            raise ValueError("inner")
        except ValueError:
            raise InputError("outer") from None
    except InputError as err:
        caught = err
    assert caught.__traceback__ is not None and caught.__context__ is not None
    detached = caught.detached()
    assert detached is caught
    assert (caught.__traceback__, caught.__context__, caught.__cause__) == (None, None, None)
    assert caught.to_json() == {"code": 400, "type": "bad_request", "message": "outer"}
