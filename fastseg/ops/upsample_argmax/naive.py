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
    return labels, torch.softmax(z, dim=1).amax(1)
