"""Fused ASPP (DeepLabV3's atrous spatial pyramid pooling), in torchvision's layout.

torchvision.models.segmentation.deeplabv3.ASPP:
    convs[0]      1x1 conv -> BN -> ReLU
    convs[1..R]   3x3 conv, padding = dilation = rate -> BN -> ReLU     (rates (12, 24, 36) or (6, 12, 18))
    convs[-1]     image pooling: global average -> 1x1 conv -> BN -> ReLU -> broadcast to H x W
    project       concat -> 1x1 conv -> BN -> ReLU -> Dropout (identity at inference)

Fused form (AsppParams, built by models/rewrite.py's FusedASPP): every BN is folded into its
convolution. The pooling
branch is constant over space, so instead of broadcasting it and concatenating it, it becomes a
per-image bias of the projection:
    proj_bias[n] = b_proj + W_proj[:, pool_slice] @ relu(W_pool @ mean_hw(x[n]) + b_pool)
and the concatenated tensor holds only the spatial branches. On the triton backend the spatial
branches run in one launch writing straight into that concatenated NHWC tensor (triton_kernel.py);
on the CPU ("native") each branch writes its slice of the concatenation, by Winograd where that
pays (ops/winograd) and by torch's convolution otherwise; the reference is naive.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import _conv_table
from .._dispatch import Op, plain_inference, resolve
from ..atrous_conv import native as native_conv
from ..atrous_conv.geometry import check_input
from .naive import reference

OP = Op("aspp", native_needs_extension=False)  # "native" is the atrous_conv op's (Winograd or torch)


# ----------------------------------------------------------------------------- fused parameters
@dataclass
class AsppParams:
    """Folded ASPP weights (every BN folded into its conv). Spatial branch i: conv(branch_weights[i],
    dilation=dilations[i], 'same' padding) + branch_biases[i] + ReLU. Pool: relu(pool_weight @ mean(x)
    + pool_bias). Projection: relu(proj_weight * concat(spatial) + proj_bias + proj_pool_weight @ pool)."""
    branch_weights: list            # [Cout, Cin, 1, 1] then [Cout, Cin, 3, 3] per rate
    branch_biases: list             # [Cout] each
    dilations: tuple                # 1 for the 1x1 branch, then the rates
    pool_weight: torch.Tensor       # [Cout, Cin]
    pool_bias: torch.Tensor         # [Cout]
    proj_weight: torch.Tensor       # [Cout, B*Cout, 1, 1], the spatial branches' columns
    proj_pool_weight: torch.Tensor  # [Cout, Cout], the pooling branch's columns
    proj_bias: torch.Tensor         # [Cout]
    _fastseg_prepared: dict = field(default_factory=dict, repr=False, compare=False)  # kernel forms (triton_kernel.py)

    @property
    def in_channels(self) -> int:
        return self.pool_weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.pool_weight.shape[0]

    def to(self, device=None, dtype=None) -> AsppParams:
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return AsppParams([move(w) for w in self.branch_weights], [move(b) for b in self.branch_biases],
                          self.dilations, move(self.pool_weight), move(self.pool_bias),
                          move(self.proj_weight), move(self.proj_pool_weight), move(self.proj_bias))


# ----------------------------------------------------------------------------- public op
def projection_bias(x: torch.Tensor, params: AsppParams) -> torch.Tensor:
    """[N, Cout] float32: the projection bias with the image-pooling branch folded in."""
    pooled = x.mean(dim=(2, 3), dtype=torch.float32)   # [N, Cin]; accumulates in fp32 without an fp32 copy of x
    feature = F.relu(F.linear(pooled, params.pool_weight.float(), params.pool_bias.float()))
    return F.linear(feature, params.proj_pool_weight.float(), params.proj_bias.float())


def aspp(x: torch.Tensor, params: AsppParams, backend: str = "auto") -> torch.Tensor:
    """Fused ASPP forward: x [N, Cin, H, W] float32/float16/bfloat16 -> [N, Cout, H, W] in x's dtype.

    backend "auto": native on CPU tensors; on CUDA tensors the reference (cuDNN convolutions) unless
    the convolution table recorded on this GPU says the Triton kernels are faster for this shape
    (ops/_conv_table.py). fp32 on Triton follows torch.backends.cudnn.allow_tf32 (TF32 tensor
    cores when set, torch's default for convolutions; exact fp32 otherwise)."""
    if not isinstance(params, AsppParams):
        raise TypeError(f"aspp: params must be AsppParams (built by models.rewrite.FusedASPP), "
                        f"got {type(params).__name__}")
    check_input(x, "x", params.in_channels, op="aspp")
    if params.pool_weight.device != x.device:
        raise ValueError(f"aspp: params are on {params.pool_weight.device} but x is on {x.device}")
    if backend == "auto" and x.device.type == "cuda" and not _conv_table.triton_wins(
            _conv_table.aspp_key(x, params.out_channels, [w.shape[-1] for w in params.branch_weights],
                                 params.dilations), x, lambda x, backend: aspp(x, params, backend)):
        backend = "reference"  # cuDNN: the GPU's table does not list this ASPP for Triton
    chosen = resolve(OP, backend, x.device)
    if chosen == "native" and not plain_inference(x):
        # the native path writes each branch into a slice of one preallocated tensor: a tracer or an
        # ONNX export would record that tensor as a constant and the writes not at all
        chosen = "reference"
    if chosen == "reference":
        return reference(x, params)
    proj_bias = projection_bias(x, params)
    if chosen == "triton":
        from . import triton_kernel as kernel

        return kernel.aspp(x, params, proj_bias)

    # native: every branch writes its slice of the concatenation (Winograd or torch)
    n, _, h, w = x.shape
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    cat = torch.empty((n, sum(wt.shape[0] for wt in params.branch_weights), h, w), dtype=x.dtype,
                      memory_format=layout)
    start = 0
    for wt, b, d in zip(params.branch_weights, params.branch_biases, params.dilations):
        part = cat[:, start:start + wt.shape[0]]
        y = native_conv(x, wt, b, (1, 1), (d * (wt.shape[-1] - 1) // 2,) * 2, (d, d), "relu", out=part)
        if y is not part:
            part.copy_(y)
        start += wt.shape[0]
    return native_conv(cat, params.proj_weight, proj_bias, (1, 1), (0, 0), (1, 1), "relu")
