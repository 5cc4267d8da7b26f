"""MTCNN (Zhang et al., 2016): three cascaded networks and the cascade that runs them on a batch.

    P-Net  fully convolutional proposals over an image pyramid (12x12 windows, stride 2)
    R-Net  rejects and refines 24x24 crops of the proposals
    O-Net  scores 48x48 crops and regresses the final box and 5 landmarks

Layer names match the published state_dicts (``conv1``, ``prelu1``, ..., ``dense6_3``) so the
weights load with ``strict=True``; the dense layers were trained on features flattened in
(W, H, C) order, hence the transpose before flattening.

Images of one batch may differ in size: every size gets its own pyramid (same-size images share
the P-Net passes), the crops of all images share the R-Net and O-Net passes, and every NMS runs
per image, so an image's result never depends on what else was in the batch. The cascade stops
before the final score threshold: :func:`finalize` applies it with per-request settings.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, nms

__all__ = [
    "CHUNK",
    "Candidates",
    "CascadeConfig",
    "FINAL_MIN_OVERLAP",
    "MTCNN",
    "ONet",
    "PNET_STRIDE",
    "PNET_WINDOW",
    "PNet",
    "PROPOSAL_NMS",
    "PROPOSAL_NMS_PER_SCALE",
    "RNet",
    "crop_resize",
    "finalize",
    "min_overlap_nms",
    "normalise",
    "pyramid_scales",
    "regress",
    "square",
]

PNET_WINDOW = 12  # P-Net's receptive field in pixels of a pyramid level
PNET_STRIDE = 2  # one P-Net output cell per 2 pixels of a pyramid level
RNET_SIZE, ONET_SIZE = 24, 48  # crop sides fed to R-Net and O-Net
PROPOSAL_NMS_PER_SCALE = 0.5  # IoU, P-Net boxes of one pyramid level
PROPOSAL_NMS = 0.7  # IoU, P-Net boxes across levels, and R-Net boxes
FINAL_MIN_OVERLAP = 0.7  # intersection / smaller area, O-Net boxes (removes boxes nested in a face)
CHUNK = 512  # crops per R-Net / O-Net forward pass: bounds memory on crowded images


@dataclass(frozen=True)
class CascadeConfig:
    """Cascade settings; read and bounded from model-config.yaml by handlers/config.py (MTCNNConfig)."""

    min_face_size: int = 20  # smallest face searched for, in network pixels
    pyramid_factor: float = 0.709  # ratio between pyramid levels (area halves every 2 levels)
    pnet_threshold: float = 0.6  # P-Net face probability to keep a proposal
    rnet_threshold: float = 0.7  # R-Net face probability to keep a candidate


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W*H*C), the order the dense layers were trained with."""
    return x.permute(0, 3, 2, 1).flatten(1)


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # not-face / face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets, fractions of the window

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> offsets (N, 4, h, w), face probability (N, h, w)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)[:, 1]


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)  # 576 = 3 * 3 * 64
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 24, 24) -> offsets (N, 4), face probability (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)[:, 1]


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)  # 1152 = 3 * 3 * 128
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)  # 5 x then 5 y, fractions of the crop

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, 48, 48) -> offsets (N, 4), landmarks (N, 10), face probability (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(dim=1)[:, 1]


@dataclass
class Candidates:
    """O-Net output for one image, before the final threshold and NMS (network pixels)."""

    boxes: torch.Tensor  # (n, 4) x1, y1, x2, y2
    scores: torch.Tensor  # (n,)
    landmarks: torch.Tensor  # (n, 5, 2)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-range floats -> [-1, 1), the networks' input range."""
    return (pixels - 127.5) * 0.0078125


def pyramid_scales(height: int, width: int, config: CascadeConfig) -> list[float]:
    """Scales at which a ``min_face_size`` face fills P-Net's window, down to a 12-pixel short side."""
    scale = PNET_WINDOW / config.min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_WINDOW:
        scales.append(scale)
        scale *= config.pyramid_factor
        side *= config.pyramid_factor
    return scales


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square around its centre (the next network sees square crops)."""
    size = boxes[:, 2:] - boxes[:, :2]
    side = size.max(dim=1, keepdim=True).values
    top_left = boxes[:, :2] + size * 0.5 - side * 0.5
    return torch.cat([top_left, top_left + side], dim=1)


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply R-Net / O-Net offsets, fractions of the inclusive box size."""
    size = (boxes[:, 2:] - boxes[:, :2] + 1).repeat(1, 2)
    return boxes + offsets * size


def min_overlap_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS on intersection over the SMALLER area: drops a box lying inside a better one,
    which plain IoU keeps when the sizes differ. Indices sorted by descending score."""
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2:] - boxes[:, :2] + 1).prod(dim=1)
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (bottom_right - top_left + 1).clamp(min=0).prod(dim=2)
    overlap = (inter / torch.minimum(area[:, None], area[None, :])).cpu()  # (n, n)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlap[i] > threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def finalize(found: Candidates, score_threshold: float, nms_iou: float, max_detections: int) -> Candidates:
    """Final threshold, the cascade's min-overlap NMS, then IoU NMS; sorted by descending score."""
    keep = found.scores > score_threshold
    boxes, scores, points = found.boxes[keep], found.scores[keep], found.landmarks[keep]
    if len(scores):
        kept = min_overlap_nms(boxes, scores, FINAL_MIN_OVERLAP)
        boxes, scores, points = boxes[kept], scores[kept], points[kept]
        kept = nms(boxes, scores, nms_iou)[:max_detections]
        boxes, scores, points = boxes[kept], scores[kept], points[kept]
    return Candidates(boxes, scores, points)


class MTCNN(nn.Module):
    """The three networks (state_dict keys ``pnet.*``, ``rnet.*``, ``onet.*``) and the cascade."""

    def __init__(self, config: CascadeConfig = CascadeConfig()) -> None:
        super().__init__()
        self.config = config
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @torch.inference_mode()
    def forward(self, images: list[torch.Tensor]) -> list[Candidates]:
        """RGB images (3, H_i, W_i), float in [0, 255], any sizes -> O-Net candidates per image."""
        device = self.pnet.conv1.weight.device
        boxes, ids = self._propose(images, device)
        boxes, ids = self._refine(images, boxes, ids)
        boxes, ids, scores, points = self._output(images, boxes, ids)
        return [Candidates(boxes[ids == i], scores[ids == i], points[ids == i]) for i in range(len(images))]

    def _propose(self, images: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Stage 1: P-Net over each image's pyramid -> squared proposals (k, 4), image ids (k,)."""
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_size[tuple(image.shape[1:])].append(index)
        boxes, scores, offsets, ids = [], [], [], []
        for (height, width), members in by_size.items():
            batch = torch.stack([images[i] for i in members])
            member_ids = torch.tensor(members, device=device)
            for scale in pyramid_scales(height, width, self.config):
                level = F.interpolate(
                    batch, size=(int(height * scale + 1), int(width * scale + 1)), mode="area"
                )
                reg, prob = self.pnet(normalise(level))
                mask = prob >= self.config.pnet_threshold
                row, ys, xs = mask.nonzero(as_tuple=True)
                cells = torch.stack([xs, ys], dim=1).to(batch.dtype) * PNET_STRIDE
                found = torch.cat([((cells + 1) / scale).floor(), ((cells + PNET_WINDOW) / scale).floor()], 1)
                keep = batched_nms(found, prob[mask], row, PROPOSAL_NMS_PER_SCALE)
                boxes.append(found[keep])
                scores.append(prob[mask][keep])
                offsets.append(reg.permute(0, 2, 3, 1)[mask][keep])
                ids.append(member_ids[row[keep]])
        if not boxes:
            return torch.zeros(0, 4, device=device), torch.zeros(0, dtype=torch.long, device=device)
        boxes, scores, offsets, ids = (torch.cat(t) for t in (boxes, scores, offsets, ids))
        keep = batched_nms(boxes, scores, ids, PROPOSAL_NMS)
        boxes, offsets, ids = boxes[keep], offsets[keep], ids[keep]
        size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # P-Net offsets: exclusive size
        return square(boxes + offsets * size), ids

    def _refine(self, images: list[torch.Tensor], boxes: torch.Tensor, ids: torch.Tensor) -> tuple:
        """Stage 2: R-Net on 24x24 crops -> fewer, tighter squared boxes."""
        crops, valid = crop_resize(images, boxes, ids, RNET_SIZE)
        boxes, ids = boxes[valid], ids[valid]
        if not len(boxes):
            return boxes, ids
        offsets, prob = _chunked(self.rnet, crops)
        keep = prob > self.config.rnet_threshold
        boxes, ids, offsets, prob = boxes[keep], ids[keep], offsets[keep], prob[keep]
        keep = batched_nms(boxes, prob, ids, PROPOSAL_NMS)
        return square(regress(boxes[keep], offsets[keep])), ids[keep]

    def _output(self, images: list[torch.Tensor], boxes: torch.Tensor, ids: torch.Tensor) -> tuple:
        """Stage 3: O-Net on 48x48 crops -> final boxes, scores and landmarks (no threshold yet)."""
        crops, valid = crop_resize(images, boxes, ids, ONET_SIZE)
        boxes, ids = boxes[valid], ids[valid]
        if not len(boxes):
            return boxes, ids, boxes.new_zeros(0), boxes.new_zeros(0, 5, 2)
        offsets, marks, prob = _chunked(self.onet, crops)
        size = boxes[:, 2:] - boxes[:, :2] + 1  # landmarks are fractions of the crop
        points = torch.stack([marks[:, :5], marks[:, 5:]], dim=2) * size[:, None] + boxes[:, None, :2] - 1
        return regress(boxes, offsets), ids, prob, points


def _chunked(net: nn.Module, crops: torch.Tensor) -> tuple[torch.Tensor, ...]:
    outputs = [net(normalise(crops[i : i + CHUNK])) for i in range(0, len(crops), CHUNK)]
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def crop_resize(
    images: list[torch.Tensor], boxes: torch.Tensor, ids: torch.Tensor, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each box (truncated to whole pixels, clipped to its image) and resize it to side x side
    with area interpolation -> crops (m, 3, side, side) and the mask of boxes that had pixels."""
    valid = torch.zeros(len(boxes), dtype=torch.bool)
    crops = []
    for k, ((x1, y1, x2, y2), index) in enumerate(zip(boxes.trunc().int().tolist(), ids.tolist())):
        image = images[index]
        height, width = image.shape[1:]
        x1, y1, x2, y2 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, width), min(y2, height)
        if x2 > x1 and y2 > y1:
            valid[k] = True
            crops.append(F.interpolate(image[None, :, y1:y2, x1:x2], size=(side, side), mode="area"))
    empty = boxes.new_zeros(0, 3, side, side)
    return (torch.cat(crops) if crops else empty), valid.to(boxes.device)
