"""uint8 images -> normalised float32: `images * scale[c] - shift[c]`, the Segmenter's preprocessing.

The native kernel does it in one pass from any strides (an HWC frame is read through its permuted
view) into an NCHW or channels_last output, with one rounding per value (a fused multiply-add), so
it equals `reference` (naive.py: exact in float64, rounded once) bit for bit. The plain torch version, a
converting copy followed by an in-place multiply and subtract, passes over the float image three
times and rounds twice.
"""
from __future__ import annotations

import torch

from ... import _native
from .._dispatch import Op, resolve
from .naive import reference

__all__ = ["normalize_image", "reference"]

OP = Op("normalize_image", triton=False)
MAX_NATIVE_CHANNELS = 64  # the native kernel keeps one scale and shift per channel on its stack


def normalize_image(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """images: uint8 [N,C,H,W] (any strides); scale, shift: [C] values. Returns float32 [N,C,H,W],
    written into `out` (float32, same shape, any strides) when given."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"images: expected a uint8 [N,C,H,W] tensor, got {_describe(images)}")
    C = images.shape[1]
    scale, shift = (torch.as_tensor(v, dtype=torch.float32).flatten() for v in (scale, shift))
    if scale.numel() != C or shift.numel() != C:
        raise ValueError(f"scale, shift: expected {C} values each (one per channel), "
                         f"got {scale.numel()} and {shift.numel()}")
    if out is None:
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    elif out.dtype != torch.float32 or out.shape != images.shape or out.device != images.device:
        raise ValueError(f"out: expected float32 {tuple(images.shape)} on {images.device}, got {_describe(out)}")
    refuses = (f"images: the native kernel takes at most {MAX_NATIVE_CHANNELS} channels, got {C}"
               if C > MAX_NATIVE_CHANNELS else None)
    if resolve(OP, backend, images.device, native_refuses=refuses) == "native":
        _native.ext().normalize_image(_native.buf(images), _native.buf(out), scale.tolist(), shift.tolist(),
                                      _native.num_threads(), _native.use_own_threads())
        return out
    return out.copy_(reference(images, scale.to(images.device), shift.to(images.device)))


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} {tuple(x.shape)} on {x.device}"
    return type(x).__name__
