"""The --model argument that commands share: a packaged model, a saved file, or a registered name.

    --model camvid                  a model packaged with fastseg (the default: the default model)
    --model path/to/m.safetensors   a file written by fastseg.models.save
    --model unet_resnet18 --num-classes 11    a registered architecture with random weights (testing)
"""
from __future__ import annotations

import os
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
                        help="classes of a registered architecture created with random weights")
    parser.add_argument("--dataset", default=None, choices=sorted(registry),
                        help="whose class names and colours to use (default: the packaged model's dataset; "
                             "generic colours for other models)")


def choose_model(spec: str | None, num_classes: int | None = None, dataset: str | None = None) -> ChosenModel:
    """Resolve --model / --num-classes / --dataset. Raises ValueError / FileNotFoundError with a
    message meant for the user."""
    from .. import models
    from ..models import pretrained

    card, crf_params = None, {}
    if spec is None or spec in pretrained.names():
        info = pretrained.get(spec or pretrained.DEFAULT)
        model, card, crf_params = pretrained.load(info.name), info.card(), dict(info.crf)
        description, source = f"packaged model {info.name!r}: {info.description}", str(info.path)
        dataset = dataset or info.dataset
    elif os.path.exists(spec):
        model = models.load(spec).float()
        name = model.config["name"] if getattr(model, "config", None) else type(model).__name__
        description, source = f"{name} from {spec}", str(spec)
    elif spec in models.list_models():
        if num_classes is None:
            raise ValueError(f"--model {spec}: a registered architecture needs --num-classes")
        model = models.create(spec, num_classes=num_classes).eval()
        description, source = f"{spec} with RANDOM weights (for testing; its predictions mean nothing)", "random"
        print(f"warning: {description}", file=sys.stderr)
    else:
        raise ValueError(f"--model {spec}: not a packaged model ({', '.join(pretrained.names())}), "
                         f"not an existing file, and not a registered architecture "
                         f"(fastseg.models.list_models())")
    classes_out = _num_classes(model)
    classes, palette = _names_and_colours(dataset, classes_out)
    return ChosenModel(model, description, source, classes_out, classes, palette, card, crf_params)


def _num_classes(model: nn.Module) -> int:
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


# ---- eval / bench: the dataset is their own argument, so only --model / --num-classes / --device here

class UsageError(ValueError):
    """A bad command-line argument: reported as `fastseg COMMAND: error: ...`, exit status 2."""


def default_model_path():
    from ..models import pretrained

    return pretrained.get().path


# The default model's architecture (tools/train_default_model.py), for timing it where the weights are not installed.
DEFAULT_ARCHITECTURE = dict(name="unet_resnet18", num_classes=11, base_width=32, decoder_channels=(128, 64, 32, 16))


def add_model_source_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="a fastseg model file (fastseg.models.save) or a registered model name "
                             "(random weights; needs --num-classes); default: the packaged CamVid model")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of a model given by name")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: cpu)")


def model_source(args) -> tuple[str, dict]:
    """What to hand the Segmenter: (a file path or a registered name, its keyword arguments)."""
    from ..models import list_models, pretrained

    if args.model is None or args.model in pretrained.names():
        path = pretrained.get(args.model or pretrained.DEFAULT).path
        if not path.is_file():
            raise UsageError(f"the packaged model is not installed ({path} is missing); "
                             "pass --model FILE or --model NAME --num-classes N")
        if args.num_classes is not None:
            raise UsageError("--num-classes applies only with --model NAME")
        return os.fspath(path), {}
    if os.path.exists(args.model):
        if not os.path.isfile(args.model):
            raise UsageError(f"--model: {args.model} is a directory, not a model file")
        if args.num_classes is not None:
            raise UsageError("--num-classes applies only with --model NAME, not with a model file")
        return args.model, {}
    if args.model not in list_models():
        raise UsageError(f"--model: {args.model!r} is neither an existing file nor a registered model "
                         f"(registered: {', '.join(list_models())})")
    if args.num_classes is None or args.num_classes < 1:
        raise UsageError(f"--model {args.model}: a registered name needs --num-classes N (N >= 1)")
    return args.model, {"num_classes": args.num_classes}
