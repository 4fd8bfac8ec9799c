"""Models by name, timm-style: `@register_model` on a factory, then `create(name, **kwargs)`.

A created model remembers its name and keyword arguments (`model.config`), which is all that
`fastseg.models.save` needs to rebuild it.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, cast

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; `pattern` is a substring filter (e.g. "resnet50")."""
    _load_zoo()
    return sorted(n for n in _REGISTRY if pattern is None or pattern in n)


def factory(name: str) -> Callable[..., nn.Module]:
    """The function registered as `name` (its signature lists the keyword arguments it takes)."""
    _load_zoo()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see fastseg.models.list_models())")
    return _REGISTRY[name]


def create(name: str, **kwargs) -> nn.Module:
    """Build the named model with random weights, e.g. `create("deeplabv3_resnet50", num_classes=21)`."""
    model = factory(name)(**kwargs)
    cast(Any, model).config = {"name": name, "kwargs": dict(kwargs)}  # an attribute, not a submodule
    return model


def _load_zoo() -> None:
    from . import zoo  # noqa: F401  (its decorators fill the registry)
