"""Every private torch API fastseg calls, in one place, each beside the public computation it
stands for (tests/test_torch_compat.py checks that each still exists and still matches).

A torch upgrade that renames or drops one of these breaks this module and its test, not the
callers: each wrapper says what the caller may fall back to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# oneDNN's convolution with a "sum" post-op, in place on `other` (what Inductor fuses a conv +
# residual add into). None where oneDNN or the op is missing: callers then take the public path.
_CONV_ADD_RELU_ = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise_", None) \
    if torch.backends.mkldnn.is_available() else None


def has_conv_add_relu_() -> bool:
    return _CONV_ADD_RELU_ is not None


def conv_add_relu_(other: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   padding, stride, dilation, groups: int) -> torch.Tensor:
    """relu(conv2d(x, weight, bias) + other), written into `other` (returned). CPU float32 only.
    Public equivalent: `torch.relu_(other.add_(F.conv2d(x, weight, bias, stride, padding, dilation, groups)))`."""
    return _CONV_ADD_RELU_.binary(other, x, weight, bias, list(padding), list(stride), list(dilation), groups,
                                  "add", 1.0, "relu", [], "")


def conv_add_relu_public(other, x, weight, bias, padding, stride, dilation, groups):
    """What conv_add_relu_ computes, with public ops only (the fallback and the test's reference)."""
    return torch.relu_(other.add_(F.conv2d(x, weight, bias, stride, padding, dilation, groups)))


def mkldnn_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (no public query exists)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def mkldnn_fp16_supported() -> bool:
    """Whether oneDNN runs float16 natively on this CPU (no public query exists)."""
    return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())


def version(t: torch.Tensor) -> int:
    """The tensor's in-place modification counter (Tensor._version): caches of derived forms of a
    weight (packed, transformed) compare it to notice in-place edits."""
    return t._version
