"""Tiling and test-time augmentation as functions of a forward function (normalised batch -> logits).

Both work on the low-resolution logits, so the fused upsample + argmax still runs once per image
after them. They hold no state: the Segmenter composes them with its runtime once, and any number
of threads may call the result.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .options import TTA, Tiling

Forward = Callable[[torch.Tensor], torch.Tensor]


def pad(x: torch.Tensor, multiple: int, minimum=(1, 1)) -> torch.Tensor:
    """Pad bottom / right with zeros (the mean colour, after normalisation) to a multiple and a minimum."""
    h, w = x.shape[2:]
    ph = max(-(-h // multiple) * multiple, minimum[0]) - h
    pw = max(-(-w // multiple) * multiple, minimum[1]) - w
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph))


def tta_logits(forward: Forward, x: torch.Tensor, tta: TTA, stride: int, align_corners: bool) -> torch.Tensor:
    """The averaged logits of every view of `x` that `tta` asks for (see `TTA`), float32."""
    h, w = x.shape[2:]
    base = acc = None
    count = 0
    # the scale-1 logits size is the common grid (or ceil(size / stride) when 1 is not a scale)
    for s in sorted(tta.scales, key=lambda s: s != 1.0):
        xs = x if s == 1.0 else F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))),
                                              mode="bilinear", align_corners=False)
        for flip in ((False, True) if tta.flip else (False,)):
            z = forward(xs.flip(3) if flip else xs)
            z = z.flip(3) if flip else z
            if base is None:
                base = tuple(z.shape[2:]) if s == 1.0 else (math.ceil(h / stride), math.ceil(w / stride))
            z = z.float()
            if tuple(z.shape[2:]) != base:
                z = F.interpolate(z, size=base, mode="bilinear", align_corners=align_corners)
            z = torch.softmax(z, 1) if tta.average == "softmax" else z
            acc = z if acc is None else acc.add_(z)
            count += 1
    acc.div_(count)
    if tta.average == "softmax":
        acc = acc.clamp_min_(1e-12).log_()
    return acc


def tiled_logits(forward: Forward, x: torch.Tensor, tiling: Tiling, stride: int,
                 align_corners: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """Overlapping tiles of `x` through `forward`, their logits blended at the low resolution with a
    tent window; and the padded size the blended logits map to. `tiling.size` must be a multiple of
    `stride` (`Tiling.rounded`)."""
    th, tw = tiling.size
    x = pad(x, stride, minimum=(th, tw))
    n, _, H, W = x.shape
    rows, cols = _starts(H, th, tiling.overlap, stride), _starts(W, tw, tiling.overlap, stride)
    lh, lw = th // stride, tw // stride
    weight = _tent(lh, x.device)[:, None] * _tent(lw, x.device)[None, :]
    starts = [(r, c) for r in rows for c in cols]
    outs = []
    for i in range(n):
        acc = wsum = None
        for k in range(0, len(starts), tiling.batch):
            chunk = starts[k:k + tiling.batch]
            tiles = torch.cat([x[i:i + 1, :, r:r + th, c:c + tw] for r, c in chunk])
            z = forward(tiles).float()
            if tuple(z.shape[2:]) != (lh, lw):  # a model that rounds sizes its own way
                z = F.interpolate(z, size=(lh, lw), mode="bilinear", align_corners=align_corners)
            if acc is None:
                acc = torch.zeros((z.shape[1], H // stride, W // stride), dtype=torch.float32, device=x.device)
                wsum = torch.zeros((H // stride, W // stride), dtype=torch.float32, device=x.device)
            for (r, c), zt in zip(chunk, z):
                acc[:, r // stride:r // stride + lh, c // stride:c // stride + lw].addcmul_(zt, weight)
                wsum[r // stride:r // stride + lh, c // stride:c // stride + lw].add_(weight)
        outs.append(acc.div_(wsum))
    return torch.stack(outs), (H, W)


def _starts(size: int, tile: int, overlap: float, stride: int) -> list[int]:
    """Tile offsets along one axis, multiples of the stride, the last tile flush with the end."""
    if size <= tile:
        return [0]
    step = max(stride, int(tile * (1 - overlap)) // stride * stride)
    return list(range(0, size - tile, step)) + [size - tile]


def _tent(n: int, device) -> torch.Tensor:
    """Blending weights along one tile axis: highest in the middle, small but non-zero at the edges."""
    i = torch.arange(n, dtype=torch.float32, device=device)
    return torch.minimum(i + 1, n - i) / ((n + 1) // 2)
