"""Inputs that would otherwise give wrong labels without a word: refused with a message that says
what to pass instead, or converted the way PIL converts them.

- Float images are RGB in [0, 1]. 0..255 values in a float array (`img.float()`, `img.astype(float)`)
  are the commonest slip, and normalised images (mean / std already applied) the next one; either
  would be read as a nearly white image. On the CPU the range is checked (one min / max pass); on a
  GPU checking would cost a host synchronisation per call, so there the range is the caller's
  contract.
- numpy float arrays are taken like torch float tensors (numpy / torch float64 too, as float32).
- Grayscale ([H,W], [H,W,1]), gray + alpha ([H,W,2]) and RGBA ([H,W,4]) numpy images become RGB as
  PIL's `convert("RGB")` makes them: gray repeated in the three channels, alpha dropped (views, no copy).
- Meta tensors hold no values: an error naming the argument, not a failure deep in a kernel.
"""
from __future__ import annotations

import numpy as np
import torch

# a float image whose values pass this is taken for 0..255 data (a [0, 1] image plus rounding or
# mild augmentation stays far below it)
FLOAT_MAX = 1.5
FLOAT_MIN = -0.5


def numpy_rgb(x: np.ndarray, where: str, batch: bool) -> np.ndarray:
    """[(N,)H,W] gray or [(N,)H,W,C] with C in 1..4 as [(N,)H,W,3] (a view), else a ValueError."""
    base = 3 if batch else 2
    if x.ndim == base:
        x = x[..., None]
    if x.ndim != base + 1 or not 1 <= x.shape[-1] <= 4:
        form = "[N,H,W,3]" if batch else "[H,W,3]"
        raise ValueError(f"{where}: expected an RGB image {form} (grayscale [H,W] / [H,W,1] and RGBA "
                         f"[H,W,4] are converted too), got shape {x.shape}")
    if x.shape[-1] in (1, 2):  # gray, gray + alpha
        return np.broadcast_to(x[..., :1], x.shape[:-1] + (3,))
    return x[..., :3]


def numpy_dtype(x: np.ndarray, where: str) -> None:
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise TypeError(f"{where}: numpy images must be uint8 (0..255) or float (0..1), got dtype {x.dtype}")


def as_supported_float(t: torch.Tensor) -> torch.Tensor:
    """float64 (numpy's default float) as float32; other dtypes unchanged."""
    return t.float() if t.dtype == torch.float64 else t


def check_tensor(t: torch.Tensor, where: str) -> None:
    """A tensor that holds data, and a CPU float one in [0, 1]."""
    if t.device.type == "meta":
        raise ValueError(f"{where}: a meta tensor holds no values; pass the image's data (a CPU or GPU tensor)")
    if not t.is_floating_point() or t.device.type != "cpu" or t.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(t))
    if lo < FLOAT_MIN:
        raise ValueError(f"{where}: float images must be RGB in [0, 1], got values down to {lo:g}; it looks "
                         f"normalised already, and the Segmenter applies the model's mean / std itself: pass "
                         f"the image before normalisation")
    if hi > FLOAT_MAX:
        raise ValueError(f"{where}: float images must be RGB in [0, 1], got values up to {hi:g}. Pass 0..255 "
                         f"data as uint8 (x.astype(np.uint8) / x.to(torch.uint8)) or divide it by 255")


def check_device(device) -> torch.device:
    """`device` as a torch.device, or an error naming the argument and the spellings torch takes."""
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            hint = " (a GPU is 'cuda' or 'cuda:N')" if str(device).lower().startswith("gpu") else ""
            raise ValueError(f"device: {device!r} is not a device: use 'cpu', 'cuda', 'cuda:1' or a "
                             f"torch.device{hint}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: the Segmenter runs on 'cpu' or 'cuda', got {device!r}")
    return dev
