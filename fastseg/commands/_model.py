"""The --model argument that commands share: a packaged model, a saved file, or a registered name.

    --model camvid                  a model packaged with fastseg (the default: the default model)
    --model path/to/m.safetensors   a file written by fastseg.models.save
    --model unet_resnet18 --num-classes 11    a registered architecture with random weights (testing)
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class ChosenModel:
    model: nn.Module
    description: str           # one line for the user: what was loaded
    source: str                # where from: a file, or "random weights"
    num_classes: int
    classes: tuple[str, ...]   # real class names when the dataset is known, else "class 0", ...
    palette: np.ndarray        # uint8 [num_classes, 3]
    card: dict | None = None   # the packaged model's training figures, when it has a card
    crf_params: dict = field(default_factory=dict)   # DenseCRF arguments suited to this model

    def summary(self) -> str:
        return f"model: {self.description}\n       ({self.source})"

    def make_crf(self):
        from ..crf import DenseCRF

        return DenseCRF(**self.crf_params)


def add_model_arguments(parser, *, positional: bool = False) -> None:
    from ..data import registry
    from ..models import pretrained

    help_ = (f"a packaged model ({', '.join(pretrained.names())}; default: {pretrained.DEFAULT}), "
             f"a file written by fastseg.models.save, or a registered architecture (random weights, "
             f"needs --num-classes)")
    if positional:
        parser.add_argument("model", nargs="?", default=None, metavar="MODEL", help=help_)
    else:
        parser.add_argument("--model", default=None, help=help_)
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of a registered architecture created with random weights (default: none; "
                             "a packaged model or a file knows its own)")
    parser.add_argument("--dataset", default=None, choices=sorted(registry),
                        help="whose class names and colours to use (default: the packaged model's dataset; "
                             "generic colours for other models)")


def choose_model(spec: str | None, num_classes: int | None = None, dataset: str | None = None) -> ChosenModel:
    """Resolve --model / --num-classes / --dataset (see resolve) and load the model. Raises
    ValueError / FileNotFoundError with a message meant for the user."""
    resolved = resolve(spec, num_classes)
    model, source, card, crf_params = resolved.model, resolved.source, None, {}
    if resolved.kind == "packaged":
        info = resolved.packaged
        card, crf_params = info.card(), dict(info.crf)
        description = f"packaged model {info.name!r}: {info.description}"
        dataset = dataset or info.dataset
    elif resolved.kind == "registered":
        description, source = f"{spec} with RANDOM weights (for testing; its predictions mean nothing)", "random"
        print(f"warning: {description}", file=sys.stderr)
    else:
        name = model.config["name"] if getattr(model, "config", None) else type(model).__name__
        description = f"{name} from {spec}"
    classes_out = _num_classes(model)
    classes, palette = _names_and_colours(dataset, classes_out)
    return ChosenModel(model, description, source, classes_out, classes, palette, card, crf_params)


def _num_classes(model: nn.Module) -> int:
    if getattr(model, "path", "").endswith(".onnx"):  # an int8 graph (fastseg quantize) says it itself
        return int(model.num_classes)
    with torch.no_grad():
        return int(model.eval().forward_logits(torch.zeros(1, 3, 64, 64)).shape[1])


def _names_and_colours(dataset: str | None, num_classes: int):
    from ..data import registry
    from ..viz import default_palette

    if dataset is None:
        return tuple(f"class {i}" for i in range(num_classes)), default_palette(num_classes)
    reader = registry[dataset]
    if len(reader.classes) != num_classes:
        raise ValueError(f"--dataset {dataset}: it has {len(reader.classes)} classes but the model "
                         f"predicts {num_classes}")
    return tuple(reader.classes), np.asarray(reader.palette, dtype=np.uint8)


# ---- eval / bench take the dataset as their own argument: only --model / --num-classes / --device

class UsageError(ValueError):
    """A bad command-line argument: reported as `fastseg COMMAND: error: ...`, exit status 2."""


def add_model_source_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="a packaged model name or a fastseg model file (fastseg.models.save), or a "
                             "registered model name (random weights; needs --num-classes); "
                             "default: the packaged CamVid model")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of a model given by name (default: none; files and packaged models know theirs)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: cpu)")


def resolve(spec: str | None, num_classes: int | None = None):
    """--model / --num-classes through the resolver the Segmenter uses (fastseg.segmenter.model_spec):
    a ResolvedModel; UsageError says what is wrong with the arguments."""
    from ..segmenter.model_spec import resolve_model

    try:
        return resolve_model(spec, num_classes, spec_arg="--model", classes_arg="--num-classes")
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
