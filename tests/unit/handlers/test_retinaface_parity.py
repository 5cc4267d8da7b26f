"""The RetinaFace nn.Module written here reproduces onnxruntime on the shipped ONNX bytes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from handlers.retinaface import RetinaFace
from scripts.packaging.build_archives import ARCHIVES
from scripts.packaging.convert_retinaface import convert, find_onnx_bytes, module_key
from tests.support.images import astronaut, grace_hopper

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return find_onnx_bytes()


@pytest.fixture(scope="module")
def model(onnx_bytes) -> RetinaFace:
    net = RetinaFace().eval()
    net.load_state_dict(convert(onnx_bytes), strict=True)
    return net


def network_input(rgb: np.ndarray) -> np.ndarray:
    bgr = rgb[..., ::-1].astype(np.float32) - np.array([104, 117, 123], np.float32)
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])  # (1, 3, H, W)


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(lambda: astronaut(), id="astronaut-512x512"),
        pytest.param(lambda: grace_hopper(), id="grace-hopper-512x600"),
        pytest.param(lambda: astronaut()[:301, :457], id="odd-301x457"),
    ],
)
def test_module_matches_onnxruntime(model, onnx_bytes, image):
    x = network_input(image())
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    reference = session.run(["loc", "conf", "landmarks"], {"input": x})
    with torch.inference_mode():
        ours = model(torch.from_numpy(x))
    for name, mine, ref in zip(["loc", "conf", "landmarks"], ours, reference):
        assert mine.shape == ref.shape, name
        diff = float(np.abs(mine.numpy() - ref).max())
        assert diff <= TOLERANCE, f"{name} differs by {diff}"


def test_converted_weights_load_with_weights_only(tmp_path, onnx_bytes):
    path = tmp_path / "w.pt"
    torch.save(convert(onnx_bytes), path)
    state = torch.load(path, weights_only=True)
    RetinaFace().load_state_dict(state, strict=True)


def test_wrong_graph_fails_with_key_names(onnx_bytes):
    import onnx

    graph = onnx.load_from_string(onnx_bytes)
    for node in graph.graph.node:
        if node.name == "/class_head/class_head.0/Conv":
            node.name = "/class_head/renamed.0/Conv"
    with pytest.raises(ValueError, match="missing .*class_head.0.weight"):
        convert(graph.SerializeToString())


@pytest.mark.parametrize(
    "node, key",
    [
        ("/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv", "fx.stage1.1.0.0"),
        ("/fpn/output1/output1.0/Conv", "fpn.output1.0"),
        ("/ssh2/conv7X7_2/conv7X7_2.0/Conv", "ssh2.conv7X7_2.0"),
        ("/class_head/class_head.0/Conv", "class_head.0"),
    ],
)
def test_module_key(node, key):
    assert module_key(node) == key


def test_exported_graph_matches_module_at_other_sizes(model, tmp_path):
    """The onnxruntime backend runs the graph exported from this module (dynamic batch and size)."""
    from scripts.packaging.export_retinaface_onnx import export

    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    session = ort.InferenceSession(export(weights), providers=["CPUExecutionProvider"])
    x = np.concatenate([network_input(astronaut()[:352, :480])] * 3)  # (3, 3, 352, 480)
    with torch.inference_mode():
        ours = model(torch.from_numpy(x))
    for mine, ref in zip(ours, session.run(None, {"input": x})):
        assert float(np.abs(mine.numpy() - ref).max()) <= TOLERANCE


def test_onnxruntime_and_eager_backends_detect_the_same(tmp_path):
    from handlers.pipeline import DetectionPipeline
    from handlers.retinaface_detector import RetinaFaceDetector
    from scripts.packaging.export_retinaface_onnx import export
    from tests.support.images import encode, grace_hopper_bytes

    weights = ARCHIVES["face_detector-2.0"].weights  # build/retinaface_mobile0.25.pt
    onnx_path = tmp_path / "r.onnx"
    onnx_path.write_bytes(export(weights))
    eager = DetectionPipeline(RetinaFaceDetector(weights, channels_last=True), "f", "2.0")
    onnx = DetectionPipeline(RetinaFaceDetector(weights, onnx=onnx_path), "f", "2.0")
    assert onnx.detector.backend == "onnxruntime"
    for body in (encode(astronaut()), grace_hopper_bytes()):
        a, b = eager.detect_bytes(body, score_threshold=0.3), onnx.detect_bytes(body, score_threshold=0.3)
        assert len(a.detections) == len(b.detections) >= 1
        for x, y in zip(a.detections, b.detections):
            assert np.allclose(x.box, y.box, atol=0.05) and abs(x.score - y.score) < 1e-4
