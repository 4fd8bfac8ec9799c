"""Array kinds: accept torch tensors, numpy arrays and DLPack producers (CuPy), give back the same kind."""
from __future__ import annotations

import warnings

import numpy as np
import torch

KINDS = ("torch", "numpy", "dlpack")


def to_torch(x, name: str) -> tuple[torch.Tensor, str]:
    """Zero-copy view of `x` as a torch tensor, plus the kind to hand results back as.

    Read-only numpy arrays are accepted: fastseg never writes into its inputs.
    """
    if isinstance(x, torch.Tensor):
        return x, "torch"
    if isinstance(x, np.ndarray):
        if x.dtype.byteorder == ">" or (x.dtype.byteorder == "=" and not np.little_endian):
            x = x.astype(x.dtype.newbyteorder("<"))
        if x.dtype == np.bool_:
            x = x.view(np.uint8)
        if any(s < 0 for s in x.strides):  # torch cannot view negative strides (e.g. a[::-1])
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():
            # torch warns about non-writable arrays; inputs are only read.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(x), "numpy"
    if hasattr(x, "__dlpack__"):
        return torch.from_dlpack(x), "dlpack"
    raise TypeError(
        f"{name}: expected a torch.Tensor, numpy.ndarray or DLPack array (e.g. CuPy), "
        f"got {type(x).__name__}"
    )


def from_torch(t: torch.Tensor, kind: str):
    """Hand `t` back in the caller's array kind."""
    if kind == "torch":
        return t
    if kind == "numpy":
        t = t.detach()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return t.cpu().numpy()
    if kind == "dlpack":
        import cupy  # only reached when the input was a CuPy array

        return cupy.from_dlpack(t)
    raise ValueError(f"unknown array kind {kind!r}")
