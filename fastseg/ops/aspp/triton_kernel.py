"""Triton ASPP: every spatial branch in one launch, written straight into the concatenated output.

DeepLabV3's ASPP runs B spatial branches on the same input (a 1x1 convolution and 3x3 convolutions
at dilations r1, r2, r3), each conv + BN + ReLU, and concatenates them. Here the grid's third axis is
the branch: a program loads its branch's kernel size, dilation and weight offset from small tables
and runs the same implicit-GEMM tile as ops/atrous_conv/triton_kernel.py, storing into channels
[branch * Cout, (branch + 1) * Cout) of one NHWC buffer. No per-branch tensor, no torch.cat.

The image-pooling branch is constant over space, so it never enters that buffer: the launcher turns
it into a per-image bias of the projection (proj_bias[n] = b_proj + W_proj[:, pool] @ pool[n]), and
the projection is one more atrous_conv launch (1x1, per-image bias, ReLU).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch
from .. import activation as activations
from ..atrous_conv.prepared import kept, pack_weight
from ..atrous_conv.tiles import launch_config
from ..atrous_conv.triton_kernel import atrous_conv as conv_launch
from ..atrous_conv.triton_kernel import (
    bias_activation_store,
    channels_last,
    check_pixels,
    conv_tile,
    grid,
    output_pixels,
    precision,
    tap_origin,
    upcast,
)


@triton.jit
def _aspp_branches_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, ksize_ptr, dil_ptr, woff_ptr,
                          M, H, W, Cin, cin_pad, w_cols16, Cout,
                          sxn, sxh, sxw, son, soc, soh, sow,
                          ACT: tl.constexpr, CIN_FULL: tl.constexpr, UPCAST: tl.constexpr,
                          PRECISION: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    branch = tl.program_id(2)
    k = tl.load(ksize_ptr + branch)          # 1 for the 1x1 branch, 3 for the atrous ones
    dil = tl.load(dil_ptr + branch)
    pad = dil * (k - 1) // 2                 # 'same' padding: output size = input size
    w_cols = w_cols16 * 16
    # this branch's packed [k*k*cin_pad, w_cols] block, at this tile's first output channel; its
    # offset is stored in units of 16 elements, so the compiler knows B rows stay 16-byte aligned
    w_tile = w_ptr + tl.load(woff_ptr + branch) * 16 + pid_n * BLOCK_N
    n, oh, ow, mask_m = output_pixels(pid_m, M, H, W, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    co = pid_n * BLOCK_N + offs_n
    pix, ih0, iw0 = tap_origin(n, oh, ow, sxn, sxh, sxw, 0, 1, 1, pad, pad)
    acc = conv_tile(x_ptr, w_tile, pix, ih0, iw0, mask_m, offs_n, H, W, Cin, cin_pad, w_cols, sxh, sxw,
                    k, k, dil, dil, BLOCK_M, BLOCK_N, BLOCK_K, CIN_FULL, True, UPCAST, PRECISION)
    bias_activation_store(acc, out_ptr, bias_ptr + branch * Cout, n, oh, ow, mask_m, co, co < Cout,
                          0, son, soc, soh, sow, branch * Cout, True, ACT)


def pack_branches(params, dtype: torch.dtype, device: torch.device, block_k: int, block_n: int) -> dict:
    """Kernel tables for the spatial branches (packed weights one after the other, fp32 biases, kernel
    sizes, dilations, offsets of the packed blocks in units of 16 elements), kept on params until a
    branch tensor changes (atrous_conv/prepared.py)."""
    sources = [*params.branch_weights, *params.branch_biases]

    def make() -> dict:
        blocks = [pack_weight(w.to(device), dtype, 1, block_k, block_n).reshape(-1) for w in params.branch_weights]
        offsets = torch.tensor([0] + [b.numel() // 16 for b in blocks[:-1]], dtype=torch.int64).cumsum(0)
        return dict(
            weight=torch.cat(blocks),
            bias=torch.cat([b.to(device, torch.float32) for b in params.branch_biases]),
            ksize=torch.tensor([w.shape[-1] for w in params.branch_weights], dtype=torch.int32, device=device),
            dilation=torch.tensor(params.dilations, dtype=torch.int32, device=device),
            offsets=offsets.to(device),
            cin_pad=triton.cdiv(params.in_channels, block_k) * block_k,
            cols=triton.cdiv(params.out_channels, block_n) * block_n,
        )

    return kept(params, ("branches", dtype, device, block_k, block_n, params.dilations), sources, make)


def aspp_branches(x: torch.Tensor, params, out: torch.Tensor) -> torch.Tensor:
    """All spatial branches (conv + folded BN + ReLU) into out [N, B*Cout, H, W] (channels_last)."""
    N, Cin, H, W = x.shape
    M = N * H * W
    check_pixels(M, "aspp")
    x = channels_last(x)
    branches, cout = len(params.branch_weights), params.out_channels
    cfg = launch_config(x.dtype, M, Cin, cout, _launch.tile_target(x.device))
    t = pack_branches(params, x.dtype, x.device, cfg["BLOCK_K"], cfg["BLOCK_N"])
    _launch.launch(
        _aspp_branches_kernel, grid(M, triton.cdiv(cout, cfg["BLOCK_N"]), cfg, branches), x.device,
        x, t["weight"], t["bias"], out, t["ksize"], t["dilation"], t["offsets"],
        M, H, W, Cin, t["cin_pad"], t["cols"] // 16, cout,
        x.stride(0), x.stride(2), x.stride(3),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        ACT=activations.code("relu"), CIN_FULL=Cin % cfg["BLOCK_K"] == 0, UPCAST=upcast(x.dtype),
        PRECISION=precision(x.dtype), **cfg)
    return out


def aspp(x: torch.Tensor, params, proj_bias: torch.Tensor) -> torch.Tensor:
    """Fused ASPP forward: one launch for the branches, one for the projection.

    proj_bias [N, Cout] float32 already holds the image-pooling branch (see fastseg/ops/aspp/__init__.py)."""
    N, _, H, W = x.shape
    cout = params.out_channels
    cat = torch.empty((N, len(params.branch_weights) * cout, H, W), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last)
    aspp_branches(x, params, cat)
    out = torch.empty((N, cout, H, W), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    return conv_launch(cat, params.proj_weight, proj_bias, out, (1, 1), (0, 0), (1, 1), "relu")
