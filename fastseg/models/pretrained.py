"""Models trained by fastseg and shipped inside the package (fastseg/weights/).

    model = fastseg.models.pretrained.load()            # the default model (what Segmenter() runs)
    info = fastseg.models.pretrained.get("camvid")      # its file, dataset, class names, palette, card

A packaged model is a file written by `fastseg.models.save` (fp16 weights) and, optionally, a JSON
model card next to it (same name, .json) with the figures of its training run: "summary" (one line
people read), "training" ({"splits": [...], "excluded_frames": [...]}: what it trained on, so that
`fastseg demo` never shows a trained frame as unseen), "epochs", per-class IoU, ... Class names
and colours come from the dataset reader it was trained on, so a prediction can be coloured and
explained without the dataset on disk.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class PretrainedModel:
    name: str          # what users type: Segmenter("camvid"), fastseg predict --model camvid
    file: str          # under fastseg/weights/
    dataset: str       # the fastseg.data reader whose classes it predicts
    description: str
    # DenseCRF parameters for this model's outputs (`fastseg predict --crf`, `fastseg demo`);
    # empty: pydensecrf's usual ones (DenseCRF's defaults)
    crf: dict = field(default_factory=dict)
    # (height, width) of its training images, for files saved before the config carried it
    input_size: tuple[int, int] | None = None

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def card_path(self) -> Path:
        return self.path.with_suffix(".json")

    @property
    def classes(self) -> tuple[str, ...]:
        return _dataset_class(self.dataset).classes

    @property
    def palette(self) -> np.ndarray:
        return _dataset_class(self.dataset).palette

    def card(self) -> dict | None:
        """The model card's figures (dict), or None when the package carries no card."""
        if not self.card_path.is_file():
            return None
        return json.loads(self.card_path.read_text())


_MODELS = {m.name: m for m in [
    PretrainedModel("camvid", "camvid_unet_resnet18.safetensors", "camvid",
                    "U-Net on a half-width ResNet-18 with image pooling, trained by fastseg from scratch "
                    "on CamVid train + val (11 classes, 480x360 driving frames)",
                    # chosen on a street the model's recipe never saw (0006R0, tools/choose_crf.py): the best
                    # mIoU among settings that lower no class by more than 1 IoU point (MODEL_CARD.md, CRF).
                    # pydensecrf's usual bilateral term (sxy 80, srgb 13, compat 10) erases poles and signs
                    crf=dict(n_iter=5, sxy_gaussian=3, compat_gaussian=1, sxy_bilateral=20,
                             srgb_bilateral=5, compat_bilateral=4),
                    input_size=(360, 480)),
]}
DEFAULT = "camvid"


def names() -> list[str]:
    return sorted(_MODELS)


def get(name: str = DEFAULT) -> PretrainedModel:
    if name not in _MODELS:
        raise ValueError(f"unknown packaged model {name!r}; packaged models: {', '.join(names())}")
    return _MODELS[name]


def load(name: str = DEFAULT) -> nn.Module:
    """The packaged model `name` in fp32 (its weights are stored in fp16), eval mode, on the CPU."""
    from .config import input_size
    from .io import load as load_file

    info = get(name)
    if not info.path.is_file():
        raise FileNotFoundError(
            f"the packaged model {name!r} is missing: {info.path} does not exist. It ships with the "
            f"package (trained by tools/train_default_model.py); reinstall fastseg, or pass a model "
            f"file of your own.")
    model = load_file(info.path).float().eval()
    if info.input_size is not None and input_size(model) is None:
        cast(Any, model).config["input_size"] = list(info.input_size)
    return model


def _dataset_class(name: str):
    from ..data import registry

    return registry[name]
