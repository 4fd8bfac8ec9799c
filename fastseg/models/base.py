"""What every fastseg model shares: low-resolution logits, and the upsampled / labelled views of them.

`forward_logits(x)` returns logits at the model's own output stride (`model.output_stride`: 8 for
FCN / DeepLabV3 on a dilated ResNet, 4 for DeepLabV3+ and SegFormer, 1 for U-Net, ...). The final
bilinear upsample is left out on purpose: the fused `fastseg.ops.upsample_argmax` does it together
with the argmax without ever holding full-resolution logits.
`forward(x)` upsamples to the input size exactly as the source model does (torchvision's `["out"]`,
smp's output, HF SegFormer's logits resized as its post-processing does), for comparison and training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    output_stride: int = 1        # nominal stride of forward_logits (sizes are rounded as the convs round)
    align_corners: bool = False   # how the final bilinear upsample maps logits to pixels
    mean = IMAGENET_MEAN          # input normalisation on [0, 1] RGB (all supported sources use ImageNet's)
    std = IMAGENET_STD

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_logits(x)
        if logits.shape[-2:] == x.shape[-2:]:
            return logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels [N,H,W] at the input's resolution, through the fused upsample+argmax."""
        from ..ops.upsample_argmax import upsample_argmax

        logits = self.forward_logits(x)
        return upsample_argmax(logits, size=tuple(x.shape[-2:]), align_corners=self.align_corners)
