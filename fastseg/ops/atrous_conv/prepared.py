"""The convolution kernels' operands in their kernel form, prepared once and never stale.

A model's folded weights and biases do not change from frame to frame, so their packed weight
(`pack_weight`) and fp32 bias are made on first use and kept on the tensor they came from (or, for
ASPP, on its AsppParams). Each kept form carries a stamp of its source: device, dtype, storage
address, shape and in-place version counter. An in-place edit (`w.mul_()`, an optimizer step) bumps
the version, `param.data = ...` or a move to another device changes the address, so a stale form is
never used: it is rebuilt on the next call. One form is kept per slot (dtype, groups, tile sizes), so
the cache holds at most one copy per configuration a tensor is run with.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ... import _torch_compat
from .tiles import cdiv

_ATTRIBUTE = "_fastseg_prepared"


def stamp(*tensors: torch.Tensor) -> tuple:
    """What identifies the contents of `tensors` without reading them."""
    return tuple((t.device, t.dtype, t.data_ptr(), tuple(t.shape), _torch_compat.version(t)) for t in tensors)


def kept(owner: Any, slot: tuple, sources: Sequence[torch.Tensor], make: Callable[[], torch.Tensor]):
    """make(), kept on `owner` under `slot` for as long as `sources` keep their stamp."""
    store = owner.__dict__.setdefault(_ATTRIBUTE, {})
    key = stamp(*sources)
    hit = store.get(slot)
    if hit is None or hit[0] != key:
        hit = (key, make())
        store[slot] = hit
    return hit[1]


def pack_weight(weight: torch.Tensor, dtype: torch.dtype, groups: int, block_k: int, block_n: int) -> torch.Tensor:
    """[Cout, Cin/groups, KH, KW] -> [groups, KH*KW*Cin_pad, Cout_pad], zero-padded: per group, per tap
    (kh, kw) Cin_pad rows (Cin per group rounded up to BLOCK_K) of Cout_pad output channels (rounded up
    to BLOCK_N, contiguous). Every K step of the kernel then reads one whole, aligned B tile without a
    mask, and the row of each step is the previous one plus BLOCK_K."""
    cout, cin_g, kh, kw = weight.shape
    cout_g = cout // groups
    cin_pad, cout_pad = cdiv(cin_g, block_k) * block_k, cdiv(cout_g, block_n) * block_n
    w = weight.detach().to(dtype).reshape(groups, cout_g, cin_g, kh, kw).permute(0, 3, 4, 2, 1)
    packed = torch.zeros((groups, kh, kw, cin_pad, cout_pad), dtype=dtype, device=weight.device)
    packed[..., :cin_g, :cout_g] = w
    return packed.reshape(groups, kh * kw * cin_pad, cout_pad)


def packed_weight(weight: torch.Tensor, dtype: torch.dtype, groups: int, block_k: int, block_n: int) -> torch.Tensor:
    """pack_weight, kept on the weight tensor."""
    return kept(weight, ("weight", dtype, groups, block_k, block_n), (weight,),
                lambda: pack_weight(weight, dtype, groups, block_k, block_n))


def fp32_bias(bias: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The bias as a contiguous float32 tensor on `device` (the epilogue adds in fp32), kept on it."""
    if bias.dtype == torch.float32 and bias.device == device and bias.is_contiguous():
        return bias  # a per-image bias made in fp32 for this call: nothing to prepare
    return kept(bias, ("bias", device), (bias,), lambda: bias.detach().to(device, torch.float32).contiguous())
