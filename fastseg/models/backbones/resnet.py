"""ResNet-18/34/50/101/152 (torchvision layout, v1.5: stride on the 3x3 conv), optionally dilated.

`base_width` scales every stage (64 is the standard network; 32 gives a quarter of its multiply-adds,
which is what the real-time default model uses). `output_stride` 8 or 16 replaces the stride of the
last stages by dilation. Two conventions exist: torchvision keeps the previous dilation in the first
block of a dilated stage (`first_block_dilated=False`), smp dilates every conv of the stage
(`first_block_dilated=True`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ConvBNAct

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, width, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, width, 3, stride=stride, dilation=dilation)
        self.conv2 = ConvBNAct(width, width, 3, dilation=dilation, act=None)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        out += identity  # in place, as torchvision does: no third full-size tensor
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, width, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, width, 1)
        self.conv2 = ConvBNAct(width, width, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvBNAct(width, width * 4, 1, act=None)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        out += identity  # in place, as torchvision does: no third full-size tensor
        return self.relu(out)


class ResNet(nn.Module):
    layer1: nn.Sequential  # the four stages, set by name in __init__ (torchvision's keys)
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, depth: int = 50, output_stride: int = 32, first_block_dilated: bool = False,
                 base_width: int = 64):
        super().__init__()
        if base_width < 1:
            raise ValueError(f"ResNet base_width must be positive, got {base_width}")
        if depth not in DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTHS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"ResNet output_stride must be 8, 16 or 32, got {output_stride}")
        kind, counts = DEPTHS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = ConvBNAct(3, base_width, 7, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = [base_width]
        in_channels, stride_so_far, dilation = base_width, 4, 1
        widths = [base_width * m for m in (1, 2, 4, 8)]
        for index, (width, count) in enumerate(zip(widths, counts)):
            stride, previous_dilation = (1 if index == 0 else 2), dilation
            if stride_so_far * stride > output_stride:  # trade this stage's stride for dilation
                dilation, stride = dilation * stride, 1
            stride_so_far *= stride
            out_channels = width * block.expansion
            downsample = None
            if stride != 1 or in_channels != out_channels:
                downsample = ConvBNAct(in_channels, out_channels, 1, stride=stride, act=None)
            first_dilation = dilation if first_block_dilated else previous_dilation
            blocks = [block(in_channels, width, stride, first_dilation, downsample)]
            blocks += [block(out_channels, width, 1, dilation) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            self.out_channels.append(out_channels)
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem (stride 2), layer1 (4), layer2 (8), layer3 (16 or less), layer4 (32 or less)]."""
        features = [self.stem(x)]
        x = self.maxpool(features[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features
