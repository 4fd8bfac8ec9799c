"""fastseg's own file format and strict state-dict loading with errors that name the bad keys.

A fastseg model file is one safetensors file; its header metadata holds a small JSON config:
{"format": 1, "name": "<registered model>", "kwargs": {...}, "fused": false}. The weights are plain
tensors, so loading never unpickles anything.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from torch import nn

FORMAT_VERSION = 1
CONFIG_KEY = "fastseg.config"


class WeightsMismatchError(ValueError):
    """A state dict that does not fit the model: lists the missing, unexpected and mis-shaped keys."""


def _describe(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """`model.load_state_dict(strict=True)`, but every mismatch is reported at once, by key and shape."""
    own = model.state_dict()
    missing = set(own) - set(state_dict)
    unexpected = set(state_dict) - set(own)
    mismatched = [f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
                  for k in sorted(set(own) & set(state_dict)) if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatch ({len(mismatched)}): {_describe(mismatched)}")
        raise WeightsMismatchError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model


def torch_load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `torch.save` file, never unpickling code (weights_only=True)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, a pickled module, ...
        raise ValueError(f"cannot read a state dict from {os.fspath(path)!r} "
                         f"(loaded with weights_only=True): {exc}") from exc
    for key in ("state_dict", "model"):  # training checkpoints often nest the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{os.fspath(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return obj


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Write `model` (made by fastseg.models.create / from_* / load) as safetensors + JSON config."""
    from safetensors.torch import save_file

    config = getattr(model, "config", None)
    if not config or "name" not in config:
        raise ValueError("save: the model has no fastseg config; build it with fastseg.models.create, "
                         "from_torchvision, from_smp, from_transformers or load")
    meta = {"format": FORMAT_VERSION, "name": config["name"], "kwargs": config.get("kwargs", {}),
            "fused": bool(getattr(model, "fused", False))}
    # safetensors refuses shared storage and wants contiguous tensors
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={CONFIG_KEY: json.dumps(meta)})


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by `save` (eval mode). Wrong or truncated files raise a clear error."""
    from safetensors import SafetensorError, safe_open

    from .registry import create

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path!r} is not a readable safetensors file (truncated or of another kind?): {exc}") from exc
    if CONFIG_KEY not in metadata:
        raise ValueError(f"{path!r} is a safetensors file without a fastseg config; weights from other "
                         "tools load through from_torchvision / from_smp / from_transformers")
    meta = json.loads(metadata[CONFIG_KEY])
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has fastseg format {meta.get('format')!r}; this version reads {FORMAT_VERSION}")
    model = create(meta["name"], **meta["kwargs"])
    if meta.get("fused"):
        from .rewrite import fuse

        model = fuse(model.eval())
    load_state_dict_checked(model, tensors, path)
    return model.to(device).eval()
