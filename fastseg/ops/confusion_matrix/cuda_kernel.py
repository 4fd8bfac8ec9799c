"""backend="native" on CUDA tensors: the CUDA C++ kernel compiled ahead of time into fastseg._C
(csrc/cuda/confusion_matrix.cu), for CUDA machines without Triton. It counts into the CPU kernel's
extended table (csrc/common/confusion_layout.h: rows for ignored and out-of-range targets, a column
for out-of-range predictions) and folds it on the device into the counts and two flags, which the
caller reads when it needs them.
"""
from __future__ import annotations

import torch

from ... import _native
from . import _NATIVE_DTYPES  # the dtypes both C++ kernels read as they are


def _flat(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(-1)  # a view where the layout allows, else one copy on the device
    return x if x.dtype in _NATIVE_DTYPES else x.to(torch.int64)


def confusion_matrix_cuda(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None):
    """(counts int64 [C, C], flags int32 [2]: bad_pred, bad_target) of validated CUDA label maps of
    one shape, queued on the current stream; nothing is read back."""
    p, t = _flat(pred), _flat(target)
    C = num_classes
    out = torch.zeros((C, C), dtype=torch.int64, device=p.device)
    flags = torch.zeros(2, dtype=torch.int32, device=p.device)
    table = torch.zeros((C + 2) * (C + 1), dtype=torch.int64, device=p.device)
    with torch.cuda.device(p.device):
        stream = torch.cuda.current_stream(p.device).cuda_stream
        _native.ext().confusion_matrix_cuda(
            _native.buf(p), _native.buf(t), C, ignore_index is not None, 0 if ignore_index is None else ignore_index,
            _native.buf(out), _native.buf(flags), _native.buf(table), stream)
    return out, flags
