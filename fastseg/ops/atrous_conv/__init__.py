"""Fused atrous (dilated) convolution: conv + batch-norm (folded) + activation in one op.

    w, b = fold_batchnorm(conv.weight, conv.bias, bn)    # once, at model-rewrite time (models/rewrite.py)
    y = atrous_conv(x, w, b, padding=12, dilation=12, activation="relu")

The activation is any name of the one activation table (ops/activation.py). Backends:
  reference  F.conv2d with the given (folded) weights, then the activation: plain PyTorch (naive.py).
  triton     triton_kernel.py, an implicit GEMM over NHWC tiles with bias and activation fused
             (CUDA tensors; CPU tensors under TRITON_INTERPRET=1). Output is channels_last. Fuses the
             activations that have a fastseg._C.Activation code; "auto" takes the reference for others.
             fp32 input uses TF32 tensor cores when torch.backends.cudnn.allow_tf32 is set (torch's
             default for convolutions, ~1e-3 relative error), exact fp32 otherwise.
  auto       CPU tensors: native. CUDA tensors: the reference (cuDNN) unless the convolution table
             recorded on this GPU says Triton is faster for this very shape (ops/_conv_table.py).
  native     CPU tensors. Stride-1 3x3 'same' convolutions on channels_last float32 input run as
             Winograd F(4x4, 3x3) or F(6x6, 3x3) (ops/winograd: fastseg's C++ transforms around
             torch.bmm; 36 multiplies per 4x4 outputs instead of 144) wherever its tiles pay, which is every
             dilation of a dilated ResNet and ASPP's rate 12 at 512x1024; the rest is torch's own
             convolution (oneDNN, which skips the padded taps of large dilations) with the folded
             weights and the activation applied in place, in channels_last when the input is.
"""
from __future__ import annotations

import torch

from .. import _conv_table, winograd
from .. import activation as activations
from .._dispatch import Op, resolve
from .geometry import check_input, conv_geometry, output_size
from .naive import folded_conv, reference  # noqa: F401  (the specification, exported with the op)

OP = Op("atrous_conv", native_needs_extension=False)  # without fastseg._C, "native" is torch's CPU conv


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
    activations.get(activation)


# ----------------------------------------------------------------------------- public op
def atrous_conv(x, weight, bias=None, stride=1, padding=None, dilation=1, activation="relu",
                out=None, groups=1, backend="auto"):
    """activation(conv2d(x, weight, bias, stride, padding, dilation)) with batch-norm already folded.

    x: [N, Cin, H, W] float32 / float16 / bfloat16, NCHW or channels_last.
    weight: [Cout, Cin/groups, KH, KW] (e.g. from models.rewrite.fold_batchnorm), converted to x's
    dtype; bias: None, [Cout], or [N, Cout] for a per-image bias (ASPP's folded image pooling).
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
    return dispatch(x, weight, bias, stride, padding, dilation, activation, groups, backend, out)


def dispatch(x, weight, bias, stride, padding, dilation, activation, groups=1, backend="auto", out=None):
    """atrous_conv on arguments already checked, the geometry as pairs: what the modules of
    models/rewrite.py call on every frame (they check their convolution once, when they are built)."""
    no_epilogue = None if activations.get(activation).fused else f"the Triton epilogue has no {activation!r}"
    if backend == "auto" and x.device.type == "cuda" and not _conv_table.triton_wins(
            _conv_table.atrous_key(x, weight, stride, padding, dilation, groups), x,
            lambda x, backend: dispatch(x, weight, bias, stride, padding, dilation, activation, groups, backend)):
        backend = "reference"  # cuDNN: the GPU's table does not list this convolution for Triton
    chosen = resolve(OP, backend, x.device, triton_refuses=no_epilogue)
    if chosen == "triton":
        from . import triton_kernel as kernel

        if out is None:
            oh, ow = output_size(x.shape[2], x.shape[3], weight.shape[2:], stride, padding, dilation)
            out = torch.empty((x.shape[0], weight.shape[0], oh, ow), device=x.device, dtype=x.dtype,
                              memory_format=torch.channels_last)
        return kernel.atrous_conv(x, weight, bias, out, stride, padding, dilation, activation, groups)
    if chosen == "native":
        y = native(x, weight, bias, stride, padding, dilation, activation, groups, out=out)
    else:  # the folded math, plainly
        y = reference(x, weight.to(x.dtype), bias, None, stride, padding, dilation, activation, groups)
    if out is not None and y is not out:
        return out.copy_(y)
    return y


def native(x, weight, bias, stride, padding, dilation, activation, groups=1, out=None):
    """CPU: Winograd where it applies and pays (written straight into `out` when given), otherwise
    torch's convolution on the folded weights with the activation in place on its output."""
    if (bias is None or bias.dim() == 1) and winograd.applies(x, weight, stride, padding, dilation, groups,
                                                              activation):
        if out is not None and (out.stride(1) != 1 or out.dtype != torch.float32):
            out = None  # not a channels-innermost float32 view: the caller copies
        return winograd.conv2d(x, weight, bias, dilation[0], activation, out=out)
    # A channels_last input gets a channels_last weight (what torch's NHWC convolution wants; a model
    # moved to channels_last holds its weights so already and nothing is copied); otherwise the
    # weight goes as it is and torch picks the layout, as a plain nn.Conv2d call would.
    w = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        w = w.contiguous(memory_format=torch.channels_last)
    return activations.apply(folded_conv(x, w, bias, stride, padding, dilation, groups), activation)
