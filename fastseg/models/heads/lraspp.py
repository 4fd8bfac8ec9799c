"""Lite R-ASPP head (torchvision, MobileNetV3 paper): the high-level features, projected and gated by
their own global context, are upsampled to the stride-8 low-level map and the two class maps added."""
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct


class LRASPPHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_classes: int, channels: int = 128):
        super().__init__()
        self.high_proj = ConvBNAct(high_channels, channels, 1)
        self.high_gate = nn.Conv2d(high_channels, channels, 1, bias=False)
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low, high):
        gate = self.high_gate(F.adaptive_avg_pool2d(high, 1)).sigmoid()  # GlobalAveragePool in ONNX (see layers.py)
        x = self.high_proj(high) * gate
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)
