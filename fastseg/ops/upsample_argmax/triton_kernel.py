"""Triton kernel: fused bilinear upsample + argmax over channels (+ max softmax probability).

One program handles BLOCK output pixels of one image. Per pixel it computes the bilinear taps with
PyTorch's float32 formulas (see csrc/common/bilinear.h), then streams the channels: four loads,
two horizontal lerps and one vertical lerp in torch's operation order, a running max / argmax
(first index on ties, NaN counts as the maximum) and, with confidence, a running softmax
denominator rescaled online, with infinite values as the package docstring defines. The [N,C,H,W]
interpolated logits never exist.

Runs on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (how it is tested here).

All images' blocks run along grid axis 0 (axis 1 would cap a frame at 65535 blocks: 16.8 megapixels
at the GPU's block of 256); the launch goes through ops/_launch.py (CUDA's grid limits, the tensor's
device, the tile configuration).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .. import _launch


@triton.jit
def _taps(dst, in_size, out_size, scale, ALIGN: tl.constexpr):
    """Source indices and weights along one axis, as torch's upsample_bilinear2d computes them."""
    d = dst.to(tl.float32)
    if ALIGN:
        src = scale * d
    else:
        src = tl.fma(d + 0.5, scale, -0.5)
        src = tl.maximum(src, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), in_size - 1)
    lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = i0 + (i0 < in_size - 1).to(tl.int32)
    same = in_size == out_size  # identity: torch copies the input sample
    i0 = tl.where(same, dst.to(tl.int32), i0)
    i1 = tl.where(same, dst.to(tl.int32), i1)
    lam = tl.where(same, 0.0, lam)
    return i0.to(tl.int64), i1.to(tl.int64), 1.0 - lam, lam


@triton.jit
def _upsample_argmax_kernel(
    x_ptr, labels_ptr, conf_ptr,
    C, h, w, H, W, blocks_per_image,
    sN, sC, sH, sW,
    scale_h, scale_w,
    ALIGN: tl.constexpr, CONF: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    n = pid // blocks_per_image
    offs = (pid % blocks_per_image) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < H * W
    y = offs // W
    x = offs % W
    y0, y1, hy0, hy1 = _taps(y, h, H, scale_h, ALIGN)
    x0, x1, wx0, wx1 = _taps(x, w, W, scale_w, ALIGN)
    base = x_ptr + n * sN
    p00 = base + y0 * sH + x0 * sW
    p01 = base + y0 * sH + x1 * sW
    p10 = base + y1 * sH + x0 * sW
    p11 = base + y1 * sH + x1 * sW

    # channel 0 starts the running max / argmax / softmax denominator
    r0 = tl.fma(tl.load(p00, mask=mask, other=0.0).to(tl.float32), wx0,
                tl.load(p01, mask=mask, other=0.0).to(tl.float32) * wx1)
    r1 = tl.fma(tl.load(p10, mask=mask, other=0.0).to(tl.float32), wx0,
                tl.load(p11, mask=mask, other=0.0).to(tl.float32) * wx1)
    best = tl.fma(r0, hy0, r1 * hy1)
    arg = tl.zeros([BLOCK], dtype=tl.int32)
    total = tl.full([BLOCK], 1.0, dtype=tl.float32)
    for c in range(1, C):
        off = c * sC
        r0 = tl.fma(tl.load(p00 + off, mask=mask, other=0.0).to(tl.float32), wx0,
                    tl.load(p01 + off, mask=mask, other=0.0).to(tl.float32) * wx1)
        r1 = tl.fma(tl.load(p10 + off, mask=mask, other=0.0).to(tl.float32), wx0,
                    tl.load(p11 + off, mask=mask, other=0.0).to(tl.float32) * wx1)
        v = tl.fma(r0, hy0, r1 * hy1)
        take = (v > best) | ((v != v) & (best == best))
        if CONF:
            # equal values differ by 0, also two +inf or two -inf (whose difference is NaN): the
            # channels at an infinite maximum share the probability (see the package docstring)
            e = tl.exp(-tl.abs(tl.where(v == best, 0.0, v - best)))
            total = tl.where(take, total * e + 1.0, total + e)
        best = tl.where(take, v, best)
        arg = tl.where(take, c, arg)

    out = n * H * W + offs
    tl.store(labels_ptr + out, arg.to(labels_ptr.dtype.element_ty), mask=mask)
    if CONF:
        tl.store(conf_ptr + out, 1.0 / total, mask=mask)


def _scale(in_size: int, out_size: int, align_corners: bool) -> float:
    """torch's float32 scale (area_pixel_compute_scale for an explicit size)."""
    if align_corners:
        return float(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else 0.0
    return float(np.float32(in_size) / np.float32(out_size))


def tile_config(target: str) -> dict:
    """Block size and warps for `_launch.tile_target`'s "gpu" (what ships) or "interpreter" (which pays
    per program, so larger blocks; a GPU pays per register)."""
    if target == "gpu":
        return dict(BLOCK=256, num_warps=4)
    return dict(BLOCK=1024, num_warps=4)


def grid(N: int, H: int, W: int, block: int) -> tuple[int]:
    """Every image's blocks of output pixels on axis 0."""
    return (N * triton.cdiv(H * W, block),)


def upsample_argmax_triton(logits: torch.Tensor, size: tuple[int, int], align_corners: bool,
                           return_confidence: bool, out_dtype: torch.dtype):
    """Launch the kernel; `logits` is a validated [N,C,h,w] float tensor (any strides)."""
    N, C, h, w = logits.shape
    H, W = size
    labels = torch.empty((N, H, W), dtype=out_dtype, device=logits.device)
    conf = torch.empty((N, H, W), dtype=torch.float32, device=logits.device) if return_confidence else labels
    cfg = tile_config(_launch.tile_target(logits.device))
    _launch.launch(
        _upsample_argmax_kernel, grid(N, H, W, cfg["BLOCK"]), logits.device,
        logits, labels, conf,
        C, h, w, H, W, triton.cdiv(H * W, cfg["BLOCK"]),
        *logits.stride(),
        _scale(h, H, align_corners), _scale(w, W, align_corners),
        ALIGN=align_corners, CONF=return_confidence, **cfg,
    )
    return (labels, conf) if return_confidence else labels
