"""The config saved in a model file, checked before anything is built from it.

A model file may come from anyone, and its config's keyword arguments size the network: a few bytes
claiming 30 million classes or a million transformer blocks would otherwise make `create` allocate
gigabytes before any shape is compared. `check_config` accepts only what `fastseg.models.save` can
write for a registered model: the top-level fields, keyword arguments that the model's factory
takes (by its signature), each of the kind of its default (integer, list of integers, number, flag)
and within bounds far beyond any real network. A bad config raises one `ValueError` that names the
file and the field.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

FORMAT_VERSION = 1
TOP_LEVEL = ("format", "name", "kwargs", "fused", "input_size")
MAX_INPUT_SIDE = 1 << 15  # pixels per side of the image size a model was trained at

MAX_WIDTH = 1 << 16   # channels, classes, attention heads
MAX_LIST = 16         # entries of a list argument (stages, rates, decoder blocks)
MAX_SPATIAL = 64      # kernel sizes, strides, output strides, reduction ratios
# (low, high) per argument name; other integers are widths in [1, MAX_WIDTH]
BOUNDS: dict[str, tuple[float, float]] = {
    "output_stride": (1, MAX_SPATIAL),
    "atrous_rates": (1, 1024),
    "depths": (1, 128),          # blocks in one SegFormer stage (B5 has 40)
    "sr_ratios": (1, MAX_SPATIAL),
    "patch_sizes": (1, MAX_SPATIAL),
    "strides": (1, MAX_SPATIAL),
    "mlp_ratios": (0.0625, 64),
    "layer_norm_eps": (1e-12, 1.0),
}
NUMBERS = {"mlp_ratios", "layer_norm_eps"}    # may be written as floats by other tools
CHOICES = {"context": (None, "pool")}         # arguments whose default is None
# SegFormer's per-stage lists go stage by stage: they must have as many entries as hidden_sizes
STAGE_LISTS = ("hidden_sizes", "depths", "num_heads", "sr_ratios", "mlp_ratios", "patch_sizes", "strides")


class ConfigError(ValueError):
    """A model file whose saved config cannot be trusted: one line, naming the file and the field."""

    def __init__(self, path: str, field: str, problem: str):
        problem = " ".join(problem.split())  # one line, whatever a constructor's message held
        super().__init__(f"{path}: bad fastseg config: {field} {problem}")
        self.path, self.field = path, field


def shown(value: Any, limit: int = 60) -> str:
    """repr cut to `limit` characters: a hostile value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_name(key: str, limit: int = 40) -> str:
    """A JSON key for a message: escaped (no line breaks), cut to `limit` characters."""
    text = repr(key)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_config(meta: Any, path: str) -> tuple[str, dict[str, Any], bool]:
    """(model name, keyword arguments, fused) from a parsed config, or ConfigError."""
    from .registry import factory

    if not isinstance(meta, dict):
        raise ConfigError(path, "(the config)", f"must be a JSON object, got {type(meta).__name__}")
    unknown = [k for k in meta if k not in TOP_LEVEL]
    if unknown:
        raise ConfigError(path, key_name(unknown[0]), f"is not a config field (fields: {', '.join(TOP_LEVEL)})")
    if meta.get("format") != FORMAT_VERSION:
        raise ConfigError(path, "format", f"is {shown(meta.get('format'))}; this version reads {FORMAT_VERSION}")
    name = meta.get("name")
    if not isinstance(name, str):
        raise ConfigError(path, "name", f"must be a registered model name, got {shown(name)}")
    try:
        fn = factory(name)
    except ValueError as exc:
        raise ConfigError(path, "name", f"is not a registered model: {exc}") from None
    fused = meta.get("fused", False)
    if not isinstance(fused, bool):
        raise ConfigError(path, "fused", f"must be true or false, got {shown(fused)}")
    kwargs = meta.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(path, "kwargs", f"must be a JSON object, got {type(kwargs).__name__}")
    params = {p.name: p for p in inspect.signature(fn).parameters.values()
              if not p.name.startswith("_") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key, value in kwargs.items():
        if key not in params:
            raise ConfigError(path, f"kwargs.{key_name(key)}", f"is not an argument of {name} "
                              f"(it takes {', '.join(params)})")
        _check_value(path, key, value, params[key].default)
    _check_stages(path, {**{k: p.default for k, p in params.items()}, **kwargs})
    return name, dict(kwargs), fused


def check_input_size(meta: dict, path: str) -> tuple[int, int] | None:
    """The optional "input_size" field: [height, width] of the images the model was trained at, which
    the Segmenter resizes inputs towards (absent: unknown, images run at their own size)."""
    value = meta.get("input_size")
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIDE for v in value)):
        raise ConfigError(path, "input_size", f"must be [height, width], integers from 1 to {MAX_INPUT_SIDE}, "
                          f"got {shown(value)}")
    return value[0], value[1]


def input_size(model: Any) -> tuple[int, int] | None:
    """(height, width) of the images `model` was trained at, when its config says (`model.config`'s
    "input_size", saved with it by `fastseg.models.save`); None when unknown."""
    value = (getattr(model, "config", None) or {}).get("input_size")
    return None if value is None else (int(value[0]), int(value[1]))


def _check_value(path: str, key: str, value: Any, default: Any) -> None:
    field = f"kwargs.{key}"
    if key in CHOICES:
        if value not in CHOICES[key] or isinstance(value, bool):
            raise ConfigError(path, field, f"must be one of {CHOICES[key]}, got {shown(value)}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(path, field, f"must be true or false, got {shown(value)}")
    elif isinstance(default, (tuple, list)):
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            raise ConfigError(path, field, f"must be a list of 1 to {MAX_LIST} numbers, got {shown(value)}")
        for i, item in enumerate(value):
            _check_number(path, f"{field}[{i}]", key, item)
    else:
        _check_number(path, field, key, value)


def _check_number(path: str, field: str, key: str, value: Any) -> None:
    low, high = BOUNDS.get(key, (1, MAX_WIDTH))
    if key in NUMBERS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a number"
    else:
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    if not ok or not low <= value <= high:
        raise ConfigError(path, field, f"must be {kind} from {low:g} to {high:g}, got {shown(value)}")


def _check_stages(path: str, arguments: dict[str, Any]) -> None:
    if "hidden_sizes" not in arguments:
        return
    stages = len(arguments["hidden_sizes"])
    for key in STAGE_LISTS:
        if key in arguments and len(arguments[key]) != stages:
            raise ConfigError(path, f"kwargs.{key}", f"has {len(arguments[key])} entries but hidden_sizes "
                              f"has {stages} (one per stage)")
    for i, (width, heads) in enumerate(zip(arguments["hidden_sizes"], arguments.get("num_heads", ()))):
        if width % heads:
            raise ConfigError(path, f"kwargs.num_heads[{i}]", f"({heads}) must divide hidden_sizes[{i}] ({width})")
