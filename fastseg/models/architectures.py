"""The six architectures: a backbone and a head, wired together. Names of the zoo live in zoo.py."""
from __future__ import annotations

import torch

from .backbones.mit import MixTransformer
from .backbones.mobilenetv3 import MobileNetV3Large
from .backbones.resnet import ResNet
from .base import SegmentationModel
from .heads.deeplabv3 import DeepLabV3Head
from .heads.deeplabv3plus import DeepLabV3PlusHead
from .heads.fcn import FCNHead
from .heads.lraspp import LRASPPHead
from .heads.segformer import SegFormerHead
from .heads.unet import UnetHead


class FCN(SegmentationModel):
    def __init__(self, backbone: ResNet, num_classes: int, output_stride: int):
        super().__init__()
        self.backbone = backbone
        self.head = FCNHead(backbone.out_channels[-1], num_classes)
        self.output_stride = output_stride

    def forward_logits(self, x):
        return self.head(self.backbone(x)[-1])


class DeepLabV3(SegmentationModel):
    """On a ResNet (list of five maps) or a MobileNetV3 ([low, high]): the head sees the last map."""

    def __init__(self, backbone, num_classes: int, output_stride: int, atrous_rates=(12, 24, 36)):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabV3Head(backbone.out_channels if isinstance(backbone, MobileNetV3Large)
                                  else backbone.out_channels[-1], num_classes, tuple(atrous_rates))
        self.output_stride = output_stride

    def forward_logits(self, x):
        return self.head(self.backbone(x)[-1])


class LRASPP(SegmentationModel):
    output_stride = 8  # the logits live on the low-level (stride 8) map

    def __init__(self, backbone: MobileNetV3Large, num_classes: int, channels: int = 128):
        super().__init__()
        self.backbone = backbone
        self.head = LRASPPHead(backbone.low_channels, backbone.out_channels, num_classes, channels)

    def forward_logits(self, x):
        low, high = self.backbone(x)
        return self.head(low, high)


class DeepLabV3Plus(SegmentationModel):
    output_stride = 4
    align_corners = True  # smp's final x4 upsample uses align_corners=True

    def __init__(self, backbone: ResNet, num_classes: int, atrous_rates=(12, 24, 36), channels: int = 256,
                 separable: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = DeepLabV3PlusHead(backbone.out_channels[-1], backbone.out_channels[1], num_classes,
                                      tuple(atrous_rates), channels, separable)

    def forward_logits(self, x):
        features = self.backbone(x)
        return self.head(features[1], features[-1])


class Unet(SegmentationModel):
    def __init__(self, backbone: ResNet, num_classes: int, decoder_channels=(256, 128, 64, 32, 16),
                 context: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = UnetHead(backbone.out_channels, num_classes, tuple(decoder_channels), context)
        # five blocks reach the input size; each block fewer leaves the logits at twice the stride
        self.output_stride = 2 ** (len(backbone.out_channels) - len(decoder_channels))

    def forward_logits(self, x):
        return self.head(self.backbone(x), x.shape[-2:])


class SegFormer(SegmentationModel):
    output_stride = 4

    def __init__(self, num_classes: int, decoder_channels: int = 256, **encoder_kwargs):
        super().__init__()
        self.backbone = MixTransformer(**encoder_kwargs)
        self.head = SegFormerHead(self.backbone.out_channels, num_classes, decoder_channels)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
