"""RetinaFace with a MobileNetV1 x0.25 backbone ("mobile0.25"), 426,608 parameters.

The layout follows the widely used Pytorch_Retinaface release: MobileNetV1 body -> 3-level FPN ->
one SSH context block per level -> class / box / landmark heads with 2 anchors per location.
The shipped weights come from an ONNX export in which every batch-norm was folded into the
convolution before it, so each block here is a biased conv; the folded batch-norm keeps its index
as an ``nn.Identity`` so that parameter names match the exported module paths one to one
(``fx.stage1.1.0.0.weight`` <- ``/fx/stage1/stage1.1/stage1.1.0/stage1.1.0.0/Conv``).

Input: (N, 3, H, W) float32, BGR, per-channel mean (104, 117, 123) subtracted, no scaling.
Outputs for A = sum over levels of 2 * ceil(H / s) * ceil(W / s), s in (8, 16, 32):
    loc (N, A, 4) box offsets, conf (N, A, 2) softmax [background, face], landmarks (N, A, 10).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ANCHORS_PER_LOCATION",
    "ConvBlock",
    "DepthwiseSeparable",
    "FPN",
    "LEAKY_SLOPE",
    "MobileNetV1x025",
    "RetinaFace",
    "SSH",
]

LEAKY_SLOPE = 0.1  # every activation of mobile0.25 (its channel counts are all <= 64 in FPN/SSH)
ANCHORS_PER_LOCATION = 2


class ConvBlock(nn.Sequential):
    """conv (bias = folded batch-norm) -> [folded BN placeholder] -> optional LeakyReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups),
            nn.Identity(),
        ]
        if act:
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        super().__init__(*layers)


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 unit: 3x3 depthwise (carries the stride) then 1x1 pointwise."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(
            ConvBlock(in_ch, in_ch, 3, stride, groups=in_ch),
            ConvBlock(in_ch, out_ch, 1),
        )


class MobileNetV1x025(nn.Module):
    """Body; returns the stride 8 / 16 / 32 feature maps with 64 / 128 / 256 channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            ConvBlock(3, 8, 3, 2),
            DepthwiseSeparable(8, 16, 1),
            DepthwiseSeparable(16, 32, 2),
            DepthwiseSeparable(32, 32, 1),
            DepthwiseSeparable(32, 64, 2),
            DepthwiseSeparable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            DepthwiseSeparable(64, 128, 2),
            *(DepthwiseSeparable(128, 128, 1) for _ in range(5)),
        )
        self.stage3 = nn.Sequential(
            DepthwiseSeparable(128, 256, 2),
            DepthwiseSeparable(256, 256, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)  # (N, 64, H/8, W/8)
        c4 = self.stage2(c3)  # (N, 128, H/16, W/16)
        c5 = self.stage3(c4)  # (N, 256, H/32, W/32)
        return c3, c4, c5


class FPN(nn.Module):
    """Top-down pathway with nearest upsampling to the finer map's exact size."""

    def __init__(self, in_channels: tuple[int, int, int] = (64, 128, 256), out_ch: int = 64) -> None:
        super().__init__()
        self.output1 = ConvBlock(in_channels[0], out_ch, 1)
        self.output2 = ConvBlock(in_channels[1], out_ch, 1)
        self.output3 = ConvBlock(in_channels[2], out_ch, 1)
        self.merge1 = ConvBlock(out_ch, out_ch, 3)
        self.merge2 = ConvBlock(out_ch, out_ch, 3)

    def forward(self, feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage context module: 3x3, 5x5 and 7x7 receptive fields from stacked 3x3 convs."""

    def __init__(self, in_ch: int = 64, out_ch: int = 64) -> None:
        super().__init__()
        self.conv3X3 = ConvBlock(in_ch, out_ch // 2, act=False)
        self.conv5X5_1 = ConvBlock(in_ch, out_ch // 4)
        self.conv5X5_2 = ConvBlock(out_ch // 4, out_ch // 4, act=False)
        self.conv7X7_2 = ConvBlock(out_ch // 4, out_ch // 4)
        self.conv7x7_3 = ConvBlock(out_ch // 4, out_ch // 4, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_in = self.conv5X5_1(x)
        out = torch.cat(
            [
                self.conv3X3(x),  # (N, out/2, h, w)
                self.conv5X5_2(branch5_in),  # (N, out/4, h, w)
                self.conv7x7_3(self.conv7X7_2(branch5_in)),  # (N, out/4, h, w)
            ],
            dim=1,
        )
        return F.relu(out)


def _head(in_ch: int, values_per_anchor: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(in_ch, ANCHORS_PER_LOCATION * values_per_anchor, 1) for _ in range(3))


def _flatten_level(x: torch.Tensor, values_per_anchor: int) -> torch.Tensor:
    # (N, 2*v, h, w) -> (N, h, w, 2*v) -> (N, h*w*2, v): anchors ordered row-major, 2 per cell.
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values_per_anchor)


class RetinaFace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fx = MobileNetV1x025()
        self.fpn = FPN()
        self.ssh1, self.ssh2, self.ssh3 = SSH(), SSH(), SSH()
        self.class_head = _head(64, 2)
        self.bbox_head = _head(64, 4)
        self.landmark_head = _head(64, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.fpn(self.fx(x))
        feats = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]
        loc = torch.cat([_flatten_level(h(f), 4) for h, f in zip(self.bbox_head, feats)], dim=1)
        logits = torch.cat([_flatten_level(h(f), 2) for h, f in zip(self.class_head, feats)], dim=1)
        landmarks = torch.cat([_flatten_level(h(f), 10) for h, f in zip(self.landmark_head, feats)], dim=1)
        return loc, logits.softmax(dim=-1), landmarks
