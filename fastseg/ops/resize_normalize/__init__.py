"""Frames as they arrive (uint8 RGB / BGR / NV12 / YUYV, any size) -> the network's normalised
float32 input at the size it runs at: `resize(to_rgb(images)) * scale[c] - shift[c]`.

The native kernel does the pixel-format conversion, the antialiased bilinear resize (PyTorch's
`F.interpolate(mode="bilinear", antialias=True)`: every source pixel counts when shrinking, plain
bilinear when enlarging) and the normalisation in one pass over the frame, reading an HWC frame in
place; the torch route converts, resizes and normalises in separate passes over float images, and
torch cannot resize uint8 into float at all. Elsewhere (CUDA tensors, float frames) the same steps
run as torch operations (`device.resize_normalize_into`: no host waits, capturable in a CUDA graph);
both equal `naive.reference` up to float rounding.
"""
from __future__ import annotations

import torch

from ... import _native
from .._dispatch import Op, resolve
from .device import resize_normalize_into
from .naive import reference, to_rgb
from .pixel_formats import RGB, PixelFormat, parse

__all__ = ["resize_normalize", "reference", "to_rgb", "PixelFormat", "RGB", "parse"]

OP = Op("resize_normalize", triton=False)


def resize_normalize(images: torch.Tensor, size: tuple[int, int], scale, shift, pixel_format="rgb",
                     out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """images: uint8 frames in `pixel_format` (see `pixel_formats`: RGB / BGR [N,3,H,W] with any
    strides, NV12 [N,H*3/2,W], YUYV [N,H,W,2]); RGB / BGR may also be float (then on the scale that
    `scale` expects). size: (h, w) of the result. scale, shift: 3 values (per RGB channel).
    Returns float32 [N,3,h,w], written into `out` (float32, any strides) when given."""
    fmt = parse(pixel_format)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a torch tensor, got {type(images).__name__}")
    _check_shape(images, fmt)
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size: must be positive, got {tuple(size)}")
    scale, shift = (torch.as_tensor(v, dtype=torch.float32).flatten() for v in (scale, shift))
    if scale.numel() != 3 or shift.numel() != 3:
        raise ValueError(f"scale, shift: expected 3 values each, got {scale.numel()} and {shift.numel()}")
    shape = (images.shape[0], 3, h, w)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=images.device)
    elif out.dtype != torch.float32 or tuple(out.shape) != shape or out.device != images.device:
        raise ValueError(f"out: expected float32 {shape} on {images.device}, got {out.dtype} "
                         f"{tuple(out.shape)} on {out.device}")
    refuses = None if images.dtype == torch.uint8 else f"images: the native kernel reads uint8, got {images.dtype}"
    if resolve(OP, backend, images.device, native_refuses=refuses) == "native":
        _native.ext().resize_normalize(_native.buf(images), fmt.code, _native.buf(out), scale.tolist(),
                                       shift.tolist(), fmt.coefficients(), _native.num_threads(),
                                       _native.use_own_threads())
        return out
    scale, shift = scale.to(images.device), shift.to(images.device)
    if backend == "reference":  # the specification, when asked for by name
        return out.copy_(reference(images, (h, w), scale, shift, fmt))
    return resize_normalize_into(images, fmt, scale.view(1, 3, 1, 1), -shift.view(1, 3, 1, 1), out)


def _check_shape(images: torch.Tensor, fmt: PixelFormat) -> None:
    want = {"nv12": "[N,H*3/2,W]", "yuyv": "[N,H,W,2]"}.get(fmt.name, "[N,3,H,W]")
    ok = images.dim() == len(want.split(","))
    if ok and fmt.name in ("rgb", "bgr"):
        ok = images.shape[1] == 3
    elif ok and fmt.name == "nv12":
        ok = images.shape[1] % 3 == 0
    elif ok:
        ok = images.shape[3] == 2
    if not ok:
        raise ValueError(f"images: {fmt.name} frames are {want}, got shape {tuple(images.shape)}")
    if fmt.yuv:
        if images.dtype != torch.uint8:
            raise TypeError(f"images: {fmt.name} frames are uint8, got {images.dtype}")
        H, W = fmt.image_size(tuple(images.shape))
        if H % 2 or W % 2 or H < 2 or W < 2:
            raise ValueError(f"images: {fmt.name} needs an even width and height, got {H}x{W} (height x width)")
