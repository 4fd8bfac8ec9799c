"""U-Net decoder (smp): from the coarsest map, repeatedly upsample (nearest) to the next encoder map's
size, concatenate it, two 3x3 conv/BN/ReLU; the last block has no skip and reaches the input size.

With fewer decoder blocks than smp's five the decoder stops early: four blocks end on the stride-2
skip map, three on the stride-4 one. The logits are then coarser than the input and the fused
upsample+argmax tail brings them to full size, which is cheaper than a decoder block at full resolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ConvBNAct


class UnetBlock(nn.Module):
    def __init__(self, in_channels, skip_channels, out_channels):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels + skip_channels, out_channels, 3)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3)

    def forward(self, x, size, skip=None):
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class ImagePooling(nn.Module):
    """Context for the coarsest map: its global mean, projected by a 1x1 conv, added to every pixel
    (DeepLab's image-level branch, as a residual). Crops and frames see the whole scene's layout this
    way; it exports as ONNX GlobalAveragePool and a broadcast Add."""

    def __init__(self, channels):
        super().__init__()
        self.project = ConvBNAct(channels, channels, 1, act="relu")

    def forward(self, x):
        return x + self.project(F.adaptive_avg_pool2d(x, 1))


class UnetHead(nn.Module):
    def __init__(self, encoder_channels, num_classes, decoder_channels=(256, 128, 64, 32, 16),
                 context: str | None = None):
        super().__init__()
        if context not in (None, "pool"):
            raise ValueError(f"U-Net context must be None or 'pool', got {context!r}")
        # encoder_channels: fine to coarse, without the input itself (e.g. 64, 64, 128, 256, 512)
        coarse_to_fine = list(encoder_channels)[::-1]
        if not 1 <= len(decoder_channels) <= len(coarse_to_fine):
            raise ValueError(f"U-Net needs 1 to {len(coarse_to_fine)} decoder_channels, got {tuple(decoder_channels)}")
        in_channels = [coarse_to_fine[0]] + list(decoder_channels[:-1])
        skip_channels = (coarse_to_fine[1:] + [0])[:len(decoder_channels)]
        self.blocks = nn.ModuleList(UnetBlock(i, s, o) for i, s, o in zip(in_channels, skip_channels, decoder_channels))
        self.classifier = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        self.context = ImagePooling(coarse_to_fine[0]) if context == "pool" else None

    def forward(self, features, input_size):
        skips = features[:-1][::-1]                     # skip maps, coarse to fine
        sizes = [f.shape[-2:] for f in skips] + [input_size]
        x = features[-1]
        if self.context is not None:
            x = self.context(x)
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i], skips[i] if i < len(skips) else None)
        return self.classifier(x)
