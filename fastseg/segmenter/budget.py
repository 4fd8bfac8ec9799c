"""The pixel budget: how many pixels the network runs on at once.

A network's activation memory grows with the pixels it sees (the packaged default model, in ONNX
Runtime, near 150 MB per megapixel), so a huge frame run whole can take gigabytes, or fail in the
allocator after a long wait. A Segmenter runs at most `max_pixels` pixels per network call: a batch
above it runs a few images at a time, and an image above it runs as overlapping tiles (`Tiling`)
of the largest square within the budget (at most `AUTO_TILE` a side), blended as explicit tiling
blends them. Below the budget, nothing changes: every image runs whole, as the source model would.
"""
from __future__ import annotations

import math
import numbers

from .options import Tiling

# 4096 x 4096: a 12-megapixel photo or a 4K frame runs whole; the default model's peak is 2.9 GiB above
# the process's resident set in the torch runtime, 2.2 GiB in ONNX Runtime (benchmarks/peak_memory.py)
DEFAULT_MAX_PIXELS = 4096 * 4096
AUTO_TILE = 1024  # tiles of the automatic tiling: a side at most this


def check_max_pixels(max_pixels) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise ValueError(f"max_pixels: expected a positive integer or None, got {max_pixels!r}")
    return int(max_pixels)


def automatic_tiling(h: int, w: int, max_pixels: int | None, stride: int) -> Tiling | None:
    """The tiling an h x w image above the budget runs with (None: it runs whole)."""
    if max_pixels is None or h * w <= max_pixels:
        return None
    side = min(AUTO_TILE, math.isqrt(max_pixels)) // stride * stride
    if side < 1:
        raise ValueError(f"max_pixels: {max_pixels} is less than one tile of the model's output stride "
                         f"({stride} x {stride}); raise it or pass tiling=Tiling(size=(h, w))")
    return Tiling(size=(side, side))


def images_per_call(n: int, h: int, w: int, max_pixels: int | None) -> int:
    """How many of a batch's n images (h x w, each within the budget) run through the network at once."""
    if max_pixels is None:
        return n
    return max(1, min(n, max_pixels // max(1, h * w)))
