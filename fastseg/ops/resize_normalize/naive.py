"""resize_normalize in plain PyTorch: the specification the native kernel is tested against."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .pixel_formats import PixelFormat


def to_rgb(images: torch.Tensor, fmt: PixelFormat) -> torch.Tensor:
    """Frames in `fmt` (RGB / BGR [N,3,H,W] of any dtype, NV12 [N,H*3/2,W], YUYV [N,H,W,2]) ->
    float32 RGB [N,3,H,W] on the frames' scale (0..255 for uint8; YUV clamped to 0..255)."""
    if fmt.name in ("rgb", "bgr"):
        x = images.float()
        return x.flip(1) if fmt.name == "bgr" else x
    H, W = fmt.image_size(tuple(images.shape))
    if fmt.name == "nv12":
        y = images[:, :H].float()
        uv = images[:, H:].float().reshape(-1, H // 2, W // 2, 2)
        uv = uv.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # each 2x2 block its own chroma
        u, v = uv[..., 0], uv[..., 1]
    else:
        y = images[..., 0].float()
        chroma = images[..., 1].float().reshape(-1, H, W // 2, 2)
        u = chroma[..., 0].repeat_interleave(2, dim=2)
        v = chroma[..., 1].repeat_interleave(2, dim=2)
    c = fmt.coefficients()
    yy, uu, vv = y - c[9], u - c[10], v - c[11]
    planes = [c[3 * i] * yy + c[3 * i + 1] * uu + c[3 * i + 2] * vv for i in range(3)]
    return torch.stack(planes, 1).clamp_(0, 255)


def reference(images: torch.Tensor, size: tuple[int, int], scale: torch.Tensor, shift: torch.Tensor,
              fmt: PixelFormat) -> torch.Tensor:
    """RGB, then F.interpolate's antialiased bilinear resize, then * scale - shift (float32)."""
    rgb = to_rgb(images, fmt)
    if tuple(rgb.shape[2:]) != tuple(size):
        # channels_last: torch's contiguous-NCHW antialiased kernel gets a 1-pixel-wide output wrong
        # (it differs from its own channels_last result there, which matches a hand computation)
        rgb = F.interpolate(rgb.contiguous(memory_format=torch.channels_last), size=tuple(size), mode="bilinear",
                            antialias=True, align_corners=False)
    view = (1, -1, 1, 1)
    return rgb * scale.to(rgb).view(view) - shift.to(rgb).view(view)
