"""resize_normalize in torch operations, for tensors the native kernel does not read (CUDA frames,
float frames): pixel format -> RGB, the antialiased resize, the normalisation, written into `out`.

What a real-time loop on a GPU needs from it: every step is a kernel queued on the current stream
(no value is read back, no tensor is made from host data, so nothing waits for the device and the
whole of it can be captured in a CUDA graph), and it writes straight into `out` in any float dtype
and layout (the runtime's), rounding once. The YUV matrix enters as Python numbers for the same
reason. The arithmetic is the reference's (`naive.reference`): RGB clamped to 0..255 in float32,
`F.interpolate(mode="bilinear", antialias=True)` in float32, then `* scale - shift`; only the order
of a few float additions differs. A frame that keeps its size and needs no conversion of values
(RGB, BGR) is normalised straight from uint8 in one kernel (`normalise`).

torch's CUDA antialiased kernel keeps each block's filter weights in shared memory, so it refuses
(with its own error) shrinking a side by more than about 90 times in one call; the CPU has no such
limit. A model's training scale stays far from it; only a tiny `size=` or `scale=` for a huge frame
reaches it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .pixel_formats import PixelFormat

__all__ = ["normalise", "resize_normalize_into", "rgb_planes"]


def normalise(images: torch.Tensor, scale: torch.Tensor, neg_shift: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """images [N,3,H,W] (uint8 or float, any strides, on out's device) * scale - shift -> out, in
    one kernel: computed in float32 and rounded once to out's dtype, written in out's layout."""
    return torch.addcmul(neg_shift, images, scale, out=out)


def resize_normalize_into(images: torch.Tensor, fmt: PixelFormat, scale: torch.Tensor, neg_shift: torch.Tensor,
                          out: torch.Tensor) -> torch.Tensor:
    """Frames in `fmt` (RGB / BGR [N,3,H,W] uint8 or float, any strides; NV12 [N,H*3/2,W]; YUYV
    [N,H,W,2]) resized to out's size and normalised into `out` (float [N,3,h,w], any layout).
    scale, neg_shift: float32 [1,3,1,1] on out's device (scale on the frames' value range)."""
    size = tuple(out.shape[2:])
    own = fmt.image_size(tuple(images.shape))
    if not fmt.yuv:
        rgb = images.flip(1) if fmt.name == "bgr" else images  # a copy of the uint8 frame, for BGR
        if size == own:
            return normalise(rgb, scale, neg_shift, out)
        # torch's CPU kernel for contiguous NCHW gets a 1-pixel-wide output wrong (the reference
        # resizes channels_last for that reason); its CUDA kernel reads contiguous NCHW
        layout = torch.channels_last if rgb.device.type == "cpu" else torch.contiguous_format
        x = rgb.to(torch.float32, memory_format=layout)
    else:
        x = rgb_planes(images, fmt)
        if size != own and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
    if size != own:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return normalise(x, scale, neg_shift, out)


def rgb_planes(images: torch.Tensor, fmt: PixelFormat) -> torch.Tensor:
    """NV12 / YUYV frames -> float32 RGB [N,3,H,W] (contiguous), clamped to 0..255: as `naive.to_rgb`,
    with the chroma terms computed once per chroma sample and broadcast over its 2x2 / 2x1 pixels."""
    H, W = fmt.image_size(tuple(images.shape))
    n = images.shape[0]
    c = fmt.coefficients()
    if fmt.name == "nv12":
        luma = images[:, :H]
        uv = images[:, H:].reshape(n, H // 2, W // 2, 2)
        u, v = uv[..., 0], uv[..., 1]
        # pixels (2i + a, 2j + b) share the chroma sample (i, j)
        luma_view, chroma_view = (n, 1, H // 2, 2, W // 2, 2), (n, 3, H // 2, 1, W // 2, 1)
    else:
        luma = images[..., 0]
        u, v = images[:, :, 0::2, 1], images[:, :, 1::2, 1]
        luma_view, chroma_view = (n, 1, H, W // 2, 2), (n, 3, H, W // 2, 1)
    yy = luma.float().sub_(c[9]).mul_(c[0])  # every row of the matrix weighs luma alike
    uu, vv = u.float().sub_(c[10]), v.float().sub_(c[11])
    chroma = torch.stack([uu * c[3 * i + 1] + vv * c[3 * i + 2] for i in range(3)], 1)
    rgb = yy.reshape(luma_view) + chroma.view(chroma_view)
    return rgb.view(n, 3, H, W).clamp_(0, 255)
