"""Triton atrous (dilated) convolution: an implicit GEMM over NHWC tiles with bias and activation fused.

Each program computes one output tile of BLOCK_M pixels (flattened n, oh, ow) by BLOCK_N output
channels. K is taps x input channels, KH * KW * Cin, walked by ONE loop of BLOCK_K steps: step k
reads channel block k % (Cin_pad / BLOCK_K) of tap k / (Cin_pad / BLOCK_K). The A tile of a step is
the input pixel each output pixel reads through that tap (stride, padding and dilation only move the
address; pixels in the padding load zeros through a per-tap mask), the B tile rows k * BLOCK_K.. of
the packed weight. Nothing im2col-like is ever written to memory. Because taps and channels are one
loop, Triton's software pipeline (num_stages) keeps loading the next steps across tap boundaries
instead of draining and refilling at each of the nine taps.

The tap of a step is carried from step to step (channel block, then kw, then kh advance like the
digits of a counter), so a step costs a few scalar adds and selects, no integer division; a tap
changes the A address by a scalar (dh * row stride + dw * pixel stride). Which taps of a row read
inside the image (the rest is padding, loaded as zeros) is found once per tile, one bit per tap
(TAP_BITS, kernels up to 8x8), so a step's pixel mask is a shift and a test per row. Pixel indices
are int32 (the launcher checks M < 2^31); addresses are int64 (inputs may exceed 2^31 elements).

Layouts: the input must be channels_last (channel stride 1: the K dimension is contiguous, so each
thread loads 16 bytes at a time); models run on CUDA are kept channels_last (the Segmenter's torch
runtime converts weights and input once), and only a direct call with NCHW input pays a copy. Weights
are packed once (prepared.py: [groups, KH*KW*Cin_pad, Cout_pad], zero-padded to the tile, so B tiles
need no mask); grid axis 1 runs over (group, output-channel block). Output is written through
strides, so it may be a channels_last tensor or a channel slice of a larger one (ASPP's
concatenated output, see ops/aspp/triton_kernel.py).

Precision: operands stay in the input dtype (fp16 / bf16 feed tl.dot natively on the GPU) and
accumulate in fp32. Under the interpreter bf16 is stored as raw uint16 and numpy cannot multiply it,
so there (UPCAST) operands are converted to fp32 after loading. fp32 operands follow
torch.backends.cudnn.allow_tf32, as torch's own convolutions do (on by default, unlike
torch.backends.cuda.matmul.allow_tf32): "tf32" tensor-core dots (10-bit mantissa, ~1e-3 relative
error) when it is set, exact "ieee" FMA dots when it is not (`input_precision`). The interpreter
always computes fp32 dots exactly.

Launches go through ops/_launch.py (CUDA's grid limits, the tensor's device); tiles.py holds the
tile configurations and the rule that picks one by shape.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch
from .. import activation as activations
from .._dispatch import triton_interpreted
from .prepared import fp32_bias, packed_weight
from .tiles import launch_config

# The epilogue's activation codes: fastseg._C.Activation's, read through the one activation table.
_RELU = tl.constexpr(activations.code("relu"))
_RELU6 = tl.constexpr(activations.code("relu6"))
_HARDSWISH = tl.constexpr(activations.code("hardswish"))

MAX_PIXELS = 2**31 - 1024  # output pixels per launch: pixel indices are int32 in the kernels
MAX_TAP_BITS = 64  # kernels of up to 64 taps (8x8) find each row's in-image taps once, as bits


@triton.jit
def in_image(ih, iw, mask_m, H, W):
    """Rows whose input pixel (ih, iw) lies inside the H x W image; 0 <= ih < H as one unsigned
    comparison (a negative ih wraps above H)."""
    return mask_m & (ih.to(tl.uint32) < H.to(tl.uint32)) & (iw.to(tl.uint32) < W.to(tl.uint32))


@triton.jit
def conv_tile(x_ptr, w_ptr, pix, ih0, iw0, mask_m, offs_n, H, W, Cin, cin_pad, w_cols, sxh, sxw,
              KH, KW, dil_h, dil_w,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
              CIN_FULL: tl.constexpr, TAP_BITS: tl.constexpr, UPCAST: tl.constexpr,
              PRECISION: tl.constexpr):
    """fp32 accumulator [BLOCK_M, BLOCK_N] of one output tile.

    pix: int64 offset of each output pixel's tap (0, 0) at the group's first channel (channel stride
    1); ih0 / iw0: that tap's input row and column. w_ptr: the group's packed [KH*KW*cin_pad, w_cols]
    block at this tile's first output channel, w_cols a multiple of 16."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    offs_k = tl.arange(0, BLOCK_K)
    b_ptrs = w_ptr + offs_k[:, None] * w_cols + offs_n[None, :]
    step_rows = BLOCK_K * w_cols
    steps = KH * KW * (cin_pad // BLOCK_K)
    if TAP_BITS:  # bit t of a row: tap t (kh * KW + kw) reads inside the image, found once per tile
        inside = tl.zeros((BLOCK_M,), dtype=tl.int64)
        for bit in range(0, KH * KW):
            th = bit // KW
            ok = in_image(ih0 + th * dil_h, iw0 + (bit - th * KW) * dil_w, mask_m, H, W)
            inside = inside | (ok.to(tl.int64) << bit)
    t = 0       # this step's tap, kh * KW + kw
    c0 = 0      # first channel of this step's block
    kw = 0      # this step's tap column, and its offsets (rows / columns / elements) from tap (0, 0)
    dh = 0
    dw = 0
    tap = tl.zeros((), dtype=tl.int64)
    for _ in range(0, steps):
        if TAP_BITS:
            row_ok = ((inside >> t) & 1) != 0
        else:
            row_ok = in_image(ih0 + dh, iw0 + dw, mask_m, H, W)
        ck = c0 + offs_k
        if CIN_FULL:  # no channel block runs past Cin
            a_ok = row_ok[:, None]
        else:
            a_ok = row_ok[:, None] & (ck < Cin)[None, :]
        a = tl.load(x_ptr + ((pix + tap)[:, None] + ck[None, :]), mask=a_ok, other=0.0)
        b = tl.load(b_ptrs)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        b_ptrs += step_rows
        # the next step: next channel block, or the first block of the next tap
        c0 += BLOCK_K
        next_tap = c0 >= cin_pad
        c0 = tl.where(next_tap, 0, c0)
        kw += next_tap.to(tl.int32)
        t += next_tap.to(tl.int32)
        next_row = kw >= KW
        kw = tl.where(next_row, 0, kw)
        dh += tl.where(next_row, dil_h, 0)
        dw = kw * dil_w
        tap = dh.to(tl.int64) * sxh + dw.to(tl.int64) * sxw
    return acc


@triton.jit
def bias_activation_store(acc, out_ptr, bias_ptr, n, oh, ow, mask_m, offs_n, mask_n,
                          sbn, son, soc, soh, sow, co_base,
                          HAS_BIAS: tl.constexpr, ACT: tl.constexpr):
    """Epilogue: + bias (per channel, or per image and channel when sbn != 0), activation, store."""
    if HAS_BIAS:
        bias = tl.load(bias_ptr + (n[:, None] * sbn + offs_n[None, :]),
                       mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        acc += bias
    if ACT == _RELU:
        acc = tl.maximum(acc, 0.0)
    elif ACT == _RELU6:
        acc = tl.minimum(tl.maximum(acc, 0.0), 6.0)
    elif ACT == _HARDSWISH:  # x * relu6(x + 3) / 6
        acc = acc * (tl.minimum(tl.maximum(acc + 3.0, 0.0), 6.0) / 6.0)
    dst = (n.to(tl.int64)[:, None] * son + oh.to(tl.int64)[:, None] * soh + ow.to(tl.int64)[:, None] * sow
           + (co_base + offs_n).to(tl.int64)[None, :] * soc)
    tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def output_pixels(pid_m, M, OH, OW, BLOCK_M: tl.constexpr):
    """(n, oh, ow, mask) of the BLOCK_M output pixels of tile pid_m, int32 (M < 2^31)."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)
    return n, oh, ow, mask_m


@triton.jit
def tap_origin(n, oh, ow, sxn, sxh, sxw, cin_base, stride_h, stride_w, pad_h, pad_w):
    """Input row / column of each output pixel's tap (0, 0), and its int64 offset at channel cin_base."""
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    pix = n.to(tl.int64) * sxn + ih0.to(tl.int64) * sxh + iw0.to(tl.int64) * sxw + cin_base
    return pix, ih0, iw0


@triton.jit
def _atrous_conv_kernel(x_ptr, w_ptr, bias_ptr, out_ptr,
                        M, H, W, Cin, cin_pad, w_cols16, Cout, OH, OW, GROUP_BLOCKS,
                        sxn, sxh, sxw, son, soc, soh, sow, sbn,
                        KH, KW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, CIN_FULL: tl.constexpr,
                        TAP_BITS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Cin / Cout are per group; grid axis 1 runs over (group, block of that group's Cout). The packed
    weight has w_cols16 * 16 columns (a multiple of 16 the compiler can see, for 16-byte loads)."""
    pid_m = tl.program_id(0)
    group = tl.program_id(1) // GROUP_BLOCKS
    pid_n = tl.program_id(1) % GROUP_BLOCKS
    w_cols = w_cols16 * 16
    n, oh, ow, mask_m = output_pixels(pid_m, M, OH, OW, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    co = pid_n * BLOCK_N + offs_n
    pix, ih0, iw0 = tap_origin(n, oh, ow, sxn, sxh, sxw, group * Cin, stride_h, stride_w, pad_h, pad_w)
    w_tile = w_ptr + group.to(tl.int64) * (KH * KW * cin_pad) * w_cols + pid_n * BLOCK_N
    acc = conv_tile(x_ptr, w_tile, pix, ih0, iw0, mask_m, offs_n, H, W, Cin, cin_pad, w_cols, sxh, sxw,
                    KH, KW, dil_h, dil_w, BLOCK_M, BLOCK_N, BLOCK_K, CIN_FULL, TAP_BITS, UPCAST, PRECISION)
    bias_activation_store(acc, out_ptr, bias_ptr + group * Cout, n, oh, ow, mask_m, co, co < Cout,
                          sbn, son, soc, soh, sow, group * Cout, HAS_BIAS, ACT)


def grid(M: int, channel_blocks: int, cfg: dict, branches: int = 1) -> tuple[int, ...]:
    """Output-pixel tiles on axis 0 (the only axis that may exceed 65535), blocks of output channels
    (all groups') on axis 1, ASPP's branches on axis 2."""
    tiles = (triton.cdiv(M, cfg["BLOCK_M"]), channel_blocks)
    return tiles + (branches,) if branches > 1 else tiles


def check_pixels(M: int, op: str = "atrous_conv") -> None:
    if M > MAX_PIXELS:
        raise ValueError(f"{op}: {M} output pixels in one call; the Triton kernel takes at most {MAX_PIXELS} "
                         "(split the batch)")


def precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision: fp32 follows torch.backends.cudnn.allow_tf32 like torch's convolutions
    ("tf32" when set, the default; exact "ieee" otherwise). fp16 / bf16 dots ignore it."""
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


def upcast(dtype: torch.dtype) -> bool:
    """Convert operands to fp32 before tl.dot: bf16 under the interpreter (numpy has no bf16)."""
    return triton_interpreted() and dtype == torch.bfloat16


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """x with channel stride 1 (what the kernels read); a copy only for an input in another layout."""
    return x if x.stride(1) == 1 else x.contiguous(memory_format=torch.channels_last)


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
    M = N * OH * OW
    check_pixels(M)
    x = channels_last(x)
    cfg = launch_config(x.dtype, M, Cin, Cout, _launch.tile_target(x.device))
    w = packed_weight(weight, x.dtype, groups, cfg["BLOCK_K"], cfg["BLOCK_N"])
    has_bias = bias is not None
    b = fp32_bias(bias, x.device) if has_bias else w  # w: never read
    sbn = b.stride(0) if has_bias and b.dim() == 2 else 0
    group_blocks = triton.cdiv(Cout, cfg["BLOCK_N"])
    _launch.launch(
        _atrous_conv_kernel, grid(M, groups * group_blocks, cfg), x.device,
        x, w, b, out, M, H, W, Cin, w.shape[1] // (KH * KW), w.shape[2] // 16, Cout, OH, OW, group_blocks,
        x.stride(0), x.stride(2), x.stride(3),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3), sbn,
        KH, KW, stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        HAS_BIAS=has_bias, ACT=activations.code(activation), CIN_FULL=Cin % cfg["BLOCK_K"] == 0,
        TAP_BITS=KH * KW <= MAX_TAP_BITS, UPCAST=upcast(x.dtype),
        PRECISION=precision(x.dtype), **cfg)
    return out
