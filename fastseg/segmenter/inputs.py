"""What the Segmenter accepts and hands back: images split into same-size groups, results restored
to the caller's structure and array kind, and the output arrays a stream reuses.

Accepted: numpy uint8 [H,W,3] (one image) or [N,H,W,3] (a batch), RGB; PIL images (converted to RGB);
torch uint8 [N,3,H,W] / [3,H,W] in [0, 255], or float [N,3,H,W] / [3,H,W] RGB in [0, 1] (not yet
normalised: the model's mean / std are applied inside); numpy float [H,W,3] / [N,H,W,3] in [0, 1];
a list (or tuple) of any of the single-image forms, of different sizes. Grayscale and RGBA numpy
images are converted as PIL converts them, and misuse is refused (`input_checks`). With
`pixel_format="bgr"` the same shapes hold BGR; NV12 and YUYV frames have their own (`yuv_inputs`).
Labels come back with the input's structure and kind: one image -> [H,W], a batch -> [N,H,W], a
list -> a list of [H,W]; numpy for numpy / PIL inputs, torch (on the input's
device) for torch. Inputs are only read, never written, and viewed without a copy where torch can.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..ops.resize_normalize import RGB, PixelFormat, to_rgb
from .input_checks import as_supported_float, check_tensor, numpy_dtype, numpy_rgb

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass
class Group:
    """Images of one size, run together: `images` is uint8 / float [n,H,W,3] (hwc, from numpy / PIL;
    a view when possible) or torch uint8 / float [n,3,H,W], in `pixel_format` (NV12 / YUYV frames:
    see `yuv_inputs`); `indices` are their places in the input."""

    indices: list
    images: torch.Tensor
    hwc: bool
    pixel_format: PixelFormat = RGB

    @property
    def size(self) -> tuple[int, int]:
        if self.pixel_format.yuv:
            return self.pixel_format.image_size(tuple(self.images.shape))
        return tuple(self.images.shape[1:3] if self.hwc else self.images.shape[2:])

    def as_uint8_hwc(self) -> torch.Tensor:
        """The images as the CRF's bilateral term compares colours: uint8 RGB [n,H,W,3], contiguous."""
        images = self.images
        if self.pixel_format.yuv or self.pixel_format.name == "bgr":
            chw = images.permute(0, 3, 1, 2) if self.hwc else images
            images = to_rgb(chw, self.pixel_format).round_().to(torch.uint8)
        elif self.hwc and images.dtype == torch.uint8:
            return images.contiguous()
        elif self.hwc:
            images = images.permute(0, 3, 1, 2)
        if images.dtype != torch.uint8:
            images = (images.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
        return images.permute(0, 2, 3, 1).contiguous()


@dataclass
class Split:
    groups: list          # of Group
    structure: str        # "single" (one image), "batch" (an array of images) or "list"
    kinds: list           # per image: "numpy" or "torch"
    devices: list         # per image: the torch input's device (None for numpy)


def split(batch, pixel_format: PixelFormat = RGB) -> Split:
    """`batch` in any accepted form as groups of same-size images; errors name the offending item."""
    if pixel_format.yuv:
        from . import yuv_inputs

        return yuv_inputs.split(batch, pixel_format)
    parts = _split_rgb(batch)
    if pixel_format.name != "rgb":
        for group in parts.groups:
            group.pixel_format = pixel_format
    return parts


def _split_rgb(batch) -> Split:
    if isinstance(batch, (list, tuple)):
        if len(batch) == 0:
            raise ValueError("batch: empty list of images")
        images = [_single_image(x, f"batch[{i}]") for i, x in enumerate(batch)]
        by_key: dict = {}
        for i, (t, hwc, _, dev) in enumerate(images):
            size = tuple(t.shape[:2] if hwc else t.shape[1:])
            by_key.setdefault((size, t.dtype, hwc, dev), []).append(i)
        groups = [Group(idx, torch.stack([images[i][0] for i in idx]), key[2]) for key, idx in by_key.items()]
        return Split(groups, "list", [im[2] for im in images], [im[3] for im in images])
    four_d = ((isinstance(batch, np.ndarray) and batch.ndim == 4)
              or (isinstance(batch, torch.Tensor) and batch.dim() == 4))
    if not four_d:
        t, hwc, kind, dev = _single_image(batch, "batch")
        return Split([Group([0], t[None], hwc)], "single", [kind], [dev])
    if isinstance(batch, np.ndarray):
        numpy_dtype(batch, "batch")
        t, hwc, kind, dev = as_supported_float(from_numpy(numpy_rgb(batch, "batch", True))), True, "numpy", None
        check_tensor(t, "batch")
    else:
        _check_torch_dtype(batch, "batch")
        check_tensor(batch, "batch")
        if batch.shape[1] != 3:
            raise ValueError(f"batch: expected a torch tensor [N,3,H,W], got shape {tuple(batch.shape)}")
        t, hwc, kind, dev = as_supported_float(batch), False, "torch", batch.device
    if t.shape[0] == 0:
        raise ValueError(f"batch: empty batch (N = 0), shape {tuple(t.shape)}")
    _check_not_empty(t.shape[1:3] if hwc else t.shape[2:], "batch")
    n = t.shape[0]
    return Split([Group(list(range(n)), t, hwc)], "batch", [kind] * n, [dev] * n)


def restore(parts: Split, per_group: list):
    """Per-group [n,H,W] outputs back into the caller's structure and array kinds."""
    def as_kind(t, kind, device):
        if kind == "numpy":
            return t.cpu().numpy()
        return t if device is None else t.to(device)

    if parts.structure != "list":  # one group holds the whole input
        t = per_group[0][0] if parts.structure == "single" else per_group[0]
        return as_kind(t, parts.kinds[0], parts.devices[0])
    out = [None] * len(parts.kinds)
    for group, t in zip(parts.groups, per_group):
        for j, i in enumerate(group.indices):
            out[i] = as_kind(t[j], parts.kinds[i], parts.devices[i])
    return out


class HeldOutputs:
    """The arrays one stream hands out, kept while the frame size stays: each new frame's result is
    copied into them, so a video loop allocates no output arrays after its first frame."""

    def __init__(self):
        self._key = None
        self._held = (None, None)

    def reuse(self, labels, confidence):
        """(labels, confidence) in the held arrays (the given ones become held on a new shape)."""
        key = _shape_key(labels)
        if key != self._key:
            self._key, self._held = key, (labels, confidence)
            return labels, confidence
        held_labels, held_conf = self._held
        _copy_into(held_labels, labels)
        if confidence is None:
            return held_labels, None
        if held_conf is None:
            self._held = (held_labels, confidence)
            return held_labels, confidence
        _copy_into(held_conf, confidence)
        return held_labels, held_conf


def from_numpy(x: np.ndarray) -> torch.Tensor:
    if any(st < 0 for st in x.strides):  # torch cannot view negative strides (e.g. img[:, ::-1])
        x = np.ascontiguousarray(x)
    with warnings.catch_warnings():  # read-only arrays are fine: inputs are only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(x)


def _check_torch_dtype(x: torch.Tensor, where: str) -> None:
    if x.dtype != torch.uint8 and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{where}: torch images must be uint8 (0-255) or float16/bfloat16/float32/float64 (0-1), "
                        f"got {x.dtype}")


def _check_not_empty(hw, where: str) -> None:
    if min(hw) < 1:
        raise ValueError(f"{where}: empty image (size {tuple(hw)})")


def _single_image(x, where: str):
    """One image: (tensor, hwc, kind, device)."""
    if type(x).__module__.startswith("PIL."):
        return from_numpy(np.asarray(x.convert("RGB"))), True, "numpy", None
    if isinstance(x, np.ndarray):
        numpy_dtype(x, where)
        x = numpy_rgb(x, where, False)
        _check_not_empty(x.shape[:2], where)
        t = as_supported_float(from_numpy(x))
        check_tensor(t, where)
        return t, True, "numpy", None
    if isinstance(x, torch.Tensor):
        _check_torch_dtype(x, where)
        check_tensor(x, where)
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"{where}: expected a torch image [3,H,W], got shape {tuple(x.shape)}")
        _check_not_empty(x.shape[1:], where)
        return as_supported_float(x), False, "torch", x.device
    raise TypeError(f"{where}: expected a numpy [H,W,3] array, a PIL image or a torch [3,H,W] "
                    f"tensor, got {type(x).__name__}")


def _shape_key(x):
    if isinstance(x, list):
        return tuple((tuple(t.shape), str(t.dtype)) for t in x)
    return tuple(x.shape), str(x.dtype)


def _copy_into(dst, src) -> None:
    if isinstance(dst, list):
        for d, s in zip(dst, src):
            _copy_into(d, s)
    elif isinstance(dst, np.ndarray):
        if not np.may_share_memory(dst, src):  # a stream's labels written into their buffer already
            np.copyto(dst, src)
    elif dst.data_ptr() != src.data_ptr():
        dst.copy_(src)
