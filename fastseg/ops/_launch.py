"""The one way fastseg launches a Triton kernel: `launch(kernel, grid, device, *args, **meta)`.

It does three things every launch needs and the interpreter would never catch:

- **Grid limits.** CUDA caps grid axis 0 at 2^31 - 1 programs and axes 1 and 2 at 65535; the
  interpreter has no caps, so a grid that only a GPU refuses would pass every CPU test. `check_grid`
  raises here, interpreted or not, so kernels put their many tiles on axis 0 and a test with a large
  output fails on the CPU exactly when the launch would fail on a GPU.
- **The tensor's device.** Triton launches on `torch.cuda.current_device()` and that device's current
  stream. A `cuda:1` tensor therefore runs under `torch.cuda.device(cuda:1)`, in device 1's context
  and on device 1's current stream.
- **Tile configuration.** Each kernel ships block sizes for the GPU and smaller program counts for the
  interpreter (which pays per program, in Python). `tile_target(device)` says which one a launch
  uses; `gpu_tiles()` forces the GPU's under the interpreter, so tests execute the configuration that
  ships.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import torch

# CUDA's maximum grid dimensions (x, y, z), the same on every architecture since sm_30.
GRID_LIMITS = (2**31 - 1, 65535, 65535)

_forced_target: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastseg_triton_tiles", default=None)


def check_grid(grid: Sequence[int], name: str = "kernel") -> tuple[int, ...]:
    """`grid` as a tuple of ints, or ValueError when CUDA would refuse to launch it."""
    grid = tuple(int(g) for g in grid)
    if not 1 <= len(grid) <= 3:
        raise ValueError(f"{name}: a grid has 1 to 3 axes, got {grid}")
    for axis, (size, limit) in enumerate(zip(grid, GRID_LIMITS)):
        if size < 0 or size > limit:
            raise ValueError(f"{name}: grid {grid} has {size} programs on axis {axis}; CUDA allows at most "
                             f"{limit} there (the work is too large for this kernel's tiling)")
    return grid


def tile_target(device: torch.device) -> str:
    """"gpu" or "interpreter": which of a kernel's tile configurations a launch on `device` uses."""
    forced = _forced_target.get()
    if forced is not None:
        return forced
    return "gpu" if device.type == "cuda" else "interpreter"


@contextlib.contextmanager
def gpu_tiles() -> Iterator[None]:
    """Within this block (this thread or task only) every launch uses the GPU tile configuration, also
    under the interpreter: how tests run the block sizes that ship."""
    token = _forced_target.set("gpu")
    try:
        yield
    finally:
        _forced_target.reset(token)


def launch(kernel, grid: Sequence[int], device: torch.device, *args, **meta) -> None:
    """kernel[grid](*args, **meta) after `check_grid`, on `device` when it is a CUDA device."""
    grid = check_grid(grid, getattr(kernel, "__name__", "kernel"))
    if device.type == "cuda":
        with torch.cuda.device(device):
            _run(kernel, grid, args, meta)
    else:
        _run(kernel, grid, args, meta)


def _run(kernel, grid: tuple[int, ...], args: tuple, meta: dict) -> None:
    # a function of its own so tests can record grids without running the kernel
    kernel[grid](*args, **meta)
