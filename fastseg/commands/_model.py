"""The model options the commands share: --model (a fastseg model file or a registered name),
--num-classes (with a name), --device; the packaged default model when --model is not given."""
from __future__ import annotations

import os
from pathlib import Path

# The model `Segmenter()` loads without arguments (trained on CamVid, see MODEL_CARD.md).
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "camvid_unet_resnet18.safetensors"
# Its architecture (tools/train_default_model.py), for timing it where the weights are not installed.
DEFAULT_ARCHITECTURE = dict(name="unet_resnet18", num_classes=11, base_width=32, decoder_channels=(128, 64, 32, 16))


class UsageError(ValueError):
    """A bad command-line argument: reported as `fastseg COMMAND: error: ...`, exit status 2."""


def add_model_arguments(parser) -> None:
    parser.add_argument("--model", default=None,
                        help="a fastseg model file (fastseg.models.save) or a registered model name "
                             "(random weights; needs --num-classes); default: the packaged CamVid model")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of a model given by name")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default: cpu)")


def model_source(args) -> tuple[str, dict]:
    """What to hand the Segmenter: (a file path or a registered name, its keyword arguments)."""
    from ..models import list_models

    if args.model is None:
        if not DEFAULT_MODEL.is_file():
            raise UsageError(f"the default model is not installed ({DEFAULT_MODEL} is missing); "
                             "pass --model FILE or --model NAME --num-classes N")
        if args.num_classes is not None:
            raise UsageError("--num-classes applies only with --model NAME")
        return os.fspath(DEFAULT_MODEL), {}
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
