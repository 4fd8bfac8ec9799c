"""Images and reference labels shared by the Segmenter and export tests."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def image(h, w, seed=0, n=None):
    """A smooth random image (blobs, not noise), uint8 HWC (or NHWC with n)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n or 1, 3, max(2, h // 8), max(2, w // 8))
    low = torch.rand(shape, generator=g)
    full = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    full = full + 0.05 * torch.rand(full.shape, generator=g)
    out = (full.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out if n else out[0]


def frame_in(name: str, h: int, w: int, seed: int, n: int | None = None) -> np.ndarray:
    """A smooth frame in pixel format `name` (YUV planes taken from a smooth image's channels)."""
    img = image(h, w, seed=seed, n=n)
    batch = img if n else img[None]
    if name == "bgr":
        out = np.ascontiguousarray(batch[..., ::-1])
    elif name.startswith("nv12"):
        uv = batch[:, ::2, ::2, 1:].reshape(batch.shape[0], h // 2, w)  # one (U, V) per 2x2 pixels
        out = np.concatenate([batch[..., 0], uv], 1)
    elif name.startswith("yuyv"):
        chroma = np.where(np.arange(w) % 2 == 0, batch[..., 1], batch[..., 2])  # U at even x, V at odd
        out = np.stack([batch[..., 0], chroma], -1)
    else:
        out = batch
    return out if n else out[0]


def normalise(img_nhwc: np.ndarray, model) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(img_nhwc)).permute(0, 3, 1, 2).double() / 255
    mean = torch.tensor(model.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


def reference_labels(model, img_nhwc) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(normalise(img_nhwc, model)).argmax(1).numpy()


def agreement(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a == b).mean())


def float_output(shape, layout):
    """An uninitialised float32 [N,C,H,W] to write into: nchw, channels_last, or strided (a crop)."""
    if layout == "channels_last":
        return torch.empty(shape).contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        return torch.empty((shape[0], shape[1], shape[2], shape[3] + 5))[..., 2:2 + shape[3]]
    return torch.empty(shape)
