"""A small CamVid-shaped model file for the evaluation tests, with random weights whose labels vary
over an image (see fastseg.bench.models.randomise), so that equal matrices mean something."""
from __future__ import annotations

import fastseg
from fastseg.bench.models import randomise

NUM_CLASSES = 11


def save_small_model(path, num_classes: int = NUM_CLASSES):
    model = fastseg.models.create("unet_resnet18", num_classes=num_classes, base_width=8,
                                  decoder_channels=(32, 16, 8))
    fastseg.models.save(randomise(model, num_classes, seed=0), path)
    return path
