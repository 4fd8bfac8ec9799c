"""Shared by the command-line tests: a small saved model with varied labels, and running `fastseg`."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import fastseg
from fastseg.cli import main

from _images import image
from _zoo import randomize_batchnorm

NUM_CLASSES = 5


def small_model():
    """A narrow U-Net (random weights) whose labels vary over a smooth image: its classifier is scaled
    up so that no class wins everywhere (seed chosen so all five classes appear on the test images)."""
    torch.manual_seed(3)
    model = fastseg.models.create("unet_resnet18", num_classes=NUM_CLASSES, base_width=8,
                                  decoder_channels=(32, 16, 8, 8))
    randomize_batchnorm(model, 3)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(20)
        last.bias.zero_()
    return model.eval()


def write_image(path, h, w, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image(h, w, seed=seed)).save(path)
    return path


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def fastseg_cli(*args) -> int:
    return main([str(a) for a in args])
