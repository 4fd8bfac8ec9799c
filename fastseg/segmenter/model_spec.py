"""What a model argument names, resolved in one place for the Segmenter and the command line.

A model spec is one of: None (the packaged default model), the name of a packaged model
(`fastseg.models.pretrained.names()`), the path of a file written by `fastseg.models.save` (or an
int8 ONNX graph written by `fastseg quantize`: `fastseg.segmenter.quantized`), a
registered architecture name (`fastseg.models.list_models()`; random weights, needs the number of
classes), or a fastseg model object. Errors name the argument as the caller spells it
(`model_or_name` / `num_classes` for the Segmenter, `--model` / `--num-classes` on the command line).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn

KINDS = ("packaged", "file", "registered", "module", "quantized")


@dataclass
class ResolvedModel:
    model: nn.Module   # fp32, on the CPU, eval mode
    kind: str          # one of KINDS
    source: str        # the packaged model's file, the file, the registered name, or the class name
    packaged: Any = None   # fastseg.models.pretrained.PretrainedModel, for a packaged model


def resolve_model(spec=None, num_classes: int | None = None, *, spec_arg: str = "model_or_name",
                  classes_arg: str = "num_classes") -> ResolvedModel:
    """Load (or create) the model that `spec` names. ValueError / TypeError / FileNotFoundError say
    what is wrong with `spec` or `num_classes`, naming them as `spec_arg` / `classes_arg`."""
    from .. import models
    from ..models import pretrained

    if isinstance(spec, nn.Module):
        if not hasattr(spec, "forward_logits"):
            raise TypeError(f"{spec_arg}: expected a fastseg model (with forward_logits); convert other "
                            "models with fastseg.models.from_torchvision / from_smp / from_transformers")
        _no_classes(num_classes, classes_arg, "when a model object is given")
        return ResolvedModel(spec, "module", type(spec).__name__)
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"{spec_arg}: expected a fastseg model, a model name or a file path, "
                        f"got {type(spec).__name__}")
    if spec is None or os.fspath(spec) in pretrained.names():
        info = pretrained.get(pretrained.DEFAULT if spec is None else os.fspath(spec))
        _no_classes(num_classes, classes_arg, f"to the packaged model {info.name!r}")
        return ResolvedModel(pretrained.load(info.name), "packaged", os.fspath(info.path), info)
    path = os.fspath(spec)
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ValueError(f"{spec_arg}: {path} is a directory, not a model file")
        _no_classes(num_classes, classes_arg, "to a model loaded from a file")
        if path.endswith(".onnx"):
            from .quantized import QuantizedGraph

            return ResolvedModel(QuantizedGraph(path), "quantized", path)
        return ResolvedModel(models.load(path).float().eval(), "file", path)
    if path not in models.list_models():
        raise ValueError(f"{spec_arg}: {path!r} is not a packaged model ({', '.join(pretrained.names())}), "
                         f"neither an existing file nor a registered model (fastseg.models.list_models())")
    if num_classes is None or num_classes < 1:
        raise ValueError(f"{spec_arg} {path}: a registered name needs {classes_arg} N (N >= 1)")
    return ResolvedModel(models.create(path, num_classes=num_classes).eval(), "registered", path)


def _no_classes(num_classes, classes_arg: str, where: str) -> None:
    if num_classes is not None:
        raise ValueError(f"{classes_arg} applies only to a registered model name, not {where}")
