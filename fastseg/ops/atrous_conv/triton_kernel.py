"""Triton atrous (dilated) convolution: an implicit GEMM over NHWC tiles with bias and activation fused.

Each program computes one output tile of BLOCK_M pixels (flattened n, oh, ow) by BLOCK_N output
channels. Its K loop runs over the kernel taps (kh, kw) and, inside each tap, over blocks of
BLOCK_K input channels: for a tap the A tile is the input pixel each output pixel reads through
that tap (stride, padding and dilation only move the address; pixels that fall in the padding load
zeros through the mask), and the B tile is that tap's [BLOCK_K, BLOCK_N] slice of the packed weight.
Nothing im2col-like is ever written to memory.

Layouts: the input is read through its strides, and the launcher makes it channels_last so that the
K dimension (channels) is contiguous for every pixel. Weights are packed per call into
[groups, KH*KW*Cin/groups, Cout/groups] (tap-major, output channels contiguous) so each B tile is a
dense row block; grid axis 1 runs over (group, output-channel block). Output is
written through strides too, so it may be a channels_last tensor or a channel slice of a larger one
(ASPP's concatenated output, see ops/aspp/triton_kernel.py).

Precision: operands stay in the input dtype (fp16 / bf16 feed tl.dot natively on the GPU) and
accumulate in fp32. Under the interpreter bf16 is stored as raw uint16 and numpy cannot multiply it,
so there (UPCAST) operands are converted to fp32 after loading. fp32 operands follow
torch.backends.cudnn.allow_tf32, as torch's own convolutions do (on by default, unlike
torch.backends.cuda.matmul.allow_tf32): "tf32" tensor-core dots (10-bit mantissa, ~1e-3 relative
error) when it is set, exact "ieee" FMA dots when it is not (`input_precision`). The interpreter
always computes fp32 dots exactly.

Launches go through ops/_launch.py (CUDA's grid limits, the tensor's device); `launch_config` holds
the tile configuration that ships for the GPU and the one the interpreter uses.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ... import _torch_compat
from .. import _launch
from .. import activation as activations
from .._dispatch import triton_interpreted

# The epilogue's activation codes: fastseg._C.Activation's, read through the one activation table.
_RELU = tl.constexpr(activations.code("relu"))
_RELU6 = tl.constexpr(activations.code("relu6"))
_HARDSWISH = tl.constexpr(activations.code("hardswish"))


@triton.jit
def conv_tile(x_ptr, w_ptr, n, oh, ow, mask_m, offs_n, mask_n,
              H, W, cin_base, Cin, Cout, sxn, sxc, sxh, sxw,
              KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """fp32 accumulator [BLOCK_M, BLOCK_N] of one output tile.

    Reads input channels [cin_base, cin_base + Cin) (one group's); w_ptr points at that group's
    packed [KH*KW*Cin, Cout] weight block, Cout being the group's output channels."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K).to(tl.int64)
    for kh in range(0, KH):
        ih = oh * stride_h - pad_h + kh * dil_h
        row_ok = mask_m & (ih >= 0) & (ih < H)
        for kw in range(0, KW):
            iw = ow * stride_w - pad_w + kw * dil_w
            pix_ok = row_ok & (iw >= 0) & (iw < W)
            x_row = n * sxn + ih * sxh + iw * sxw  # int64 offsets of each pixel's channel 0
            w_row = (kh * KW + kw) * Cin           # first packed-weight row of this tap
            for c0 in range(0, Cin, BLOCK_K):
                ck = c0 + offs_k
                k_ok = ck < Cin
                a = tl.load(x_ptr + (x_row[:, None] + (cin_base + ck)[None, :] * sxc),
                            mask=pix_ok[:, None] & k_ok[None, :], other=0.0)
                b = tl.load(w_ptr + ((w_row + ck)[:, None] * Cout + offs_n[None, :]),
                            mask=k_ok[:, None] & mask_n[None, :], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def bias_activation_store(acc, out_ptr, bias_ptr, n, oh, ow, mask_m, offs_n, mask_n,
                          sbn, son, soc, soh, sow, co_base,
                          HAS_BIAS: tl.constexpr, ACT: tl.constexpr):
    """Epilogue: + bias (per channel, or per image and channel when sbn != 0), activation, store."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + (n[:, None] * sbn + offs_n[None, :]),
                       mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        acc += bias.to(tl.float32)
    if ACT == _RELU:
        acc = tl.maximum(acc, 0.0)
    elif ACT == _RELU6:
        acc = tl.minimum(tl.maximum(acc, 0.0), 6.0)
    elif ACT == _HARDSWISH:  # x * relu6(x + 3) / 6
        acc = acc * (tl.minimum(tl.maximum(acc + 3.0, 0.0), 6.0) / 6.0)
    dst = n[:, None] * son + oh[:, None] * soh + ow[:, None] * sow + (co_base + offs_n)[None, :] * soc
    tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def output_pixels(pid_m, M, OH, OW, BLOCK_M: tl.constexpr):
    """(n, oh, ow, mask) of the BLOCK_M output pixels of tile pid_m, as int64."""
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    mask_m = offs_m < M
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)
    return n, oh, ow, mask_m


@triton.jit
def _atrous_conv_kernel(x_ptr, w_ptr, bias_ptr, out_ptr,
                        M, H, W, Cin, Cout, OH, OW, GROUP_BLOCKS,
                        sxn, sxc, sxh, sxw, son, soc, soh, sow, sbn,
                        KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, UPCAST: tl.constexpr,
                        PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Cin / Cout are per group; grid axis 1 runs over (group, block of that group's Cout)."""
    pid_m = tl.program_id(0)
    group = tl.program_id(1) // GROUP_BLOCKS
    pid_n = tl.program_id(1) % GROUP_BLOCKS
    n, oh, ow, mask_m = output_pixels(pid_m, M, OH, OW, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    mask_n = offs_n < Cout
    w_group = w_ptr + group.to(tl.int64) * (KH * KW * Cin * Cout)
    acc = conv_tile(x_ptr, w_group, n, oh, ow, mask_m, offs_n, mask_n,
                    H, W, group * Cin, Cin, Cout, sxn, sxc, sxh, sxw,
                    KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                    BLOCK_M, BLOCK_N, BLOCK_K, UPCAST, PRECISION)
    bias_activation_store(acc, out_ptr, bias_ptr + group * Cout, n, oh, ow, mask_m, offs_n, mask_n,
                          sbn, son, soc, soh, sow, group * Cout, HAS_BIAS, ACT)


def pow2_block(size: int, lo: int, hi: int) -> int:
    """A power-of-two block in [lo, hi] that covers `size` when it can (tl.dot needs >= 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(1, size))))


def launch_config(dtype: torch.dtype, M: int, Cin: int, Cout: int, target: str) -> dict:
    """The fixed tile configuration (autotuning needs a GPU to time on) for `_launch.tile_target`'s
    "gpu" (what ships) or "interpreter".

    Under the interpreter every program is a Python-level step, so tiles are large to keep the
    program count small; on a GPU they are the usual tensor-core shapes (fp32 operands move twice
    the bytes of fp16 ones, so smaller tiles there).
    """
    if target == "interpreter":
        return dict(BLOCK_M=pow2_block(M, 16, 128), BLOCK_N=pow2_block(Cout, 16, 64),
                    BLOCK_K=pow2_block(Cin, 16, 64), num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_M=64, BLOCK_N=pow2_block(Cout, 16, 64), BLOCK_K=pow2_block(Cin, 16, 32),
                    num_warps=4, num_stages=2)
    return dict(BLOCK_M=128, BLOCK_N=pow2_block(Cout, 16, 128), BLOCK_K=pow2_block(Cin, 16, 32),
                num_warps=8 if Cout >= 128 else 4, num_stages=3)


def grid(M: int, channel_blocks: int, cfg: dict, branches: int = 1) -> tuple[int, ...]:
    """Output-pixel tiles on axis 0 (the only axis that may exceed 65535), blocks of output channels
    (all groups') on axis 1, ASPP's branches on axis 2."""
    tiles = (triton.cdiv(M, cfg["BLOCK_M"]), channel_blocks)
    return tiles + (branches,) if branches > 1 else tiles


def pack_weight(weight: torch.Tensor, dtype: torch.dtype, groups: int = 1) -> torch.Tensor:
    """[Cout, Cin/groups, KH, KW] -> [groups, KH*KW*Cin/groups, Cout/groups] contiguous: per group,
    tap-major rows with output channels contiguous (each B tile is a dense row block)."""
    cout, cin_g, kh, kw = weight.shape
    w = weight.to(dtype).reshape(groups, cout // groups, cin_g, kh, kw)
    return w.permute(0, 3, 4, 2, 1).reshape(groups, kh * kw * cin_g, cout // groups).contiguous()


def packed_weight(weight: torch.Tensor, dtype: torch.dtype, groups: int) -> torch.Tensor:
    """pack_weight, cached on the weight tensor itself (a model's folded weights are packed once, not
    on every frame); an in-place change of the weight bumps its version and repacks."""
    key = (dtype, groups, weight.device, _torch_compat.version(weight))
    cached = getattr(weight, "_fastseg_packed", None)
    if cached is None or cached[0] != key:
        cached = (key, pack_weight(weight.detach(), dtype, groups))
        weight._fastseg_packed = cached
    return cached[1]


def precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: fp32 follows torch.backends.cudnn.allow_tf32 like torch's convolutions
    ("tf32" when set, the default; exact "ieee" otherwise). fp16 / bf16 dots ignore it."""
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


def upcast(dtype: torch.dtype) -> bool:
    """Convert operands to fp32 before tl.dot: bf16 under the interpreter (numpy has no bf16)."""
    return triton_interpreted() and dtype == torch.bfloat16


def atrous_conv(x, weight, bias, out, stride, padding, dilation, activation, groups=1):
    """Launch on validated arguments: x [N,Cin,H,W], weight [Cout,Cin/groups,KH,KW] (folded), bias None,
    [Cout] or [N, Cout] (per image), out [N,Cout,OH,OW] with any strides (channels_last or a channel
    slice). Returns out.

    Grouped (e.g. depthwise) convolutions are correct but not efficient here: tl.dot's tiles are at
    least 16 wide, so a depthwise group uses 1/16 of each dimension of them."""
    N, _, H, W = x.shape
    Cout, Cin, KH, KW = weight.shape  # Cin per group
    Cout //= groups
    _, _, OH, OW = out.shape
    x = x.contiguous(memory_format=torch.channels_last)  # channels contiguous: the K dimension
    w = packed_weight(weight, x.dtype, groups)
    has_bias = bias is not None
    if has_bias:
        b = bias.to(device=x.device, dtype=torch.float32).contiguous()
        sbn = b.stride(0) if b.dim() == 2 else 0
    else:
        b, sbn = w, 0  # never read
    M = N * OH * OW
    cfg = launch_config(x.dtype, M, Cin, Cout, _launch.tile_target(x.device))
    group_blocks = triton.cdiv(Cout, cfg["BLOCK_N"])
    _launch.launch(
        _atrous_conv_kernel, grid(M, groups * group_blocks, cfg), x.device,
        x, w, b, out, M, H, W, Cin, Cout, OH, OW, group_blocks,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3), sbn,
        KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        HAS_BIAS=has_bias, ACT=activations.code(activation), UPCAST=upcast(x.dtype),
        PRECISION=precision(x.dtype), **cfg)
    return out
