"""Fused ASPP (DeepLabV3's atrous spatial pyramid pooling), in torchvision's layout.

torchvision.models.segmentation.deeplabv3.ASPP:
    convs[0]      1x1 conv -> BN -> ReLU
    convs[1..R]   3x3 conv, padding = dilation = rate -> BN -> ReLU     (rates (12, 24, 36) or (6, 12, 18))
    convs[-1]     image pooling: global average -> 1x1 conv -> BN -> ReLU -> broadcast to H x W
    project       concat -> 1x1 conv -> BN -> ReLU -> Dropout (identity at inference)

Fused form (`fuse(module)` -> AsppParams): every BN is folded into its convolution. The pooling
branch is constant over space, so instead of broadcasting it and concatenating it, it becomes a
per-image bias of the projection:
    proj_bias[n] = b_proj + W_proj[:, pool_slice] @ relu(W_pool @ mean_hw(x[n]) + b_pool)
and the concatenated tensor holds only the spatial branches. On the triton backend the spatial
branches run in one launch writing straight into that concatenated NHWC tensor (kernels/aspp.py);
on the CPU ("native") each branch writes its slice of the concatenation, by Winograd where that
pays (ops/winograd.py) and by torch's convolution otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .atrous_conv import check_input, fold_bn, folded_conv, native, resolve


# ----------------------------------------------------------------------------- reference (the spec)
def reference(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """The plain modules, step by step (module in eval mode: BN uses running statistics, no dropout)."""
    if module.training:
        raise ValueError("aspp.reference: the ASPP module must be in eval mode (module.eval())")
    branches = [branch(x) for branch in module.convs[:-1]]
    pool = module.convs[-1]  # AdaptiveAvgPool2d(1), conv, BN, ReLU; then upsampled (a broadcast)
    pooled = pool[3](pool[2](pool[1](pool[0](x))))
    branches.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
    return module.project(torch.cat(branches, dim=1))


# ----------------------------------------------------------------------------- fused parameters
@dataclass
class AsppParams:
    """Folded ASPP weights. Spatial branch i: conv(branch_weights[i], dilation=dilations[i], 'same'
    padding) + branch_biases[i] + ReLU. Pool: relu(pool_weight @ mean(x) + pool_bias). Projection:
    relu(proj_weight * concat(spatial) + proj_bias + proj_pool_weight @ pool)."""
    branch_weights: list            # [Cout, Cin, 1, 1] then [Cout, Cin, 3, 3] per rate
    branch_biases: list             # [Cout] each
    dilations: tuple                # 1 for the 1x1 branch, then the rates
    pool_weight: torch.Tensor       # [Cout, Cin]
    pool_bias: torch.Tensor         # [Cout]
    proj_weight: torch.Tensor       # [Cout, B*Cout, 1, 1], the spatial branches' columns
    proj_pool_weight: torch.Tensor  # [Cout, Cout], the pooling branch's columns
    proj_bias: torch.Tensor         # [Cout]
    _triton_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def in_channels(self) -> int:
        return self.pool_weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.pool_weight.shape[0]

    def to(self, device=None, dtype=None) -> "AsppParams":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return AsppParams([move(w) for w in self.branch_weights], [move(b) for b in self.branch_biases],
                          self.dilations, move(self.pool_weight), move(self.pool_bias),
                          move(self.proj_weight), move(self.proj_pool_weight), move(self.proj_bias))


def conv_bn_relu(layers: list, what: str) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """The (conv, bn) of layers [conv, BN, ReLU, ...], checking it is what ASPP builds."""
    conv, bn = layers[0], layers[1]
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(layers[2], nn.ReLU)):
        raise ValueError(f"aspp.fuse: {what} is not conv -> BatchNorm2d -> ReLU: {layers}")
    if conv.groups != 1 or conv.stride != (1, 1):
        raise ValueError(f"aspp.fuse: {what} must be an ungrouped stride-1 convolution: {conv}")
    return conv, bn


def fuse(module: nn.Module) -> AsppParams:
    """AsppParams from a torchvision ASPP module (its BN running statistics are folded in)."""
    if not (hasattr(module, "convs") and hasattr(module, "project") and len(module.convs) >= 2):
        raise TypeError(f"aspp.fuse: expected torchvision's ASPP (convs, project), got {type(module).__name__}")
    weights, biases, dilations = [], [], []
    for i, branch in enumerate(module.convs[:-1]):
        conv, bn = conv_bn_relu(list(branch), f"convs[{i}]")
        k, d = conv.kernel_size, conv.dilation
        same = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        if k[0] != k[1] or k[0] % 2 == 0 or d[0] != d[1] or conv.padding != same:
            raise ValueError(f"aspp.fuse: convs[{i}] must be a square odd kernel with 'same' padding: {conv}")
        w, b = fold_bn(conv.weight, conv.bias, bn)
        weights.append(w.contiguous(memory_format=torch.channels_last))  # the fast CPU layout
        biases.append(b)
        dilations.append(d[0])
    pool = module.convs[-1]
    if not isinstance(pool[0], nn.AdaptiveAvgPool2d):
        raise ValueError(f"aspp.fuse: convs[-1] must be the image-pooling branch, got {pool}")
    pconv, pbn = conv_bn_relu(list(pool)[1:], "convs[-1] (pooling)")
    pw, pb = fold_bn(pconv.weight, pconv.bias, pbn)
    proj, proj_bn = conv_bn_relu(list(module.project), "project")
    jw, jb = fold_bn(proj.weight, proj.bias, proj_bn)
    spatial = len(weights) * weights[0].shape[0]
    cout = pw.shape[0]
    if jw.shape[1] != spatial + cout or jw.shape[2:] != (1, 1):
        raise ValueError(f"aspp.fuse: project expects {jw.shape[1]} channels, branches give {spatial + cout}")
    return AsppParams(weights, biases, tuple(dilations), pw.flatten(1), pb,
                      jw[:, :spatial].contiguous(), jw[:, spatial:, 0, 0].contiguous(), jb)


# ----------------------------------------------------------------------------- public op
def projection_bias(x: torch.Tensor, params: AsppParams) -> torch.Tensor:
    """[N, Cout] float32: the projection bias with the image-pooling branch folded in."""
    pooled = x.float().mean(dim=(2, 3))                                          # [N, Cin]
    feature = F.relu(F.linear(pooled, params.pool_weight.float(), params.pool_bias.float()))
    return F.linear(feature, params.proj_pool_weight.float(), params.proj_bias.float())


def aspp(x: torch.Tensor, params: AsppParams, backend: str = "auto") -> torch.Tensor:
    """Fused ASPP forward: x [N, Cin, H, W] float32/float16/bfloat16 -> [N, Cout, H, W] in x's dtype."""
    if not isinstance(params, AsppParams):
        raise TypeError(f"aspp: params must be AsppParams (from aspp.fuse), got {type(params).__name__}")
    check_input(x, "x", params.in_channels, op="aspp")
    if params.pool_weight.device != x.device:
        raise ValueError(f"aspp: params are on {params.pool_weight.device} but x is on {x.device}")
    chosen = resolve(backend, x.device, "aspp")
    proj_bias = projection_bias(x, params)
    if chosen == "triton":
        from ..kernels import aspp as kernel

        return kernel.aspp(x, params, proj_bias)

    if chosen == "native":  # every branch writes its slice of the concatenation (Winograd or torch)
        n, _, h, w = x.shape
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        cat = torch.empty((n, sum(wt.shape[0] for wt in params.branch_weights), h, w), dtype=x.dtype,
                          memory_format=layout)
        start = 0
        for wt, b, d in zip(params.branch_weights, params.branch_biases, params.dilations):
            part = cat[:, start:start + wt.shape[0]]
            y = native(x, wt, b, (1, 1), (d * (wt.shape[-1] - 1) // 2,) * 2, (d, d), "relu", out=part)
            if y is not part:
                part.copy_(y)
            start += wt.shape[0]
        return native(cat, params.proj_weight, proj_bias, (1, 1), (0, 0), (1, 1), "relu")

    def conv_relu(inp, w, b, padding, dilation):  # the folded math, plainly
        return F.relu(folded_conv(inp, w.to(inp.dtype), b, (1, 1), padding, dilation, 1))

    branches = [conv_relu(x, w, b, (d * (w.shape[-1] - 1) // 2,) * 2, (d, d))
                for w, b, d in zip(params.branch_weights, params.branch_biases, params.dilations)]
    return conv_relu(torch.cat(branches, 1), params.proj_weight, proj_bias, (0, 0), (1, 1))


class FusedASPP(nn.Module):
    """Inference replacement for torchvision's ASPP module: `FusedASPP(aspp_module)`."""

    def __init__(self, module: nn.Module, backend: str = "auto"):
        super().__init__()
        self.params = fuse(module)
        self.backend = backend

    def _apply(self, fn, recurse=True):  # .to(device / dtype) moves the folded weights too
        probe = fn(self.params.pool_weight)
        self.params = self.params.to(probe.device, probe.dtype)
        return super()._apply(fn, recurse)

    def forward(self, x):
        return aspp(x, self.params, self.backend)
