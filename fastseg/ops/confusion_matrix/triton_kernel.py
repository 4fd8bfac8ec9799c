"""Triton confusion matrix: each program histograms one block of pixels locally and flushes every
non-empty bin once, with one atomic add per bin per block (never one atomic per pixel).

The bins are the C*C (target, pred) pairs, flattened t*C + p. When C*C exceeds what one block's
histogram should hold (MAX_BINS), the bins are split into tiles along the grid's second axis and
each program counts only the pairs that fall in its tile. Pixel blocks run on axis 0 (up to 2^31 - 1
of them); CUDA caps axis 1 at 65535 tiles, hence the op's TRITON_MAX_CLASSES.

One configuration serves the GPU and the interpreter alike (BLOCK, MAX_BINS), so the tests run the
block sizes that ship.

Out-of-range values (target outside [0, C) and not ignore_index, or pred outside [0, C) at a
counted pixel) set a flag with one atomic per block; the Python side then raises.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch

BLOCK = 4096      # pixels per program
MAX_BINS = 4096   # bins per program (a power of two)


@triton.jit
def _confusion_kernel(pred_ptr, target_ptr, out_ptr, flags_ptr, n, C, ignore_index,
                      HAS_IGNORE: tl.constexpr, BLOCK: tl.constexpr, BINS: tl.constexpr):
    pid = tl.program_id(0)
    tile = tl.program_id(1)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    # int64 compares: narrowing a wide label first could wrap an invalid value into the range.
    t = tl.load(target_ptr + offs, mask=inside, other=0).to(tl.int64)
    p = tl.load(pred_ptr + offs, mask=inside, other=0).to(tl.int64)
    counted = inside
    if HAS_IGNORE:
        counted = counted & (t != ignore_index)
    bad_t = counted & ((t < 0) | (t >= C))
    bad_p = counted & ((p < 0) | (p >= C))
    good = counted & ~bad_t & ~bad_p

    # This tile's share of the pairs, histogrammed in the block.
    local = t * C + p - tile.to(tl.int64) * BINS
    mine = good & (local >= 0) & (local < BINS)
    local = tl.where(mine, local, 0).to(tl.int32)
    hist = tl.histogram(local, BINS, mask=mine)

    # One flush per non-empty bin.
    bins = tl.arange(0, BINS)
    tl.atomic_add(out_ptr + tile.to(tl.int64) * BINS + bins, hist.to(tl.int64), mask=hist > 0)

    if tile == 0:  # one flag update per block, from the first tile only
        any_t = tl.max(bad_t.to(tl.int32), axis=0)
        any_p = tl.max(bad_p.to(tl.int32), axis=0)
        if any_p > 0:
            tl.atomic_max(flags_ptr + 0, any_p)
        if any_t > 0:
            tl.atomic_max(flags_ptr + 1, any_t)


def bin_tiles(num_classes: int) -> tuple[int, int]:
    """(bins per program, number of bin tiles) covering the num_classes^2 (target, pred) pairs."""
    pairs = num_classes * num_classes
    bins = min(triton.next_power_of_2(pairs), MAX_BINS)
    return bins, triton.cdiv(pairs, bins)


def grid(n: int, tiles: int) -> tuple[int, int]:
    """Blocks of BLOCK pixels on axis 0, bin tiles on axis 1."""
    return (triton.cdiv(n, BLOCK), tiles)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None) -> tuple[torch.Tensor, bool, bool]:
    """(cm int64 [C, C], bad_pred, bad_target) for validated, same-shape, same-device inputs."""
    # The kernel walks flat memory: strided views are compacted (reshape copies only when it must).
    p = pred.reshape(-1)
    t = target.reshape(-1)
    if not p.is_contiguous():
        p = p.contiguous()
    if not t.is_contiguous():
        t = t.contiguous()
    # Unsigned 16/32/64-bit labels are handed over as int64 (Triton widens them as signed or not
    # at all); uint8 and the signed types load as they are.
    if p.dtype in _WIDEN:
        p = p.to(torch.int64)
    if t.dtype in _WIDEN:
        t = t.to(torch.int64)
    C = num_classes
    n = p.numel()
    pairs = C * C
    bins, tiles = bin_tiles(C)
    # The tiles together cover tiles * bins >= C*C counters; the spare tail is never written
    # (only good pairs land in bins), so the matrix is its first C*C entries.
    out = torch.zeros(tiles * bins, dtype=torch.int64, device=p.device)
    flags = torch.zeros(2, dtype=torch.int32, device=p.device)
    has_ignore = ignore_index is not None
    ignore = int(ignore_index) if has_ignore else 0
    _launch.launch(_confusion_kernel, grid(n, tiles), p.device, p, t, out, flags, n, C, ignore,
                   HAS_IGNORE=has_ignore, BLOCK=BLOCK, BINS=bins)
    bad_pred, bad_target = (bool(v) for v in flags.tolist())
    return out[:pairs].view(C, C), bad_pred, bad_target


_WIDEN = {getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)}
