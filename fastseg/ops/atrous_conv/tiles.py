"""The convolution kernels' tile configurations, and the rule that picks one by shape.

Autotuning needs a GPU to time candidates on, and the kernels must also be exercised, with the very
configuration that ships, under the interpreter (ARCHITECTURE.md, P8). So the choice is a fixed,
deterministic function of the problem: `launch_config(dtype, M, Cin, Cout, target)`, with M the
number of output pixels (batch x height x width) and Cin / Cout per group.

The GPU configurations (`GPU_TILES`), by name:
  wide       BLOCK_M 128 x BLOCK_N 128, 8 warps: Cout >= 128 (ResNet / ASPP widths). The largest tile
             the register file holds with an fp32 accumulator (64 registers a thread), so each byte
             loaded feeds the most multiply-adds.
  narrow     BLOCK_M 128 x BLOCK_N = Cout rounded up to a power of two (16..64), 4 warps: small Cout,
             where a 128-wide N tile would multiply zeros.
  small_map  BLOCK_M 64, BLOCK_N up to 64, 4 warps: when the wide / narrow tiles would give fewer than
             FILL_PROGRAMS programs (a 33x33 ASPP map at batch 1: 9 pixel tiles), smaller tiles keep
             more SMs busy. They cost about twice the instructions per multiply-add (on sm_90 the fp16
             main loop takes about as many issue cycles as the tensor cores take, wide about half),
             so they pay only where wide tiles would leave a quarter or more of a large GPU's SMs idle.
BLOCK_K is 64 for fp16 / bf16 and 32 for fp32 (the same 128 bytes of channels a row either way; 64
fp32 for small_map), or less when Cin is smaller; num_stages 3 (two tiles in flight while a third is
multiplied: the K loop runs over taps x channels as one loop, so the pipeline never drains between
taps). Shared memory per stage is at most 32 KB (wide: A 128x64 + B 64x128 fp16), 96 KB for three
stages, within sm_80 / sm_87 / sm_90's limits.

Checking the rule on a GPU: benchmarks/gpu/conv_table.py times every configuration of `GPU_TILES`
(through `forced`) on each convolution the Segmenter runs and reports where the rule's choice is not
the fastest (`make gpu-check` includes it).
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

# Programs below which wide / narrow tiles leave a quarter or more of a large GPU's SMs idle (an
# H100 has 132 SMs, an A100 108); a small GPU (Jetson Orin: 16 SMs) is filled either way.
FILL_PROGRAMS = 96

GPU_TILES = ("wide", "narrow", "small_map")

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastseg_conv_tiles", default=None)


def pow2_block(size: int, lo: int, hi: int) -> int:
    """A power-of-two block in [lo, hi] that covers `size` when it can (tl.dot needs >= 16)."""
    p = 1 << max(0, (max(1, size) - 1).bit_length())
    return max(lo, min(hi, p))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def gpu_tile_name(M: int, Cout: int) -> str:
    """The rule: which of GPU_TILES a convolution with M output pixels and Cout channels (per group) takes."""
    forced = _forced.get()
    if forced is not None:
        return forced
    name = "wide" if Cout >= 128 else "narrow"
    n_blocks = cdiv(Cout, 128 if name == "wide" else pow2_block(Cout, 16, 64))
    return "small_map" if cdiv(M, 128) * n_blocks < FILL_PROGRAMS else name


def gpu_tiles(name: str, dtype: torch.dtype, Cin: int, Cout: int) -> dict:
    """The block sizes and compile options of configuration `name` for these channel counts."""
    # channels of one row per K step: 128 bytes (64 fp16 / bf16, 32 fp32); small_map's 64 x 64 tiles
    # take 64 fp32 channels too, so that its fixed per-step work (tap, masks) is spread over more
    # multiply-adds, in the same 96 KB of shared memory for three stages
    k_bytes = 256 if name == "small_map" else 128
    block_k = pow2_block(Cin, 16, min(64, k_bytes // dtype.itemsize))
    if name == "wide":
        return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=block_k, num_warps=8, num_stages=3)
    if name == "narrow":
        return dict(BLOCK_M=128, BLOCK_N=pow2_block(Cout, 16, 64), BLOCK_K=block_k, num_warps=4, num_stages=3)
    if name == "small_map":
        return dict(BLOCK_M=64, BLOCK_N=pow2_block(Cout, 16, 64), BLOCK_K=block_k, num_warps=4, num_stages=3)
    raise ValueError(f"tile configuration must be one of {GPU_TILES}, got {name!r}")


def launch_config(dtype: torch.dtype, M: int, Cin: int, Cout: int, target: str) -> dict:
    """The tile configuration for `_launch.tile_target`'s "gpu" (what ships, by the rule above) or
    "interpreter" (large tiles: every program is a Python-level step there, so few of them)."""
    if target == "interpreter":
        return dict(BLOCK_M=pow2_block(M, 16, 128), BLOCK_N=pow2_block(Cout, 16, 64),
                    BLOCK_K=pow2_block(Cin, 16, 64), num_warps=4, num_stages=1)
    return gpu_tiles(gpu_tile_name(M, Cout), dtype, Cin, Cout)


@contextlib.contextmanager
def forced(name: str) -> Iterator[None]:
    """Within this block (this thread or task only) every GPU-tiled convolution launch uses
    configuration `name` whatever the rule says: how the tests run each configuration under the
    interpreter and how the GPU recorder times them all."""
    if name not in GPU_TILES:
        raise ValueError(f"tile configuration must be one of {GPU_TILES}, got {name!r}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)
