"""Argument checks and the convolution geometry shared by the op, its reference and the ASPP op."""
from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"atrous_conv: {name} must be an int or a pair of ints, got {value!r}")


def conv_geometry(weight, stride, padding, dilation):
    """(stride, padding, dilation) as pairs; padding None or "same" means dilation * (k - 1) / 2
    (the atrous convention: padding = dilation for a 3x3 kernel, output size = input size at stride 1)."""
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    kh, kw = weight.shape[-2:]
    if padding is None or padding == "same":
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"atrous_conv: padding='same' needs an odd kernel, got {kh}x{kw}")
        padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
    padding = pair(padding, "padding")
    if min(stride) < 1:
        raise ValueError(f"atrous_conv: stride must be >= 1, got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"atrous_conv: dilation must be >= 1, got {dilation}")
    if min(padding) < 0:
        raise ValueError(f"atrous_conv: padding must be >= 0, got {padding}")
    return stride, padding, dilation


def output_size(h, w, kernel, stride, padding, dilation) -> tuple[int, int]:
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, k, s, p, d in zip((h, w), kernel, stride, padding, dilation))


def check_input(x, name: str = "x", channels: int | None = None, op: str = "atrous_conv") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{op}: {name} must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float16 or bfloat16, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{op}: {name} has an empty batch (shape {tuple(x.shape)})")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{op}: {name} has {x.shape[1]} channels, the weights expect {channels}")
