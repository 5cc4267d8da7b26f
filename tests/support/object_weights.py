"""SEEDED RANDOM weights for the torchvision detector families, for tests and timings only.

No COCO-pretrained detector weights can be obtained on these machines (../shared/WEIGHTS_AND_DATA.md),
so the object detector's serving path is exercised with these. Their detections are meaningless:
tests compare served against in-process output of the same weights, never against ground truth.

Plain random initialisation gives useless outputs for that purpose (activations vanish through the
uncalibrated BatchNorms and every class scores ~1/91, so the order of detections is a coin toss).
Hence: BatchNorm statistics are measured on a few public images, and the last classification
layer is scaled so that some boxes score well above the rest, with distinct scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from handlers.object_models import build_model

# Scale of the last classification layer that spreads the scores over (0, 1) for seed 0.
HEAD_GAIN = {
    "ssdlite320_mobilenet_v3_large": 2.0,
    "fasterrcnn_mobilenet_v3_large_fpn": 8.0,
    "fasterrcnn_resnet50_fpn_v2": 8.0,
    "retinanet_resnet50_fpn_v2": 2.0,
    "fcos_resnet50_fpn": 2.0,
}
HEAD_PREFIX = ("head.classification_head.", "roi_heads.box_predictor.cls_score.")
CALIBRATION_SIZE = (320, 320)


def _calibration_batch() -> torch.Tensor:
    images = [skdata.astronaut(), skdata.coffee(), skdata.chelsea()]
    batch = torch.cat(
        [
            F.interpolate(
                torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float() / 255,
                size=CALIBRATION_SIZE,
                mode="bilinear",
            )
            for i in images
        ]
    )
    return (batch - 0.45) / 0.25


@torch.no_grad()
def seeded_state_dict(architecture: str, seed: int = 0, num_classes: int = 91) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(architecture, num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
    model.backbone.train()
    features = model.backbone(_calibration_batch())
    if architecture.startswith("ssdlite"):  # its head has BatchNorms too
        model.head.train()
        model.head(list(features.values()))
    model.eval()
    state = model.state_dict()
    for key, value in state.items():
        if key.startswith(HEAD_PREFIX) and key.endswith("weight"):
            value.mul_(HEAD_GAIN[architecture])
    return state


def save_seeded_weights(architecture: str, path: Path, seed: int = 0, num_classes: int = 91) -> Path:
    torch.save(seeded_state_dict(architecture, seed, num_classes), path)
    return path
