"""atrous_conv in plain PyTorch: the specification the native and Triton backends are tested against."""
from __future__ import annotations

import torch.nn.functional as F

from .. import activation as activations
from .geometry import conv_geometry


def folded_conv(x, weight, bias, stride, padding, dilation, groups):
    """F.conv2d in x's dtype; a [N, Cout] bias (one per image) is added after the convolution."""
    b = bias if bias is None or bias.dtype == x.dtype else bias.to(x.dtype)
    if b is None or b.dim() == 1:
        return F.conv2d(x, weight, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, weight, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.add_(b[:, :, None, None])


def reference(x, weight, bias=None, bn=None, stride=1, padding=None, dilation=1, activation="relu",
              groups=1):
    """conv2d(dilation=d) + BatchNorm (eval, when bn is given) + activation, unfused. bias: None,
    [Cout] or [N, Cout] (one per image)."""
    stride, padding, dilation = conv_geometry(weight, stride, padding, dilation)
    y = folded_conv(x, weight, bias, stride, padding, dilation, groups)
    if bn is not None:
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return activations.apply(y, activation)
