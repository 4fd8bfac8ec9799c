"""fastseg's own file format and strict state-dict loading with errors that name the bad keys.

A fastseg model file is one safetensors file; its header metadata holds a small JSON config:
{"format": 1, "name": "<registered model>", "kwargs": {...}, "fused": false}, and "input_size":
[height, width] when the model's training image size is known (`model.config["input_size"]`). The
weights are plain tensors, so loading never unpickles anything.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from .config import FORMAT_VERSION, ConfigError, check_config, check_input_size

CONFIG_KEY = "fastseg.config"


class WeightsMismatchError(ValueError):
    """A state dict that does not fit the model: lists the missing, unexpected and mis-shaped keys."""


def _describe(keys, limit=12):
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str,
                 model_name: str) -> None:
    """WeightsMismatchError listing every missing, unexpected and mis-shaped key at once."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mismatched = [f"{k} (file {found[k]}, model {expected[k]})"
                  for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit {model_name}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatch ({len(mismatched)}): {_describe(mismatched)}")
        raise WeightsMismatchError("\n".join(lines))


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """`model.load_state_dict(strict=True)`, but every mismatch is reported at once, by key and shape."""
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in state_dict.items()}, source, type(model).__name__)
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
    if config.get("input_size") is not None:
        meta["input_size"] = [int(v) for v in config["input_size"]]
    # safetensors refuses shared storage and wants contiguous tensors
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata={CONFIG_KEY: json.dumps(meta)})


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by `save` (eval mode).

    The file is untrusted until checked: its config is validated field by field (config.py), the
    model it describes is built on the meta device (no memory) and its tensors' names, shapes and
    dtypes are compared with the file's headers; only then is the model built for real and filled.
    A file that fails any step raises ValueError naming the file (WeightsMismatchError when the
    tensors do not fit), before anything of the model's size is allocated.
    """
    from safetensors import SafetensorError, safe_open

    from .registry import create

    path = os.fspath(path)
    _check_header_length(path)
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            meta = _read_config(f.metadata() or {}, path)
            name, kwargs, fused = check_config(meta, path)
            trained_size = check_input_size(meta, path)
            headers = {k: f.get_slice(k) for k in f.keys()}
            _check_tensors(name, kwargs, fused, {k: (tuple(h.get_shape()), h.get_dtype()) for k, h in headers.items()},
                           path)
            tensors = {k: f.get_tensor(k) for k in headers}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path!r} {UNREADABLE}: {exc}") from exc
    model = create(name, **kwargs)
    if fused:
        from .rewrite import fuse

        model = fuse(model.eval())
    load_state_dict_checked(model, tensors, path)
    if trained_size is not None:
        cast(Any, model).config["input_size"] = list(trained_size)
    return model.to(device).eval()


UNREADABLE = "is not a readable safetensors file (truncated or of another kind?)"
# A safetensors file starts with the byte length of its JSON header. A fastseg model's header is a
# few tens of kilobytes; a larger claim is refused before anything reads that much.
MAX_HEADER = 16 << 20


def _check_header_length(path: str) -> None:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ValueError(f"{path!r} {UNREADABLE}: {exc}") from exc
    if len(head) < 8:
        raise ValueError(f"{path!r} {UNREADABLE}: {size} bytes, too short for the 8-byte header length")
    length = int.from_bytes(head, "little")
    if length > size - 8:
        raise ValueError(f"{path!r} {UNREADABLE}: its header claims {length} bytes, the file has {size - 8} more")
    if length > MAX_HEADER:
        raise ValueError(f"{path!r} {UNREADABLE}: a header of {length} bytes, more than a model's "
                         f"({MAX_HEADER} at most)")


def _read_config(metadata: Mapping[str, str], path: str):
    if CONFIG_KEY not in metadata:
        raise ValueError(f"{path!r} is a safetensors file without a fastseg config; weights from other "
                         "tools load through from_torchvision / from_smp / from_transformers")
    try:
        return json.loads(metadata[CONFIG_KEY])
    except RecursionError:
        raise ConfigError(path, "(the config)", "is nested too deeply") from None
    except ValueError as exc:
        raise ConfigError(path, "(the config)", f"is not JSON: {exc}") from None


def _kind(dtype: str | torch.dtype) -> str:
    """float / int / other, for a safetensors dtype name ("F16", "I64", ...) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype.is_floating_point:
            return "float"
        return "other" if dtype.is_complex or dtype == torch.bool else "int"
    return "float" if dtype.startswith(("F", "BF")) else "int" if dtype.startswith(("I", "U")) else "other"


def _check_tensors(name: str, kwargs: dict, fused: bool, found: Mapping[str, tuple[tuple[int, ...], str]],
                   path: str) -> None:
    """The model `name(**kwargs)` built on the meta device against the file's tensor headers."""
    from .registry import create
    from .rewrite import fuse

    try:
        with torch.device("meta"):
            model = create(name, **kwargs)
            if fused:
                model = fuse(model.eval())
    except Exception as exc:  # whatever the config makes the constructor raise is the file's fault
        raise ConfigError(path, "kwargs", f"do not build a {name}: {exc}") from None
    expected = model.state_dict()
    check_shapes({k: tuple(v.shape) for k, v in expected.items()}, {k: shape for k, (shape, _) in found.items()},
                 path, type(model).__name__)
    for key, tensor in expected.items():
        if _kind(found[key][1]) != _kind(tensor.dtype):
            raise WeightsMismatchError(f"{path} does not fit {type(model).__name__}: {key} holds {found[key][1]}, "
                                       f"the model a {_kind(tensor.dtype)} tensor")
