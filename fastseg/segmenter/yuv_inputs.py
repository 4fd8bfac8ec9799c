"""YUV frames (NV12, YUYV) as the Segmenter's same-size groups; the conversion to RGB happens later,
inside the preprocessing pass (`fastseg.ops.resize_normalize`).

One frame: NV12 [H*3/2,W], YUYV [H,W,2]; a batch adds a leading N; a list may mix sizes. numpy or
torch uint8, in the same layout for both (as decoders and camera drivers hand them over).
"""
from __future__ import annotations

import numpy as np
import torch

from ..ops.resize_normalize import PixelFormat
from .input_checks import check_tensor
from .inputs import Group, Split, from_numpy


def single_rank(fmt: PixelFormat) -> int:
    return 2 if fmt.name == "nv12" else 3


def split(batch, fmt: PixelFormat) -> Split:
    single = single_rank(fmt)
    if isinstance(batch, (list, tuple)):
        if len(batch) == 0:
            raise ValueError("batch: empty list of images")
        frames = [_frame(x, f"batch[{i}]", fmt, single) for i, x in enumerate(batch)]
        by_key: dict = {}
        for i, (t, _, dev) in enumerate(frames):
            by_key.setdefault((tuple(t.shape), dev), []).append(i)
        groups = [Group(idx, torch.stack([frames[i][0] for i in idx]), False, fmt) for idx in by_key.values()]
        return Split(groups, "list", [f[1] for f in frames], [f[2] for f in frames])
    rank = batch.ndim if isinstance(batch, np.ndarray) else batch.dim() if isinstance(batch, torch.Tensor) else -1
    if rank == single:
        t, kind, dev = _frame(batch, "batch", fmt, single)
        return Split([Group([0], t[None], False, fmt)], "single", [kind], [dev])
    t, kind, dev = _frame(batch, "batch", fmt, single + 1)
    if t.shape[0] == 0:
        raise ValueError(f"batch: empty batch (N = 0), shape {tuple(t.shape)}")
    n = t.shape[0]
    return Split([Group(list(range(n)), t, False, fmt)], "batch", [kind] * n, [dev] * n)


def _frame(x, where: str, fmt: PixelFormat, rank: int):
    """(tensor, kind, device) of a uint8 frame or batch of `rank` dimensions in `fmt`."""
    if isinstance(x, np.ndarray):
        t, kind, dev = from_numpy(x), "numpy", None
    elif isinstance(x, torch.Tensor):
        check_tensor(x, where)
        t, kind, dev = x, "torch", x.device
    else:
        raise TypeError(f"{where}: expected a numpy array or a torch tensor of {fmt.name} data, got {type(x).__name__}")
    form = {"nv12": "[H*3/2,W]", "yuyv": "[H,W,2]"}[fmt.name]
    if t.dtype != torch.uint8:
        raise TypeError(f"{where}: {fmt.name} frames are uint8, got {t.dtype}")
    shape = tuple(t.shape)
    view = t[None] if rank == single_rank(fmt) else t  # as a batch
    ok = t.dim() == rank and (view.shape[1] % 3 == 0 if fmt.name == "nv12" else view.shape[-1] == 2)
    if ok:
        H, W = fmt.image_size(tuple(view.shape))
        ok = H >= 2 and W >= 2 and H % 2 == 0 and W % 2 == 0
    if not ok:
        raise ValueError(f"{where}: {fmt.name} frames are uint8 {form} (a batch: [N,...]) with an even height "
                         f"and width, got shape {shape}")
    return t, kind, dev
