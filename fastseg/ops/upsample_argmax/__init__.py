"""Fused bilinear upsampling + per-pixel argmax: logits [N,C,h,w] -> labels [N,H,W].

The full-resolution logits ([N,C,H,W] float32, 160 MB for 19 classes at 1024x2048) are never
materialised: the native and Triton kernels interpolate each channel of a pixel and keep only the
running maximum, its index and, on request, the running softmax denominator.

`reference` (naive.py) is the specification. Labels equal
`F.interpolate(logits.float(), size, mode="bilinear", align_corners=...).argmax(1)`: fp16 / bf16
logits are upcast to float32 first, ties go to the first channel, a NaN counts as the maximum.
The native kernel reproduces PyTorch's CPU bilinear arithmetic (the float32 index / weight formulas
and operation order of upsample_bilinear2d's generic kernel), so its labels and interpolated values
equal the reference's bit for bit wherever torch uses that kernel (NCHW input, H + W > 128).
PyTorch uses a differently rounded kernel for channels_last input and for small outputs; there, and
in the Triton kernel, labels can differ from the reference only where two channels' interpolated
values are within float rounding of each other.

The confidence is the maximum softmax probability over channels, `1 / sum_c exp(v_c - max_c v)`,
accumulated online in the same pass as the argmax. Every backend defines it alike where the
interpolated values are not finite: a channel equal to the maximum counts 1, also when the maximum
is infinite, so where k channels are +inf the confidence is 1/k (the softmax's limit as those
logits grow together: 1.0 for a single +inf), where every channel is -inf it is 1/C, and -inf
channels below a finite maximum count 0. Where any channel is NaN the confidence is NaN (and the
label is the first NaN channel). Note that bilinear interpolation itself turns an infinite input
next to an opposite infinity, or next to a zero weight, into NaN, as F.interpolate does.

An empty batch (N = 0) is an error (ValueError naming `logits`), like every other shape that
cannot be segmented.
"""
from __future__ import annotations

import operator

import numpy as np
import torch

from ... import _arrays, _native
from .._dispatch import Op, resolve
from .naive import reference

__all__ = ["upsample_argmax", "reference"]

OP = Op("upsample_argmax", native_cuda=True)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LABEL_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)
_LABEL_MAX = {torch.uint8: 255, torch.int16: 2**15 - 1, torch.int32: 2**31 - 1, torch.int64: 2**63 - 1}


def upsample_argmax(logits, size, align_corners: bool = False, return_confidence: bool = False,
                    out_dtype=None, backend: str = "auto", out: torch.Tensor | None = None):
    """Bilinearly resize `logits` [N,C,h,w] to `size` = (H, W) and take the argmax over channels.

    logits: float32 / float16 / bfloat16, NCHW or channels_last (any strides), as a torch tensor,
        numpy array (read-only is fine) or DLPack array (CuPy).
    size: (H, W) of the output (an int means (size, size)); up or down, any ratio.
    align_corners: as in F.interpolate.
    return_confidence: also return the maximum softmax probability per pixel, float32 [N,H,W]
        (where logits are infinite or NaN, as the module docstring defines it).
    out_dtype: labels dtype: uint8 (default when C <= 256, else int64), int16, int32 or int64;
        a torch dtype, numpy dtype or its name.
    backend: "auto" (CPU -> native, CUDA -> triton, or native where Triton is missing), "reference",
        "native" (C++ on CPU tensors, CUDA C++ on CUDA tensors) or "triton".
    out: a contiguous torch tensor [N,H,W] of the labels' dtype on the logits' device to write the
        labels into instead of a new one (a video loop's reused buffer: the native kernel then
        allocates no output); with torch logits only.

    Returns labels [N,H,W] (and the confidence) as the same array kind as `logits`.
    """
    x, kind = _arrays.to_torch(logits, "logits")
    H, W = _check_size(size)
    if not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"align_corners: expected a bool, got {type(align_corners).__name__}")
    if not isinstance(return_confidence, (bool, np.bool_)):
        raise TypeError(f"return_confidence: expected a bool, got {type(return_confidence).__name__}")
    _check_logits(x)
    dtype = _label_dtype(out_dtype, x.shape[1])
    _check_out(out, (x.shape[0], H, W), dtype, x.device)
    which = resolve(OP, backend, x.device)

    if which == "reference":
        res = reference(x, (H, W), bool(align_corners), bool(return_confidence), dtype)
    elif which == "native" and x.device.type == "cuda":
        from .cuda_kernel import upsample_argmax_cuda

        res = upsample_argmax_cuda(x, (H, W), bool(align_corners), bool(return_confidence), dtype)
    elif which == "native":
        res = _native_upsample_argmax(x, (H, W), bool(align_corners), bool(return_confidence), dtype, labels=out)
    else:
        from .triton_kernel import upsample_argmax_triton

        res = upsample_argmax_triton(x, (H, W), bool(align_corners), bool(return_confidence), dtype, labels=out)
    if out is not None:
        labels = res[0] if return_confidence else res
        if labels is not out:
            out.copy_(labels)
        res = (out, res[1]) if return_confidence else out

    if return_confidence:
        return _arrays.from_torch(res[0], kind), _arrays.from_torch(res[1], kind)
    return _arrays.from_torch(res, kind)


def _native_upsample_argmax(x, size, align_corners, return_confidence, dtype, max_value=None, labels=None):
    N = x.shape[0]
    labels = torch.empty((N, *size), dtype=dtype) if labels is None else labels
    conf = torch.empty((N, *size), dtype=torch.float32) if return_confidence else None
    _native.ext().upsample_argmax(
        _native.buf(x), _native.buf(labels), None if conf is None else _native.buf(conf),
        None if max_value is None else _native.buf(max_value), align_corners,
        _native.num_threads(), _native.use_own_threads())
    return (labels, conf) if return_confidence else labels


def native_max_logit(logits: torch.Tensor, size: tuple[int, int], align_corners: bool = False):
    """Diagnostic: the native kernel's interpolated maximum logit per pixel, float32 [N,H,W].

    Equals `F.interpolate(logits.float(), size, mode="bilinear").amax(1)` bit for bit wherever
    torch uses its generic kernel; tests use it to check the kernel's arithmetic, not just labels.
    """
    _check_logits(logits)
    H, W = _check_size(size)
    out = torch.empty((logits.shape[0], H, W), dtype=torch.float32)
    _native_upsample_argmax(logits, (H, W), bool(align_corners), False, torch.int64, out)
    return out


def workspace_bytes(C: int, h: int, w: int, size: tuple[int, int], align_corners: bool = False,
                    num_threads: int | None = None) -> int:
    """Scratch memory (bytes, all threads) the native kernel allocates beyond input and output."""
    H, W = _check_size(size)
    threads = _native.num_threads() if num_threads is None else num_threads
    return _native.ext().upsample_argmax_workspace_bytes(C, h, w, H, W, align_corners, threads)


# ---- argument checks: every error names the argument ---------------------------------------------

def _check_size(size) -> tuple[int, int]:
    if isinstance(size, bool):
        raise TypeError(f"size: expected (H, W) or an int, got {size!r}")
    try:
        dims = (operator.index(size),) * 2
    except TypeError:
        try:
            dims = tuple(size)
        except TypeError:
            raise TypeError(f"size: expected (H, W) or an int, got {size!r}") from None
    if len(dims) != 2:
        raise ValueError(f"size: expected two values (H, W), got {size!r}")
    try:
        if any(isinstance(d, bool) for d in dims):
            raise TypeError
        H, W = (operator.index(d) for d in dims)
    except TypeError:
        raise TypeError(f"size: expected integers, got {size!r}") from None
    if H < 1 or W < 1:
        raise ValueError(f"size: H and W must be positive, got {size!r}")
    return H, W


def _check_logits(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"logits: expected a 4-D array [N, C, h, w], got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"logits: expected float32, float16 or bfloat16, got {x.dtype}")
    N, C, h, w = x.shape
    if C == 0:
        raise ValueError(f"logits: needs at least one channel (C = 0), shape {tuple(x.shape)}")
    if N == 0:
        raise ValueError(f"logits: empty batch (N = 0), shape {tuple(x.shape)}")
    if h == 0 or w == 0:
        raise ValueError(f"logits: empty spatial size, shape {tuple(x.shape)}")


def _check_out(out, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a torch tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != device or not out.is_contiguous():
        strided = "" if out.is_contiguous() else ", strided"
        raise ValueError(f"out: expected a contiguous {dtype} tensor of shape {shape} on {device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}{strided}")


def _label_dtype(out_dtype, C: int) -> torch.dtype:
    if out_dtype is None:
        return torch.uint8 if C <= 256 else torch.int64
    dtype = out_dtype
    if not isinstance(dtype, torch.dtype):
        try:
            dtype = getattr(torch, np.dtype(out_dtype).name)
        except (TypeError, AttributeError):
            raise TypeError(f"out_dtype: expected one of uint8, int16, int32, int64, got {out_dtype!r}") from None
    if dtype not in LABEL_DTYPES:
        raise TypeError(f"out_dtype: expected one of uint8, int16, int32, int64, got {out_dtype!r}")
    if C - 1 > _LABEL_MAX[dtype]:
        raise ValueError(f"out_dtype: {dtype} cannot hold labels up to {C - 1} (C = {C})")
    return dtype
