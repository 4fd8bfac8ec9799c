"""How the GPU kernels split one axis of the output into runs that share their bilinear taps.

Along an axis that is upsampled, consecutive outputs lie between the same two source samples: a
*cell* is the set of outputs whose first tap is the same source index (cell -1 holds the outputs
left of the first sample's centre, which torch clamps onto it). A GPU thread takes `m` outputs of one
cell along each axis (a strip of a cell: the cell's `parts` strips cover it), loads the cell's four
taps once per channel and interpolates each source row once per output column, so the work per
output pixel is one vertical lerp and the running argmax. Along an axis that is not upsampled (same
size or smaller) cells hold at most one output, and each output is its own run (`cell` False, m = 1).

The kernels find a cell's first output themselves (estimate, then correct by the exact float32
source formula); what the host needs is the largest cell, to size `m` and `parts`. It is computed
here with numpy, reproducing the kernels' float32 source coordinate exactly (float64 holds the
product scale * (x + 0.5) exactly, so rounding it once to float32 is the single rounding of the
kernels' fma).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["AxisPlan", "axis_plan", "bilinear_scale", "cell_keys"]


class AxisPlan(NamedTuple):
    cell: bool   # outputs grouped by cell (an upsampled axis) or one output per run
    m: int       # outputs per run (constexpr of the kernel)
    parts: int   # runs per cell (cell mode); 1 otherwise
    units: int   # runs along the axis: (in + 1) * parts cells' strips, or one per output


def bilinear_scale(in_size: int, out_size: int, align_corners: bool) -> float:
    """torch's float32 scale (area_pixel_compute_scale for an explicit size)."""
    if align_corners:
        return float(np.float32(in_size - 1) / np.float32(out_size - 1)) if out_size > 1 else 0.0
    return float(np.float32(in_size) / np.float32(out_size))


def cell_keys(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
    """The cell of every output index along the axis: floor of the unclamped source coordinate,
    clipped to [-1, in - 1] (-1: left of the first sample, where torch clamps the coordinate to 0)."""
    scale = np.float64(bilinear_scale(in_size, out_size, align_corners))
    x = np.arange(out_size, dtype=np.float64)
    src = (scale * x if align_corners else scale * (x + 0.5) - 0.5).astype(np.float32)
    return np.clip(np.floor(src), -1, in_size - 1).astype(np.int64)


def axis_plan(in_size: int, out_size: int, align_corners: bool, max_run: int) -> AxisPlan:
    """Runs of at most `max_run` outputs sharing their taps along one axis."""
    if out_size <= in_size:
        return AxisPlan(False, 1, 1, out_size)
    largest = int(np.bincount(cell_keys(in_size, out_size, align_corners) + 1).max())
    parts = -(-largest // max_run)
    m = -(-largest // parts)  # as even as the parts allow: 8 -> 2 x 4 rather than 4 + 4 + 0
    return AxisPlan(True, m, parts, (in_size + 1) * parts)
