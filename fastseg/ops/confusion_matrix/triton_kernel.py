"""Triton confusion matrix: one pass over the pixels, one relaxed atomic add per counted pixel.

Each program reads BLOCK consecutive pixels of both maps (vector loads), checks them and adds 1 to
the int64 counter of its (target, pred) pair, cm[t * C + p], with a relaxed atomic (`red`, no
result, no fence: the counts are only read after the kernel, and no other memory is ordered by
them). Any number of classes is one pass (the counters live in global memory, i.e. in L2, in a few
copies that spread a dominant class's atomics: `copies_for`).

Why not a per-program histogram in shared memory: Triton reaches shared memory only through
tl.histogram, whose lowering makes every thread test each element against all the bins it owns
(bins / 32 per thread), about 55 instructions per pixel at 19 classes and one pass per 4096-bin
tile beyond 64 classes. An atomic per pixel is about 15 instructions in all, but one 8-byte L2
atomic per pixel: on a GPU, L2's atomic throughput may bound this kernel before its instructions or
its reads do (`make gpu-check` measures it against the reference). The CUDA C++ kernel (csrc/cuda),
which does own its shared memory, keeps a per-block table there instead.

Integer widths: a label is compared with the class range in its own dtype (int64 labels in int64,
so a wide invalid value cannot wrap into the range), then narrowed; the pair index t * C + p is
int32 (C <= TRITON_MAX_CLASSES keeps C * C < 2^31). Offsets: the program's first pixel,
pid * BLOCK, is int64 (a map may hold more than 2^31 pixels) and computed once per program; the
per-pixel offsets inside the block and the count of pixels left are int32 (< BLOCK).

Out-of-range values (target outside [0, C) and not ignore_index, or pred outside [0, C) at a
counted pixel) set flags[0] (pred) / flags[1] (target) on the device with one atomic per program
that saw one; the caller reads them when it needs them (see ops/confusion_matrix/__init__.py), so
the launch itself never waits for the GPU.

One configuration serves the GPU and the interpreter alike (BLOCK, NUM_WARPS), so the tests run
the block size that ships.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch

BLOCK = 4096     # pixels per program: 32 per thread at 4 warps, two 16-byte loads per map for uint8
NUM_WARPS = 4
SPARE = 32       # counters that take the skipped pixels (ignored, or past the end), one per program mod 32
MAX_COPIES = 32  # copies of the counters, program p adding into copy p mod copies ...
COPIES_BYTES = 1 << 22  # ... as many as fit in 4 MB together


@triton.jit
def _confusion_kernel(pred_ptr, target_ptr, out_ptr, n, C, ignore_index, plane, copies,
                      HAS_IGNORE: tl.constexpr, TAIL: tl.constexpr, BLOCK: tl.constexpr, SPARE: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK  # int64 once per program
    out_ptr += (tl.program_id(0) % copies).to(tl.int64) * plane  # this program's copy of the counters
    idx = tl.arange(0, BLOCK)                      # int32 inside the block
    if TAIL:  # the one launch of the last, partial block
        inside = idx < n
        t = tl.load(target_ptr + start + idx, mask=inside, other=0)
        p = tl.load(pred_ptr + start + idx, mask=inside, other=0)
        skipped = ~inside
    else:     # whole blocks: no per-pixel bound check
        t = tl.load(target_ptr + start + idx)
        p = tl.load(pred_ptr + start + idx)
        skipped = tl.zeros([BLOCK], tl.int1)
    if HAS_IGNORE:
        skipped = skipped | (t == ignore_index)  # neither counted nor checked
    # in the labels' own dtype (int64 stays int64): a wide invalid value cannot wrap into [0, C)
    bad_t = (t < 0) | (t >= C)
    bad_p = (p < 0) | (p >= C)
    cc = C * C
    pair = t.to(tl.int32) * C + p.to(tl.int32)  # < C * C < 2^31
    pair = tl.where(bad_p, cc, pair)            # the bad-pred counter
    pair = tl.where(bad_t, cc + 1, pair)        # the bad-target counter (a bad target wins)
    # skipped pixels land in one of SPARE spare counters, one per program (modulo SPARE)
    pair = tl.where(skipped, cc + 2 + (tl.program_id(0) & (SPARE - 1)), pair)
    tl.atomic_add(out_ptr + pair.to(tl.uint32), 1, sem="relaxed")  # unsigned: one wide multiply-add


def grid(n: int) -> tuple[int]:
    """The whole blocks of BLOCK pixels on axis 0 (up to 2^31 - 1 of them; none when n < BLOCK)."""
    return (n // BLOCK,)


def copies_for(num_classes: int) -> int:
    """How many copies of the counters: a power of two up to MAX_COPIES whose tables fit COPIES_BYTES.

    A class covering much of an image (road, sky) sends most pixels to one counter; programs on
    different SMs add into different copies of it, so its atomics spread over several L2 addresses
    instead of queueing at one. The copies are summed once after the kernel."""
    plane = num_classes * num_classes + 2 + SPARE
    fit = max(1, min(MAX_COPIES, COPIES_BYTES // (8 * plane)))
    return 1 << (fit.bit_length() - 1)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cm int64 [C, C], flags int64 [2] on the device, non-zero where pred / target held an
    out-of-range value) for validated, same-shape, same-device inputs. Queued; nothing is read back."""
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
    plane = C * C + 2 + SPARE  # the pairs, bad pred, bad target, the spare counters
    whole = n // BLOCK
    copies = min(copies_for(C), max(whole, 1))
    table = torch.zeros(copies * plane, dtype=torch.int64, device=p.device)
    has_ignore = ignore_index is not None
    ignore = int(ignore_index) if has_ignore else 0
    meta = dict(HAS_IGNORE=has_ignore, BLOCK=BLOCK, SPARE=SPARE, num_warps=NUM_WARPS)
    if whole:
        _launch.launch(_confusion_kernel, grid(n), p.device, p, t, table, n, C, ignore, plane, copies,
                       TAIL=False, **meta)
    if n % BLOCK:  # the partial last block: one program with bound checks, on the maps' tails
        rest = whole * BLOCK
        _launch.launch(_confusion_kernel, (1,), p.device, p[rest:], t[rest:], table, n - rest, C, ignore, plane,
                       copies, TAIL=True, **meta)
    counts = table if copies == 1 else table.view(copies, plane).sum(0)
    return counts[:C * C].view(C, C), counts[C * C:C * C + 2]


_WIDEN = {getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)}
