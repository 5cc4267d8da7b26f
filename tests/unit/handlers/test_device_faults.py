"""Device failures on the tensor-decode path are server faults, never a client's 400.

The device is the CPU here (``tensor_decode_device`` forced to "cpu", the code nvJPEG feeds on a
GPU), and the failures are the exceptions PyTorch raises on CUDA, injected where the device is
called (torchvision's ``decode_jpeg``, a detector stage). The status a client would get is TorchServe's
own: its ``ts.service.Service.predict`` wraps the handler exactly as a worker does. A broken CUDA
context makes the worker exit (checked in a child process, which really exits), so that TorchServe
answers 500 and starts a new one.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import ts
import yaml
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.service import Service

import handlers.tensor_decode as tensor_decode
import handlers.ts_adapter as ts_adapter
from handlers.errors import InputError
from handlers.face_handler import RetinaFaceHandler
from handlers.tensor_decode import DeviceFault, is_broken_context, is_device_fault
from scripts.packaging.build_archives import ARCHIVES
from scripts.paths import REPO
from tests.support.fake_context import FakeContext
from tests.support.images import astronaut, encode

SPEC = ARCHIVES["face_detector-2.0"]
CONFIG = yaml.safe_load(SPEC.config.read_text())
GOOD = encode(astronaut())
JPEG = "image/jpeg"
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.72 GiB total capacity)"
ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[RetinaFaceHandler]:
    """face_detector 2.0 as shipped, with the tensor-decode path forced onto the CPU."""
    monkeypatch.setenv("DETECTION_METRICS", "off")
    monkeypatch.setattr(ts_adapter, "tensor_decode_device", lambda device, config: torch.device("cpu"))
    threads = torch.get_num_threads()
    loaded = RetinaFaceHandler()
    loaded.initialize(FakeContext(SPEC.weights.parent, CONFIG))
    assert loaded.pipeline.tensor_decode_device == torch.device("cpu")
    yield loaded
    torch.set_num_threads(threads)


def served_status(handler: RetinaFaceHandler, bodies: list[bytes]) -> tuple[int, bytes]:
    """(status, raw response) TorchServe's worker code produces for one batch through ``handler``."""
    cache = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    cache.initialize_cache()
    service = Service(
        "face_detector", str(SPEC.weights.parent), None, handler.handle, None, 8, metrics_cache=cache
    )
    service.set_cl_socket(None)
    batch = [
        {
            "requestId": f"r{i}".encode(),
            "parameters": [{"name": "body", "value": b, "contentType": "image/jpeg"}],
        }
        for i, b in enumerate(bodies)
    ]
    response = bytes(service.predict(batch))
    return struct.unpack("!i", response[:4])[0], response


def fail_with(exc: BaseException):
    def _raise(*args, **kwargs):
        raise exc

    return _raise


@pytest.mark.parametrize(
    ("err", "device_fault", "broken"),
    [
        (torch.OutOfMemoryError(OOM), True, False),
        (MemoryError(), True, False),
        (torch.AcceleratorError(ILLEGAL_ACCESS), True, True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling cublasCreate"), True, True),
        (RuntimeError("nvjpeg status NVJPEG_STATUS_EXECUTION_FAILED"), True, True),
        (DeviceFault(f"device failure while decoding JPEGs: {OOM}"), True, False),
        (RuntimeError("Unsupported marker type 0xd9"), False, True),  # a decoder refusing data
        (RuntimeError("image is not a JPEG"), False, True),
    ],
)
def test_classification(err, device_fault, broken):
    assert is_device_fault(err) is device_fault
    if device_fault:
        assert is_broken_context(err) is broken


def test_out_of_memory_while_decoding_is_507_for_the_batch_and_the_worker_stays(handler, monkeypatch):
    monkeypatch.setattr(tensor_decode, "decode_jpeg", fail_with(torch.OutOfMemoryError(OOM)))
    with pytest.raises(DeviceFault, match="CUDA out of memory"):
        handler.pipeline.process([{"body": GOOD}])
    status, response = served_status(handler, [GOOD, GOOD])
    assert status == 507 and b"Out of resources" in response
    monkeypatch.undo()  # the memory is back: the same worker serves the next batch
    monkeypatch.setattr(ts_adapter, "tensor_decode_device", lambda device, config: torch.device("cpu"))
    status, response = served_status(handler, [GOOD])
    assert status == 200 and b'"detections"' in response


@pytest.mark.parametrize("stage", ["preprocess", "infer", "postprocess"])
def test_out_of_memory_in_a_detector_stage_is_not_a_per_request_error(handler, monkeypatch, stage):
    monkeypatch.setattr(handler.pipeline.detector, stage, fail_with(torch.OutOfMemoryError(OOM)))
    with pytest.raises(torch.OutOfMemoryError):
        handler.pipeline.process([{"body": GOOD}])
    assert served_status(handler, [GOOD])[0] == 507


def test_decoder_refusing_a_good_jpeg_falls_back_to_the_host(handler, monkeypatch):
    """nvJPEG refuses some files PIL reads (CMYK, some progressive ones): served, not a 400."""
    refused = RuntimeError("nvjpegDecodeJpegHost failed: JPEG stream is not supported")
    monkeypatch.setattr(tensor_decode, "decode_jpeg", fail_with(refused))
    outcomes = handler.pipeline.process([{"body": GOOD}, {"body": GOOD[:3000]}])
    assert not isinstance(outcomes[0], InputError) and outcomes[0].detections
    assert isinstance(outcomes[1], InputError) and outcomes[1].status == 400  # PIL refuses it too


BROKEN_CONTEXT_WORKER = f"""
import torch
import handlers.tensor_decode as tensor_decode, handlers.ts_adapter as ts_adapter
from handlers.face_handler import RetinaFaceHandler
from tests.support.fake_context import FakeContext
from tests.support.images import astronaut, encode
import yaml
from scripts.packaging.build_archives import ARCHIVES
spec = ARCHIVES["face_detector-2.0"]
ts_adapter.tensor_decode_device = lambda device, config: torch.device("cpu")
handler = RetinaFaceHandler()
handler.initialize(FakeContext(spec.weights.parent, yaml.safe_load(spec.config.read_text())))
context = FakeContext(spec.weights.parent, {{}})
body = bytearray(encode(astronaut()))
print(handler.handle([{{"body": body}}], context)[0], flush=True)  # healthy first

def broken(*args, **kwargs):
    raise torch.AcceleratorError({ILLEGAL_ACCESS!r})

tensor_decode.decode_jpeg = broken
handler.handle([{{"body": body}}], context)
print("still running after a broken context", flush=True)
"""


def test_broken_context_makes_the_worker_exit_to_be_restarted():
    run = subprocess.run(
        [sys.executable, "-c", BROKEN_CONTEXT_WORKER],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"DETECTION_METRICS": "off", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == ts_adapter.EXIT_DEVICE_FAULT, run.stderr[-2000:]
    assert json.loads(run.stdout.splitlines()[0])["detections"]
    assert "still running" not in run.stdout
    assert "device failure, worker exits to be restarted" in run.stderr and ILLEGAL_ACCESS in run.stderr
