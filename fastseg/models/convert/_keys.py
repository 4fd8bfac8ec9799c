"""Key renaming shared by the converters."""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

import torch

from ..io import torch_load_state_dict

Rules = Iterable[tuple[str, str]]


def rename(key: str, rules: Rules) -> str:
    """The first rule whose pattern matches the whole key rewrites it; unmatched keys come back as
    they are (and so are reported as unexpected when they reach the model)."""
    for pattern, replacement in rules:
        new, count = re.subn(f"^{pattern}$", replacement, key)
        if count:
            return new
    return key


def rename_all(state: Mapping[str, torch.Tensor], rules: Rules) -> dict[str, torch.Tensor]:
    rules = list(rules)
    return {rename(k, rules): v for k, v in state.items()}


CONV_BN = [(r"(.*)\.0\.weight", r"\1.conv.weight"),
           (r"(.*)\.1\.(weight|bias|running_mean|running_var|num_batches_tracked)", r"\1.bn.\2")]
BN_FIELDS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def resnet_rules(src: str, dst: str) -> list[tuple[str, str]]:
    """torchvision ResNet keys (conv1/bn1, layerX.Y.convK/bnK, downsample.0/1) under prefix `src`."""
    return [
        (rf"{src}conv1\.weight", rf"{dst}stem.conv.weight"),
        (rf"{src}bn1\.{BN_FIELDS}", rf"{dst}stem.bn.\1"),
        (rf"{src}(layer\d\.\d+)\.conv(\d)\.weight", rf"{dst}\1.conv\2.conv.weight"),
        (rf"{src}(layer\d\.\d+)\.bn(\d)\.{BN_FIELDS}", rf"{dst}\1.conv\2.bn.\3"),
        (rf"{src}(layer\d\.\d+)\.downsample\.0\.weight", rf"{dst}\1.downsample.conv.weight"),
        (rf"{src}(layer\d\.\d+)\.downsample\.1\.{BN_FIELDS}", rf"{dst}\1.downsample.bn.\2"),
    ]


def read_state(source) -> dict[str, torch.Tensor]:
    """A state dict given as a mapping or as a path to a torch.save file (read with weights_only=True)."""
    if isinstance(source, (str, os.PathLike)):
        return torch_load_state_dict(source)
    if isinstance(source, Mapping):
        return dict(source)
    raise TypeError(f"expected a model, a state dict or a path to one, got {type(source).__name__}")
