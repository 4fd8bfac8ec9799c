"""backend="native" on CUDA tensors: the CUDA C++ kernel compiled ahead of time into fastseg._C
(csrc/cuda/upsample_argmax.cu), for CUDA machines without Triton (Jetson's PyTorch builds often
have none). One thread per run of output pixels sharing their four taps (an MY x MX strip of a
source cell, see cells.py) runs csrc/common/upsample_argmax_run.h, whose taps and lerps are
bilinear.h's, the CPU kernel's, in the same order: the interpolated values are the CPU kernel's bit
for bit.

`threadwise` runs that same per-thread code on CPU tensors, one run after another: how the tests
check the CUDA kernel's arithmetic on machines without a GPU.
"""
from __future__ import annotations

import torch

from ... import _native


def _outputs(x: torch.Tensor, size, return_confidence: bool, dtype: torch.dtype, with_max: bool):
    shape = (x.shape[0], *size)
    labels = torch.empty(shape, dtype=dtype, device=x.device)
    conf = torch.empty(shape, dtype=torch.float32, device=x.device) if return_confidence else None
    maxv = torch.empty(shape, dtype=torch.float32, device=x.device) if with_max else None
    return labels, conf, maxv


def _bufs(*tensors):
    return [None if t is None else _native.buf(t) for t in tensors]


def upsample_argmax_cuda(x: torch.Tensor, size: tuple[int, int], align_corners: bool, return_confidence: bool,
                         dtype: torch.dtype):
    """Queue the kernel on the current stream of x's device; `x` is a validated [N,C,h,w] CUDA tensor."""
    labels, conf, _ = _outputs(x, size, return_confidence, dtype, False)
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        _native.ext().upsample_argmax_cuda(*_bufs(x, labels, conf, None), align_corners, stream)
    return (labels, conf) if return_confidence else labels


def threadwise(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False, return_confidence: bool = False,
              dtype: torch.dtype = torch.int64):
    """The CUDA kernel's per-thread code on CPU tensors: (labels, confidence or None, maximum logit)."""
    labels, conf, maxv = _outputs(x, size, return_confidence, dtype, True)
    _native.ext().upsample_argmax_threadwise(*_bufs(x, labels, conf, maxv), align_corners)
    return labels, conf, maxv
