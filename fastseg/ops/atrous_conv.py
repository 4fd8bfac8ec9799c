"""Fused atrous (dilated) convolution: conv + batch-norm (folded) + activation in one op.

    w, b = fold_bn(conv.weight, conv.bias, bn)           # once, at model-rewrite time
    y = atrous_conv(x, w, b, padding=12, dilation=12, activation="relu")

Backends:
  reference  F.conv2d with the given (folded) weights, then the activation: plain PyTorch.
  triton     kernels/atrous_conv.py, an implicit GEMM over NHWC tiles with bias and activation fused
             (CUDA tensors; CPU tensors under TRITON_INTERPRET=1). Output is channels_last.
  native     CPU tensors. Stride-1 3x3 'same' convolutions on channels_last float32 input run as
             Winograd F(4x4, 3x3) or F(6x6, 3x3) (ops/winograd.py: fastseg's C++ transforms around
             torch.bmm; 36 multiplies per 4x4 outputs instead of 144) wherever its tiles pay, which is every
             dilation of a dilated ResNet and ASPP's rate 12 at 512x1024; the rest is torch's own
             convolution (oneDNN, which skips the padded taps of large dilations) with the folded
             weights and the activation applied in place, in channels_last when the input is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import _dispatch, winograd

ACTIVATIONS = (None, "relu", "relu6", "hardswish")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- reference (the spec)
def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm2d into the preceding convolution's weight and bias.

    bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta
                = (W * s) * x + (b - mean) * s + beta,   s = gamma / sqrt(var + eps)
    Computed in float64, returned in the weight's dtype.
    """
    w64 = weight.detach().double()
    scale = bn.running_var.detach().double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double()
    if bias is not None:
        shift = shift + bias.detach().double()
    shift = shift * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    w = w64 * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    return w.to(weight.dtype), shift.to(weight.dtype)


def activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    if activation == "hardswish":
        return F.hardswish(y)
    return y


def reference(x, weight, bias=None, bn=None, stride=1, padding=None, dilation=1, activation="relu",
              groups=1):
    """F.conv2d(dilation=d) + BatchNorm (eval, when bn is given) + activation, unfused."""
    stride, padding, dilation = conv_geometry(weight, stride, padding, dilation)
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if bn is not None:
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return activate(y, activation)


# ----------------------------------------------------------------------------- argument checks
def pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"atrous_conv: {name} must be an int or a pair of ints, got {value!r}")


def conv_geometry(weight, stride, padding, dilation):
    """(stride, padding, dilation) as pairs; padding None or "same" means dilation * (k - 1) / 2
    (the atrous convention: padding = dilation for a 3x3 kernel, output size = input size at stride 1)."""
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    kh, kw = weight.shape[-2:]
    if padding is None or padding == "same":
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"atrous_conv: padding='same' needs an odd kernel, got {kh}x{kw}")
        padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    padding = pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"atrous_conv: stride must be >= 1, got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"atrous_conv: dilation must be >= 1, got {dilation}")
    if min(padding) < 0:
        raise ValueError(f"atrous_conv: padding must be >= 0, got {padding}")
    return stride, padding, dilation


def output_size(h, w, kernel, stride, padding, dilation) -> tuple[int, int]:
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation))


def check_input(x, name: str = "x", channels: int | None = None, op: str = "atrous_conv") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: {name} must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: {name} has an empty batch (shape {tuple(x.shape)})")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{op}: {name} has {x.shape[1]} channels, the weights expect {channels}")


def check_activation(activation, op: str = "atrous_conv") -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {ACTIVATIONS}, got {activation!r}")


def check_arguments(x, weight, bias, activation, groups):
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError("atrous_conv: weight must be a 4-D tensor [Cout, Cin/groups, KH, KW], got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"atrous_conv: weight must be floating point, got {weight.dtype}")
    if not isinstance(groups, int) or groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"atrous_conv: groups must be a positive int dividing Cout={weight.shape[0]}, "
                         f"got {groups!r}")
    check_input(x, "x", weight.shape[1] * groups)
    cout = weight.shape[0]
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
            raise TypeError("atrous_conv: bias must be a floating-point tensor or None")
        if tuple(bias.shape) not in ((cout,), (x.shape[0], cout)):
            raise ValueError(f"atrous_conv: bias must have shape [{cout}] (or [N, {cout}] per image), "
                             f"got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"atrous_conv: {name} is on {t.device} but x is on {x.device}")
    check_activation(activation)


def resolve(backend: str, device: torch.device, op: str) -> str:
    """As _dispatch.resolve, except that the CPU 'native' path is torch's own convolution (no extension)."""
    if backend in ("auto", "native") and device.type == "cpu":
        return "native"
    return _dispatch.resolve(backend, device, op)


# ----------------------------------------------------------------------------- public op
def atrous_conv(x, weight, bias=None, stride=1, padding=None, dilation=1, activation="relu",
                out=None, groups=1, backend="auto"):
    """activation(conv2d(x, weight, bias, stride, padding, dilation)) with batch-norm already folded.

    x: [N, Cin, H, W] float32 / float16 / bfloat16, NCHW or channels_last.
    weight: [Cout, Cin/groups, KH, KW] (e.g. from fold_bn), converted to x's dtype; bias: None, [Cout], or
    [N, Cout] for a per-image bias (used by ASPP's folded image-pooling branch).
    padding: int, pair, or None / "same" = dilation * (k - 1) / 2.
    out: optional [N, Cout, OH, OW] tensor (any strides, e.g. a channel slice) to write into.
    groups: as in F.conv2d (the triton backend runs grouped / depthwise convolutions correctly but
    without tensor-core efficiency).
    Inference only: no autograd through the triton backend.
    Returns [N, Cout, OH, OW] in x's dtype (channels_last from the triton backend, and from the
    native backend when x is channels_last).
    """
    check_arguments(x, weight, bias, activation, groups)
    stride, padding, dilation = conv_geometry(weight, stride, padding, dilation)
    oh, ow = output_size(x.shape[2], x.shape[3], weight.shape[2:], stride, padding, dilation)
    if oh < 1 or ow < 1:
        raise ValueError(f"atrous_conv: input {tuple(x.shape[2:])} is too small for kernel "
                         f"{tuple(weight.shape[2:])} with dilation {dilation}, padding {padding}")
    shape = (x.shape[0], weight.shape[0], oh, ow)
    if out is not None and (tuple(out.shape) != shape or out.dtype != x.dtype or out.device != x.device):
        raise ValueError(f"atrous_conv: out must be a {x.dtype} tensor of shape {shape} on {x.device}, "
                         f"got {out.dtype} {tuple(out.shape)} on {out.device}")
    chosen = resolve(backend, x.device, "atrous_conv")
    if chosen == "triton":
        from ..kernels import atrous_conv as kernel

        if out is None:
            out = torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
        return kernel.atrous_conv(x, weight, bias, out, stride, padding, dilation, activation, groups)
    if chosen == "native":
        y = native(x, weight, bias, stride, padding, dilation, activation, groups, out=out)
    else:  # the folded math, plainly
        y = activate(folded_conv(x, weight.to(x.dtype), bias, stride, padding, dilation, groups), activation)
    if out is not None and y is not out:
        return out.copy_(y)
    return y


def folded_conv(x, weight, bias, stride, padding, dilation, groups):
    """F.conv2d in x's dtype; a [N, Cout] bias (one per image) is added after the convolution."""
    b = None if bias is None else bias.to(x.dtype)
    if b is None or b.dim() == 1:
        return F.conv2d(x, weight, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = F.conv2d(x, weight, None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.add_(b[:, :, None, None])


def native(x, weight, bias, stride, padding, dilation, activation, groups=1, out=None):
    """CPU: Winograd where it applies and pays (written straight into `out` when given), otherwise
    torch's convolution on the folded weights with the activation in place on its output."""
    if (bias is None or bias.dim() == 1) and winograd.applies(x, weight, stride, padding, dilation, groups,
                                                              activation):
        if out is not None and (out.stride(1) != 1 or out.dtype != torch.float32):
            out = None  # not a channels-innermost float32 view: the caller copies
        return winograd.conv2d(x, weight, bias, dilation[0], activation, out=out)
    # Weight in the input's layout: torch picks channels_last output when either is channels_last,
    # and the modules below store channels_last weights so that the fast NHWC path copies nothing.
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        w = weight.to(x.dtype).contiguous(memory_format=torch.channels_last)
    else:
        w = weight.to(x.dtype).contiguous()
    y = folded_conv(x, w, bias, stride, padding, dilation, groups)
    if activation == "relu":
        y.relu_()
    elif activation == "relu6":
        y.clamp_(0.0, 6.0)
    elif activation == "hardswish":
        F.hardswish(y, inplace=True)
    return y


class AtrousConv2d(nn.Module):
    """Inference module holding folded weights: what a conv + BN + activation block becomes."""

    def __init__(self, weight, bias, stride=1, padding=None, dilation=1, activation="relu", groups=1):
        super().__init__()
        check_activation(activation)
        weight = weight.detach().clone(memory_format=torch.channels_last)  # the fast CPU layout
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation = conv_geometry(weight, stride, padding, dilation)
        self.activation = activation
        self.groups = groups
        self.backend = "auto"

    @classmethod
    def from_modules(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, activation="relu"):
        """Fold conv [+ bn] into one module; activation is None, relu, relu6 or hardswish."""
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError(f"AtrousConv2d: needs explicit zero padding, got {conv.padding!r} "
                             f"({conv.padding_mode})")
        weight, bias = conv.weight, conv.bias
        if bn is not None:
            weight, bias = fold_bn(weight, bias, bn)
        return cls(weight, bias, conv.stride, conv.padding, conv.dilation, activation, conv.groups)

    def forward(self, x):
        return atrous_conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                           self.activation, groups=self.groups, backend=self.backend)

    def extra_repr(self):
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={tuple(self.weight.shape[2:])}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, activation={self.activation}")
