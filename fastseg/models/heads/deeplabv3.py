"""DeepLabV3 head (torchvision): ASPP, a 3x3 conv/BN/ReLU, a 1x1 classifier."""
from torch import nn

from ..layers import ConvBNAct
from .aspp import ASPP


class DeepLabV3Head(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, rates=(12, 24, 36), channels: int = 256):
        super().__init__()
        self.aspp = ASPP(in_channels, channels, rates)
        self.conv = ConvBNAct(channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.conv(self.aspp(x)))
