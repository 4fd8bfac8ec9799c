"""Lite R-ASPP head (torchvision, MobileNetV3 paper): the high-level features, projected and gated by
their own global context, are classified and upsampled to the stride-8 low-level map's class map,
and the two added."""
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
        # The classifier runs before the upsampling, not after as in torchvision. Both are linear
        # and bilinear weights sum to 1, so the order does not change the result (up to float
        # rounding); this way 4x fewer pixels are classified, and num_classes channels, not 128,
        # are resized.
        x = self.high_classifier(self.high_proj(high) * gate)
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.low_classifier(low) + x
