"""MobileNetV3-Large feature extractor in torchvision's layout (BN eps 1e-3, hardswish, SE gates).

`dilated=True` (what torchvision's segmentation models use) replaces the last stage's stride by
dilation 2: output stride 16 instead of 32.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct, SqueezeExcite

BN_EPS = 1e-3

# kernel, expanded channels, out channels, squeeze-excite, activation, stride (input of the first is 16)
LARGE = [
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),      # output of this block: the stride-8 "low" features
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),  # last stage: dilated instead of strided when dilated=True
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
]
LOW_LEVEL_BLOCK = 3
LAST_STAGE_BLOCK = 12


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of `divisor`, never more than 10 % down (the MobileNet channel rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    def __init__(self, in_channels, kernel, expanded, out_channels, use_se, act, stride, dilation):
        super().__init__()
        self.expand = ConvBNAct(in_channels, expanded, 1, act=act, bn_eps=BN_EPS) if expanded != in_channels else None
        self.depthwise = ConvBNAct(expanded, expanded, kernel, stride=1 if dilation > 1 else stride,
                                   dilation=dilation, groups=expanded, act=act, bn_eps=BN_EPS)
        self.se = SqueezeExcite(expanded, make_divisible(expanded // 4)) if use_se else None
        self.project = ConvBNAct(expanded, out_channels, 1, act=None, bn_eps=BN_EPS)
        self.use_residual = stride == 1 and in_channels == out_channels

    def parts(self) -> list[str]:
        """Names of the sub-layers in execution order (torchvision numbers them in this order)."""
        return [n for n in ("expand", "depthwise", "se", "project") if getattr(self, n) is not None]

    def forward(self, x):
        out = x
        for name in self.parts():
            out = getattr(self, name)(out)
        return out + x if self.use_residual else out


class MobileNetV3Large(nn.Module):
    def __init__(self, dilated: bool = True):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, stride=2, act="hardswish", bn_eps=BN_EPS)
        blocks, in_channels = [], 16
        for index, (kernel, expanded, out, use_se, act, stride) in enumerate(LARGE):
            dilation = 2 if dilated and index >= LAST_STAGE_BLOCK else 1
            blocks.append(InvertedResidual(in_channels, kernel, expanded, out, use_se, act, stride, dilation))
            in_channels = out
        self.blocks = nn.Sequential(*blocks)
        self.last_conv = ConvBNAct(in_channels, 6 * in_channels, 1, act="hardswish", bn_eps=BN_EPS)
        self.low_channels = LARGE[LOW_LEVEL_BLOCK][2]
        self.out_channels = 6 * in_channels
        self.output_stride = 16 if dilated else 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(low: stride-8 features of block 3, high: last conv's features at the output stride)."""
        x = low = self.stem(x)  # low: replaced by block LOW_LEVEL_BLOCK's output
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == LOW_LEVEL_BLOCK:
                low = x
        return low, self.last_conv(x)
