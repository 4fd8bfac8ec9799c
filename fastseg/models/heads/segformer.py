"""SegFormer's all-MLP head: each stage projected to a common width by a linear layer, upsampled to
stride 4, concatenated coarse-first, fused by 1x1 conv/BN/ReLU, dropout, 1x1 classifier."""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct


class SegFormerHead(nn.Module):
    def __init__(self, in_channels, num_classes, channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(c, channels) for c in in_channels)
        self.fuse = ConvBNAct(channels * len(in_channels), channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features):
        size = features[0].shape[-2:]
        maps = []
        for feature, proj in zip(features, self.proj):
            n, _, h, w = feature.shape
            x = proj(feature.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, -1, h, w)
            maps.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        x = self.fuse(torch.cat(maps[::-1], dim=1))
        return self.classifier(self.dropout(x))
