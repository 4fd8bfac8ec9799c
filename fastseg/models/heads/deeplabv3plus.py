"""DeepLabV3+ decoder (smp): separable ASPP at the output stride, upsampled to the stride-4 features,
concatenated with their 48-channel projection, fused by a separable 3x3 conv, 1x1 classifier."""
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct, SeparableConvBNAct
from .aspp import ASPP


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, high_channels: int, skip_channels: int, num_classes: int, rates=(12, 24, 36),
                 channels: int = 256, separable: bool = True, skip_proj_channels: int = 48):
        super().__init__()
        self.aspp = ASPP(high_channels, channels, rates, separable=separable)
        self.aspp_conv = SeparableConvBNAct(channels, channels, 3)
        self.skip_proj = ConvBNAct(skip_channels, skip_proj_channels, 1)
        self.fuse = SeparableConvBNAct(channels + skip_proj_channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, skip, high):
        x = self.aspp_conv(self.aspp(high))
        # smp upsamples by a fixed factor with align_corners=True; on sizes divisible by the output
        # stride that is exactly this resize to the skip's size.
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([x, self.skip_proj(skip)], dim=1)))
