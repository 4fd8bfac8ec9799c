"""The one table of activations: what the models build, what the ops apply, what the kernels fuse.

Each entry names an activation (None is the identity) and gives its torch module, its functional
form and, where a fused kernel implements it, the member of the C++ enum `fastseg._C.Activation`
(csrc/common/activation.h) whose integer both the C++ kernels and the Triton epilogue are
specialised on. The codes are read from the extension, never written out here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _native


@dataclass(frozen=True)
class Activation:
    name: str | None
    module: Callable[[], nn.Module]                      # a fresh module (in place where torch has one)
    apply_: Callable[[torch.Tensor], torch.Tensor]       # on a fresh tensor: in place where it can be
    fused: str | None = None                             # member of fastseg._C.Activation, if any kernel fuses it


def _identity(y: torch.Tensor) -> torch.Tensor:
    return y


TABLE: dict[str | None, Activation] = {a.name: a for a in (
    Activation(None, nn.Identity, _identity, "none"),
    Activation("relu", lambda: nn.ReLU(inplace=True), torch.relu_, "relu"),
    Activation("relu6", lambda: nn.ReLU6(inplace=True), lambda y: y.clamp_(0.0, 6.0), "relu6"),
    Activation("hardswish", lambda: nn.Hardswish(inplace=True), lambda y: F.hardswish(y, inplace=True),
               "hardswish"),
    Activation("hardsigmoid", lambda: nn.Hardsigmoid(inplace=True), lambda y: F.hardsigmoid(y, inplace=True)),
    Activation("sigmoid", nn.Sigmoid, torch.sigmoid_),
    Activation("gelu", nn.GELU, F.gelu),
)}
NAMES = tuple(TABLE)


def get(name: str | None) -> Activation:
    if name not in TABLE:
        raise ValueError(f"activation must be one of {NAMES}, got {name!r}")
    return TABLE[name]


def code(name: str | None) -> int | None:
    """The fused kernels' integer for `name` (from fastseg._C.Activation), None when none fuses it."""
    member = get(name).fused
    return None if member is None else int(getattr(_native.ext().Activation, member))


def enum(name: str | None):
    """The fastseg._C.Activation member for `name` (for the C++ kernels' arguments)."""
    member = get(name).fused
    if member is None:
        raise ValueError(f"activation {name!r} is not fused by any kernel")
    return getattr(_native.ext().Activation, member)


def apply(y: torch.Tensor, name: str | None) -> torch.Tensor:
    """activation(y), in place on y where torch has an in-place form."""
    return get(name).apply_(y)
