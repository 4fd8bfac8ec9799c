"""Triton kernel: fused bilinear upsample + argmax over channels (+ max softmax probability).

Tap sharing (cells.py): each lane of a program owns one *run*, an MY x MX patch of outputs that lie
between the same two source rows and the same two source columns. Per channel it loads the four taps
once, interpolates each of the two source rows along x once per output column, then spends one
vertical lerp (FMUL + FFMA) and the running argmax (two FSETP, FSEL, SEL) per output pixel: about 7
SASS instructions per output pixel per channel at 8 x 4 outputs a lane (`make sass-report`), where
one thread per pixel paid about 30 (four scalar gathers, three lerps and the address arithmetic).

The arithmetic is torch's, in torch's order (csrc/common/bilinear.h): the float32 source coordinate,
index and weight formulas per output, `row = fma(a0, wx0, a1 * wx1)` per source row and
`value = fma(row0, hy0, row1 * hy1)`. Sharing a row lerp among the outputs of a column changes no
rounding, so the values equal the per-pixel computation's bit for bit; only the order of the loads
changed. (The interpreter multiplies and adds tl.fma's operands in two numpy roundings: there the
values can differ from torch's in the last bit, which is why the interpreter tests allow labels to
differ at near-ties, the rule they use for torch's own channels_last kernel.) Ties go to the first
channel and a NaN counts as the maximum (`take` below: greater, or NaN while the maximum so far is
not). With confidence, a running softmax denominator is rescaled online,
with infinite values as the package docstring defines. The [N,C,H,W] interpolated logits never exist.

Runs on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (how it is tested here).

All images' runs go along grid axis 0 (axis 1 would cap a frame at 65535 blocks); the launch goes
through ops/_launch.py (CUDA's grid limits, the tensor's device, the tile configuration).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _launch
from .cells import axis_plan, bilinear_scale


@triton.jit
def _src(dst, scale, ALIGN: tl.constexpr):
    """The unclamped float32 source coordinate of output `dst`, as torch computes it."""
    d = dst.to(tl.float32)
    if ALIGN:
        return scale * d
    else:
        return tl.fma(d + 0.5, scale, -0.5)


@triton.jit
def _weights(dst, in_size, out_size, scale, ALIGN: tl.constexpr):
    """Source indices and weights along one axis, as torch's upsample_bilinear2d computes them."""
    src = tl.maximum(_src(dst, scale, ALIGN), 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), in_size - 1)
    lam = tl.minimum(tl.maximum(src - i0.to(tl.float32), 0.0), 1.0)
    i1 = i0 + (i0 < in_size - 1).to(tl.int32)
    same = in_size == out_size  # identity: torch copies the input sample
    i0 = tl.where(same, dst, i0)
    i1 = tl.where(same, dst, i1)
    lam = tl.where(same, 0.0, lam)
    return i0, i1, 1.0 - lam, lam


@triton.jit
def _first(c, out_size, scale, ALIGN: tl.constexpr):
    """The first output whose source coordinate is >= c (out_size if none): an estimate from the
    inverse map, corrected by the exact formula (the estimate is off by less than one)."""
    cf = c.to(tl.float32)
    if ALIGN:
        safe = tl.where(scale > 0.0, scale, 1.0)
        est = tl.where(scale > 0.0, tl.ceil(cf / safe), tl.where(cf > 0.0, out_size * 1.0, 0.0))
    else:
        est = tl.ceil((cf + 0.5) / scale - 0.5)
    x = tl.minimum(tl.maximum(est, 0.0), out_size * 1.0).to(tl.int32)
    for _ in tl.static_range(2):
        x = tl.where((x > 0) & (_src(x - 1, scale, ALIGN) >= cf), x - 1, x)
    for _ in tl.static_range(2):
        x = tl.where((x < out_size) & (_src(x, scale, ALIGN) < cf), x + 1, x)
    return x


@triton.jit
def _run(u, in_size, out_size, scale, parts, ALIGN: tl.constexpr, CELL: tl.constexpr, M: tl.constexpr):
    """Run `u` along one axis: its two source indices, first output and end (exclusive)."""
    if CELL:
        cell = u // parts - 1
        lo = _first(cell, out_size, scale, ALIGN)
        hi = _first(cell + 1, out_size, scale, ALIGN)
        i0 = tl.maximum(cell, 0)
        i1 = i0 + (i0 < in_size - 1).to(tl.int32)
        return i0, i1, lo + (u % parts) * M, hi
    else:
        i0, i1, _, _ = _weights(u, in_size, out_size, scale, ALIGN)
        return i0, i1, u, tl.minimum(u + 1, out_size)


@triton.jit
def _run_weights(first, in_size, out_size, scale, ALIGN: tl.constexpr, M: tl.constexpr):
    """The two weights of each of the M outputs of a run starting at `first` (tuples of M)."""
    w0 = ()
    w1 = ()
    for j in tl.static_range(M):
        _, _, a, b = _weights(tl.minimum(first + j, out_size - 1), in_size, out_size, scale, ALIGN)
        w0 = w0 + (a,)
        w1 = w1 + (b,)
    return w0, w1


@triton.jit
def _upsample_argmax_kernel(
    x_ptr, labels_ptr, conf_ptr,
    C, h, w, H, W, units_x, blocks_per_image,
    sN, sC, sH, sW,
    scale_h, scale_w, parts_y, parts_x,
    ALIGN: tl.constexpr, CONF: tl.constexpr, CELL_Y: tl.constexpr, CELL_X: tl.constexpr,
    MY: tl.constexpr, MX: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // blocks_per_image
    u = (pid % blocks_per_image) * BLOCK + tl.arange(0, BLOCK)
    uy = u // units_x
    ux = u % units_x
    y0, y1, ys, ye = _run(uy, h, H, scale_h, parts_y, ALIGN, CELL_Y, MY)
    x0, x1, xs, xe = _run(ux, w, W, scale_w, parts_x, ALIGN, CELL_X, MX)
    live = (ys < ye) & (xs < xe)  # runs past the end of the image, or empty strips of small cells

    # per output column / row: its weights (the indices are the run's)
    wx0, wx1 = _run_weights(xs, w, W, scale_w, ALIGN, MX)
    hy0, hy1 = _run_weights(ys, h, H, scale_h, ALIGN, MY)

    base = x_ptr + n.to(tl.int64) * sN
    p00 = base + (y0.to(tl.int64) * sH + x0.to(tl.int64) * sW)
    p01 = base + (y0.to(tl.int64) * sH + x1.to(tl.int64) * sW)
    p10 = base + (y1.to(tl.int64) * sH + x0.to(tl.int64) * sW)
    p11 = base + (y1.to(tl.int64) * sH + x1.to(tl.int64) * sW)

    # channel 0 starts the running max / argmax / softmax denominator of every output
    a00 = tl.load(p00, mask=live, other=0.0).to(tl.float32)
    a01 = tl.load(p01, mask=live, other=0.0).to(tl.float32)
    a10 = tl.load(p10, mask=live, other=0.0).to(tl.float32)
    a11 = tl.load(p11, mask=live, other=0.0).to(tl.float32)
    best = ()
    for i in tl.static_range(MY):
        for j in tl.static_range(MX):
            top = tl.fma(a00, wx0[j], a01 * wx1[j])
            bottom = tl.fma(a10, wx0[j], a11 * wx1[j])
            best = best + (tl.fma(top, hy0[i], bottom * hy1[i]),)
    arg = ()
    total = ()
    for _ in tl.static_range(MY * MX):
        arg = arg + (tl.zeros([BLOCK], dtype=tl.int32),)
        total = total + (tl.full([BLOCK], 1.0, dtype=tl.float32),)

    for c in range(1, C):
        p00 += sC  # 64-bit pointers: no channel offset overflows
        p01 += sC
        p10 += sC
        p11 += sC
        a00 = tl.load(p00, mask=live, other=0.0).to(tl.float32)
        a01 = tl.load(p01, mask=live, other=0.0).to(tl.float32)
        a10 = tl.load(p10, mask=live, other=0.0).to(tl.float32)
        a11 = tl.load(p11, mask=live, other=0.0).to(tl.float32)
        r0 = ()
        r1 = ()
        for j in tl.static_range(MX):  # each source row interpolated along x once per output column
            r0 = r0 + (tl.fma(a00, wx0[j], a01 * wx1[j]),)
            r1 = r1 + (tl.fma(a10, wx0[j], a11 * wx1[j]),)
        new_best = ()
        new_arg = ()
        new_total = ()
        for i in tl.static_range(MY):
            for j in tl.static_range(MX):
                v = tl.fma(r0[j], hy0[i], r1[j] * hy1[i])
                b = best[i * MX + j]
                # greater or unordered (v is NaN), while the maximum so far is a number: one
                # unordered compare and the maximum's NaN test (two FSETP)
                take = (~(v <= b)) & (b == b)
                if CONF:
                    # equal values differ by 0, also two +inf or two -inf (whose difference is NaN):
                    # the channels at an infinite maximum share the probability (package docstring)
                    e = tl.exp(-tl.abs(tl.where(v == b, 0.0, v - b)))
                    new_total = new_total + (tl.where(take, total[i * MX + j] * e + 1.0, total[i * MX + j] + e),)
                new_best = new_best + (tl.where(take, v, b),)
                new_arg = new_arg + (tl.where(take, c, arg[i * MX + j]),)
        best = new_best
        arg = new_arg
        if CONF:
            total = new_total

    image = n.to(tl.int64) * H * W
    for i in tl.static_range(MY):
        y = ys + i
        for j in tl.static_range(MX):
            x = xs + j
            keep = live & (y < ye) & (x < xe)
            out = image + y.to(tl.int64) * W + x
            tl.store(labels_ptr + out, arg[i * MX + j].to(labels_ptr.dtype.element_ty), mask=keep)
            if CONF:
                tl.store(conf_ptr + out, 1.0 / total[i * MX + j], mask=keep)


def tile_config(target: str) -> dict:
    """Lanes per program and warps for `_launch.tile_target`'s "gpu" (what ships: one run per thread)
    or "interpreter" (which pays per program, so more lanes), with the largest run along each axis."""
    runs = dict(MAX_MY=8, MAX_MX=4)
    if target == "gpu":
        return dict(BLOCK=128, num_warps=4, **runs)
    return dict(BLOCK=1024, num_warps=4, **runs)


def grid(N: int, units: int, block: int) -> tuple[int]:
    """Every image's blocks of runs on axis 0."""
    return (N * triton.cdiv(units, block),)


def upsample_argmax_triton(logits: torch.Tensor, size: tuple[int, int], align_corners: bool,
                           return_confidence: bool, out_dtype: torch.dtype, labels: torch.Tensor | None = None):
    """Launch the kernel; `logits` is a validated [N,C,h,w] float tensor (any strides); `labels`, when
    given, a contiguous [N,H,W] tensor of `out_dtype` on the same device to write into."""
    N, C, h, w = logits.shape
    H, W = size
    if labels is None:
        labels = torch.empty((N, H, W), dtype=out_dtype, device=logits.device)
    conf = torch.empty((N, H, W), dtype=torch.float32, device=logits.device) if return_confidence else labels
    cfg = tile_config(_launch.tile_target(logits.device))
    py = axis_plan(h, H, align_corners, cfg["MAX_MY"])
    px = axis_plan(w, W, align_corners, cfg["MAX_MX"])
    units = py.units * px.units
    _launch.launch(
        _upsample_argmax_kernel, grid(N, units, cfg["BLOCK"]), logits.device,
        logits, labels, conf,
        C, h, w, H, W, px.units, triton.cdiv(units, cfg["BLOCK"]),
        *logits.stride(),
        bilinear_scale(h, H, align_corners), bilinear_scale(w, W, align_corners), py.parts, px.parts,
        ALIGN=align_corners, CONF=return_confidence, CELL_Y=py.cell, CELL_X=px.cell, MY=py.m, MX=px.m,
        BLOCK=cfg["BLOCK"], num_warps=cfg["num_warps"],
    )
    return (labels, conf) if return_confidence else labels
