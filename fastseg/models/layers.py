"""Small building blocks shared by every backbone and head.

Every convolution that is followed by batch-norm lives in a `ConvBNAct`, so the inference rewrite
(`fastseg.models.rewrite`) finds all of them by type and folds the norm into the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import activation as activations


def make_activation(name: str | None) -> nn.Module:
    """The module of an activation of the one table (fastseg.ops.activation), by name."""
    return activations.get(name).module()


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (odd kernels), as torchvision and smp use."""
    return (kernel_size - 1) // 2 * dilation


class ConvBNAct(nn.Module):
    """conv -> batch-norm -> activation; `bn=False` gives a biased conv with no norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, groups: int = 1, act: str | None = "relu", bn: bool = True,
                 bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=same_padding(kernel_size, dilation), dilation=dilation,
                              groups=groups, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps) if bn else nn.Identity()
        self.act = make_activation(act)
        self.act_name = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SeparableConvBNAct(nn.Module):
    """Depthwise conv -> pointwise 1x1 conv -> batch-norm -> activation (DeepLabV3+ in smp)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 act: str | None = "relu"):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size,
                                   padding=same_padding(kernel_size, dilation), dilation=dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = make_activation(act)
        self.act_name = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pointwise(self.depthwise(x))))


class SqueezeExcite(nn.Module):
    """Channel gate of MobileNetV3: x * hardsigmoid(expand(relu(reduce(mean(x)))))."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d, not mean(): it exports as ONNX GlobalAveragePool, which ONNX Runtime runs in
        # its blocked NCHWc layout (a ReduceMean forces a reorder out of it and back, in every block)
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.gate(self.expand(self.relu(self.reduce(scale))))
        return x * scale
