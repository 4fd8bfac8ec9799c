"""Winograd convolution, F(4x4, 3x3) and F(6x6, 3x3): the CPU path of stride-1 3x3 convolutions,
dilated or not.

    y = winograd.conv2d(x, weight, bias, dilation=2, activation="relu")   # x channels_last float32

A 3x3 convolution computes each 4x4 block of outputs with 144 multiplies per channel pair; the
Winograd form needs 36 (Lavin & Gray 2016): the 6x6 input lattice and the 3x3 filter are both
moved to 36 transform points, multiplied point by point, and moved back (F(6x6): 64 points per
6x6 outputs). Summed over input channels, the point-wise products are matrix products
[tiles x C] @ [C x K], one per point, run by torch.bmm; the two transforms are fastseg's C++
(csrc/cpu/winograd.cpp) and the filter transform is done once per weight tensor, in float64, and
cached. torch.bmm (MKL here) shares the OpenMP threads of the transforms; numpy's OpenBLAS, a little
faster alone, brings a second thread pool whose spinning threads slowed the op by 30%.
A dilated convolution is an ordinary one on each of the d*d interleaved sub-grids, so a tile is an
m x m lattice of outputs spaced `dilation` apart.

When it pays (`worthwhile`): the GEMMs do (m+2)^2 multiply-adds per tile and channel pair against
the direct convolution's 9 per output pixel that has its tap inside the image (oneDNN skips the
padded taps of a large dilation). Tiles that straddle a sub-grid's edge are partly wasted, which for
a large dilation on a small map (ASPP's rates 24 and 36 on a 64x128 feature map) eats the gain; the
direct convolution keeps those. Measured at 64x128, 2 threads, against torch's channels_last
convolution + ReLU: 512->512 at dilation 4, 168 -> 70 ms; 256->256 at dilation 2, 42 -> 17 ms;
ASPP's 2048->256 at rate 12, 294 -> 138 ms (F(6x6)).

Numerics: float32 throughout; the transforms' constants cost a few ulps more than the direct sum
(~1e-5 of the largest output on random data, F(6x6) a little more), tested against F.conv2d.
"""
from __future__ import annotations

import functools
import threading
import weakref

import torch

from ... import _native, _torch_compat
from .. import _dispatch
from .. import activation as activations
from .naive import reference  # noqa: F401  (the specification, exported with the op)

# The activations the C++ output transform fuses (of fastseg._C.Activation: none, relu, relu6).
FUSED_ACTIVATIONS = (None, "relu", "relu6")
# G maps a 3-tap filter to the transform points: 0, 1, -1, 2, -2, inf for F(4, 3); 0, 1, -1, 1/2,
# -1/2, 2, -2, inf for F(6, 3) (the same points as the input and output transforms in the C++).
G = {4: torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64),
     6: torch.tensor([[1, 0, 0], [-2 / 9, -2 / 9, -2 / 9], [-2 / 9, 2 / 9, -2 / 9], [1 / 90, 1 / 45, 2 / 45],
                      [1 / 90, -1 / 45, 2 / 45], [32 / 45, 16 / 45, 8 / 45], [32 / 45, -16 / 45, 8 / 45],
                      [0, 0, 1]], dtype=torch.float64)}
# F(6x6) needs 64 products per 36 outputs against F(4x4)'s 36 per 16, but wastes more of a tile at a
# sub-grid's edge and has bigger transforms: it is chosen where its products are at least 5% fewer.
# Measured at 64x128 (2 threads): ASPP's 2048->256 at rate 12, F(4x4) 201 ms, F(6x6) 138 ms (torch
# 294); 256->256 at dilation 1, 17.7 / 14.9 ms; the error stays ~1e-5 of the largest output.
F6_MIN_SAVING = 0.95
MIN_CHANNELS = 32          # below this the transforms cost more than the multiplies they save
MAX_COST_RATIO = 0.6       # Winograd multiplies / direct multiplies at or below which it is used
# Transform points held at once (at most 128 MiB, reused from call to call): tiles run in chunks.
# Smaller chunks shrink the GEMMs: ASPP's 2048-channel branch ran 15% slower with 32 MiB.
WORKSPACE_FLOATS = 1 << 25


# ----------------------------------------------------------------------------- when it applies
def direct_taps(h: int, w: int, dilation: int) -> int:
    """Multiply-adds per channel pair of the direct 3x3 convolution that skips padded taps."""
    return (h + 2 * max(h - dilation, 0)) * (w + 2 * max(w - dilation, 0))


def num_tiles(n: int, h: int, w: int, dilation: int, m: int = 4) -> int:
    """m x m tiles of an [n, h, w] output: per residue sub-grid, ceil(rows / m) * ceil(cols / m)."""
    return n * sum(-(-((h - ry + dilation - 1) // dilation) // m) * -(-((w - rx + dilation - 1) // dilation) // m)
                   for ry in range(min(dilation, h)) for rx in range(min(dilation, w)))


@functools.lru_cache(maxsize=4096)
def tile_size(h: int, w: int, dilation: int) -> int:
    """4 or 6: the tile with fewer products per channel pair, F(4x4) unless F(6x6) saves enough."""
    f4, f6 = num_tiles(1, h, w, dilation, 4) * 36, num_tiles(1, h, w, dilation, 6) * 64
    return 6 if f6 <= F6_MIN_SAVING * f4 else 4


@functools.lru_cache(maxsize=4096)
def worthwhile(h: int, w: int, dilation: int, in_channels: int, out_channels: int) -> bool:
    """Enough channels, and Winograd's products at most MAX_COST_RATIO of the direct taps."""
    if min(in_channels, out_channels) < MIN_CHANNELS:
        return False
    m = tile_size(h, w, dilation)
    return num_tiles(1, h, w, dilation, m) * (m + 2) ** 2 <= MAX_COST_RATIO * direct_taps(h, w, dilation)


def geometry_serves(kernel_size, stride, padding, dilation, groups, activation, in_channels: int,
                    out_channels: int) -> bool:
    """The convolution's own shape is one this op computes: dense, stride 1, 3x3, 'same' padding with
    equal dilations, an activation it fuses, and channels enough to pay for the transforms."""
    d = tuple(dilation)
    return (tuple(kernel_size) == (3, 3) and groups == 1 and tuple(stride) == (1, 1) and d[0] == d[1]
            and tuple(padding) == d and activation in FUSED_ACTIVATIONS
            and min(in_channels, out_channels) >= MIN_CHANNELS)


def applies(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups, activation) -> bool:
    """True when `conv2d(x, weight, stride, padding, dilation, groups)` + activation can and should
    run here: `geometry_serves`, a channels_last float32 CPU input, plain inference (no autograd,
    not traced, exported or compiled), and tiles that pay at this size (`worthwhile`)."""
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and _native.available()):
        return False
    if not geometry_serves(weight.shape[2:], stride, padding, dilation, groups, activation,
                           weight.shape[1] * groups, weight.shape[0]):
        return False
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        return False  # NCHW callers keep their layout (and a 1x1 image is both: torch's path)
    return _dispatch.plain_inference(x, weight) and worthwhile(x.shape[2], x.shape[3], dilation[0],
                                                                weight.shape[1], weight.shape[0])


# ----------------------------------------------------------------------------- filter transform
def transform_weight(weight: torch.Tensor, m: int = 4) -> torch.Tensor:
    """[K, C, 3, 3] -> U [(m+2)^2, C, K] float32, U[(m+2)a+b] = (G g G^T)[a, b], computed in float64."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"winograd: weight must be [K, C, 3, 3], got {tuple(weight.shape)}")
    u = torch.einsum("ai,kcij,bj->abck", G[m], weight.detach().double().cpu(), G[m])
    return u.reshape((m + 2) ** 2, weight.shape[1], weight.shape[0]).float().contiguous()


class _FilterCache:
    """Transformed filters by (weight tensor, tile size): an entry lives as long as its tensor and is
    recomputed when the tensor is modified in place (its version counter moves)."""

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}
        self._lock = threading.Lock()

    def get(self, weight: torch.Tensor, m: int) -> torch.Tensor:
        key = (id(weight), m)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and entry[0]() is weight and entry[1] == _torch_compat.version(weight):
            return entry[2]
        u = transform_weight(weight, m)
        ref = weakref.ref(weight, lambda _, k=key: self._drop(k))
        with self._lock:
            self._entries[key] = (ref, _torch_compat.version(weight), u)
        return u

    def _drop(self, key: tuple) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is None:
                del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


FILTERS = _FilterCache()
_workspace = threading.local()


def release_workspace() -> None:
    """Free this thread's transform buffer (it is otherwise kept for the next call)."""
    _workspace.buf = None


def _scratch(floats: int) -> torch.Tensor:
    """A per-thread float32 buffer, grown on demand and reused: fresh large allocations are page
    faults on every call (glibc hands them to mmap and back)."""
    buf = getattr(_workspace, "buf", None)
    if buf is None or buf.numel() < floats:
        with torch.inference_mode(False):  # a normal tensor: writable inside and outside inference mode
            buf = torch.empty(floats, dtype=torch.float32)
        _workspace.buf = buf
    return buf


# ----------------------------------------------------------------------------- the op
def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, dilation: int = 1,
           activation: str | None = None, out: torch.Tensor | None = None, tile: int | None = None) -> torch.Tensor:
    """activation(conv2d(x, weight, bias, padding=dilation, dilation=dilation)) by Winograd F(m x m, 3x3).

    x: [N, C, H, W] float32 CPU, channels_last; weight [K, C, 3, 3]; bias None or [K].
    out: optional [N, K, H, W] float32 with channels innermost (channels_last, or a channel slice of
    one, e.g. ASPP's concatenated branches) to write into. tile: 4 or 6 (default: `tile_size`).
    Returns the channels_last result."""
    ext = _native.ext()
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
        raise TypeError(f"winograd.conv2d: x must be a 4-D float32 CPU tensor, got {x.dtype} {tuple(x.shape)} "
                        f"on {x.device}")
    n, c, h, w = x.shape
    if weight.dim() != 4 or tuple(weight.shape[1:]) != (c, 3, 3):
        raise ValueError(f"winograd.conv2d: weight must be [K, {c}, 3, 3], got {tuple(weight.shape)}")
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"winograd.conv2d: activation must be one of {FUSED_ACTIVATIONS}, got {activation!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"winograd.conv2d: dilation must be a positive int, got {dilation!r}")
    k = weight.shape[0]
    if bias is not None:
        if tuple(bias.shape) != (k,):
            raise ValueError(f"winograd.conv2d: bias must be [{k}], got {tuple(bias.shape)}")
        bias = bias.detach().to(torch.float32).contiguous()
    x = x.contiguous(memory_format=torch.channels_last)
    if out is None:
        out = torch.empty((n, k, h, w), dtype=torch.float32, memory_format=torch.channels_last)
    elif tuple(out.shape) != (n, k, h, w) or out.dtype != torch.float32 or (out.stride(1) != 1 and k > 1):
        raise ValueError(f"winograd.conv2d: out must be float32 [{n}, {k}, {h}, {w}] with channels innermost, "
                         f"got {out.dtype} {tuple(out.shape)} strides {out.stride()}")
    m = tile_size(h, w, dilation) if tile is None else tile
    if m not in G:
        raise ValueError(f"winograd.conv2d: tile must be 4 or 6, got {tile!r}")
    p = (m + 2) ** 2
    u = FILTERS.get(weight, m)
    tiles = ext.winograd_num_tiles(n, h, w, dilation, m)
    chunk = max(1, min(tiles, WORKSPACE_FLOATS // (p * max(c, k))))
    scratch = _scratch(p * chunk * (c + k))
    x_nhwc, out_nhwc = _native.buf(x.permute(0, 2, 3, 1)), _native.buf(out.permute(0, 2, 3, 1))
    b = None if bias is None else _native.buf(bias)
    threads, own, code = _native.num_threads(), _native.use_own_threads(), activations.enum(activation)
    for t0 in range(0, tiles, chunk):
        t1 = min(tiles, t0 + chunk)
        v = scratch[:p * (t1 - t0) * c].view(p, t1 - t0, c)
        prod = scratch[p * chunk * c:p * chunk * c + p * (t1 - t0) * k].view(p, t1 - t0, k)
        ext.winograd_input_transform(x_nhwc, _native.buf(v), dilation, m, t0, t1, threads, own)
        torch.bmm(v, u, out=prod)
        ext.winograd_output_transform(_native.buf(prod), out_nhwc, b, code, dilation, m, t0, t1, threads, own)
    return out
