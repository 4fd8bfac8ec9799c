"""Atrous spatial pyramid pooling (DeepLabV3): a 1x1 branch, three dilated 3x3 branches and an
image-pooling branch, concatenated and projected by a 1x1 conv. `separable=True` is smp's
DeepLabV3+ variant (depthwise-separable dilated branches)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct, SeparableConvBNAct


class ImagePooling(nn.Module):
    """Global average -> 1x1 conv/BN/ReLU -> broadcast back over the map (constant over space; the
    sources' bilinear resize of a 1x1 map gives exactly this)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x):
        pooled = self.proj(F.adaptive_avg_pool2d(x, 1))  # GlobalAveragePool in ONNX (see layers.py)
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = 256, rates=(12, 24, 36),
                 separable: bool = False, dropout: float = 0.5):
        super().__init__()
        branches: list[nn.Module] = [ConvBNAct(in_channels, out_channels, 1)]
        for rate in rates:
            if separable:
                branches.append(SeparableConvBNAct(in_channels, out_channels, 3, dilation=rate))
            else:
                branches.append(ConvBNAct(in_channels, out_channels, 3, dilation=rate))
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, out_channels)
        self.project = ConvBNAct((len(rates) + 2) * out_channels, out_channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches] + [self.pooling(x)]
        return self.dropout(self.project(torch.cat(outputs, dim=1)))
