"""FCN head (torchvision): 3x3 conv to in/4 channels, BN, ReLU, dropout, 1x1 classifier."""
from torch import nn

from ..layers import ConvBNAct


class FCNHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNAct(in_channels, in_channels // 4, 3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(in_channels // 4, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.dropout(self.conv(x)))
