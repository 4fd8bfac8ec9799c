"""Which convolutions the Triton kernels take from cuDNN on CUDA: a table measured on the GPU itself.

On CUDA tensors, `backend="auto"` runs the atrous_conv and aspp ops' convolutions through torch
(cuDNN) unless this table says that, on this GPU (by `torch.cuda.get_device_name`), the Triton
kernel is faster for exactly this shape. An empty or missing table means cuDNN everywhere; asking
for `backend="triton"` by name always runs Triton.

Where the table is read from, once per process:
    $FASTSEG_CONV_TABLE             when set (a path to a JSON file), else
    fastseg/ops/conv_table.json     inside the installed package (what `make gpu-check` writes).

It is written by benchmarks/gpu/conv_table.py, which times both sides of every shape the models it
is given ask about. Format:
    {"format": 1,
     "gpus": {"<device name>": {"triton_wins": ["<shape key>", ...],
                                "timings": {"<shape key>": {"triton_ms": ..., "cudnn_ms": ...}},
                                "torch": "...", "triton": "..."}}}
A shape key names the op, dtype, layout and every size that changes the kernels' work
(`atrous_key`, `aspp_key`).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

TABLE_ENV = "FASTSEG_CONV_TABLE"
PACKAGED_TABLE = Path(__file__).with_name("conv_table.json")
FORMAT = 1


@dataclass(frozen=True)
class Case:
    """One convolution `auto` asked about: its key, its input's description, and how to run it on a
    fresh input with a given backend (for the recorder to time both sides)."""
    key: str
    x_shape: tuple[int, ...]
    dtype: torch.dtype
    channels_last: bool
    run: Callable[[torch.Tensor, str], object]


_recording: contextvars.ContextVar[dict[str, Case] | None] = contextvars.ContextVar(
    "fastseg_conv_recording", default=None)


def _layout(x: torch.Tensor) -> str:
    return "nhwc" if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "nchw"


def _dtype_name(dtype: torch.dtype) -> str:
    """The dtype, and for float32 whether cuDNN and the Triton kernels may use TF32 (both sides' speed
    depends on it)."""
    name = str(dtype).removeprefix("torch.")
    return name + "+tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else name


def atrous_key(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups: int) -> str:
    shape = "x".join(map(str, x.shape))
    wshape = "x".join(map(str, weight.shape))
    return (f"atrous_conv/{_dtype_name(x.dtype)}/{_layout(x)}/in{shape}/w{wshape}"
            f"/s{stride[0]},{stride[1]}/p{padding[0]},{padding[1]}/d{dilation[0]},{dilation[1]}/g{groups}")


def aspp_key(x: torch.Tensor, out_channels: int, kernel_sizes, dilations) -> str:
    shape = "x".join(map(str, x.shape))
    branches = ",".join(f"{k}d{d}" for k, d in zip(kernel_sizes, dilations))
    return f"aspp/{_dtype_name(x.dtype)}/{_layout(x)}/in{shape}/out{out_channels}/b{branches}"


def triton_wins(key: str, x: torch.Tensor, run: Callable[[torch.Tensor, str], object]) -> bool:
    """True when the table says Triton beats cuDNN for `key` on x's GPU. Inside `recording()` the
    case is also collected."""
    recorded = _recording.get()
    if recorded is not None and key not in recorded:
        recorded[key] = Case(key, tuple(x.shape), x.dtype, _layout(x) == "nhwc", run)
    return key in _wins(_device_name(x.device))


@contextlib.contextmanager
def recording() -> Iterator[dict[str, Case]]:
    """Collects, by key, every convolution `auto` asks the table about within the block."""
    cases: dict[str, Case] = {}
    token = _recording.set(cases)
    try:
        yield cases
    finally:
        _recording.reset(token)


def table_path() -> Path:
    return Path(os.environ[TABLE_ENV]) if os.environ.get(TABLE_ENV) else PACKAGED_TABLE


def read_table(path: Path) -> dict:
    """The table at `path`; an empty one when the file is missing or empty, or (with a warning) when it
    cannot be read as a table of this format."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"format": FORMAT, "gpus": {}}
    if not text.strip():
        return {"format": FORMAT, "gpus": {}}
    try:
        table = json.loads(text)
        if table.get("format") != FORMAT or not isinstance(table.get("gpus"), dict):
            raise ValueError(f"expected format {FORMAT} with a 'gpus' object")
    except (ValueError, AttributeError) as error:
        warnings.warn(f"{path}: not a convolution table ({error}); cuDNN runs every convolution",
                      RuntimeWarning, stacklevel=2)
        return {"format": FORMAT, "gpus": {}}
    return table


@functools.cache
def _wins(device_name: str) -> frozenset[str]:
    entry = read_table(table_path())["gpus"].get(device_name, {})
    return frozenset(entry.get("triton_wins", ()))


@functools.cache
def _device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return torch.cuda.get_device_name(device)


def reload() -> None:
    """Forget the table read so far (after the recorder writes a new one, or $FASTSEG_CONV_TABLE changes)."""
    _wins.cache_clear()
