"""upsample_argmax in plain PyTorch: the specification the native and Triton kernels are tested against."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reference(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False,
              return_confidence: bool = False, out_dtype: torch.dtype = torch.int64):
    """The specification, in plain PyTorch (materialises the full-resolution logits)."""
    z = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=align_corners)
    labels = z.argmax(1).to(out_dtype)
    if not return_confidence:
        return labels
    # 1 / sum_c exp(z_c - max): the largest softmax probability. Channels equal to the maximum add
    # 1 each, also when it is infinite (where z_c - max is inf - inf = NaN): k channels at +inf
    # share it, 1 / k, as the softmax does in the limit; any NaN makes it NaN.
    top = z.amax(1, keepdim=True)
    gap = torch.where(z == top, torch.zeros_like(z), z - top)
    return labels, 1.0 / gap.exp().sum(1)
