"""Dataset readers, each taking its root folder in the dataset's own on-disk layout.

    ds = fastseg.data.get_dataset("camvid", "../shared/data/camvid", "val")
    image, label = ds[0]        # uint8 [H, W, 3] RGB, uint8 [H, W] train ids (255 = ignore)
    ds.classes, ds.palette, ds.num_classes, ds.colorize(label)

Every reader maps its labels to contiguous train ids with one shared ignore value, 255.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .ade20k import ADE20K
from .base import IGNORE_INDEX, SegmentationDataset, bit_palette
from .camvid import CamVid
from .cityscapes import Cityscapes
from .cocostuff import COCOStuff
from .voc import VOCSegmentation

registry: dict[str, type[SegmentationDataset]] = {
    cls.name: cls for cls in (CamVid, Cityscapes, VOCSegmentation, ADE20K, COCOStuff)
}


def get_dataset(name: str, root: str | Path, split: str = "train",
                transform: Callable | None = None) -> SegmentationDataset:
    """The reader registered under name (case-insensitive), on root's split."""
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"pascalvoc": "voc", "voc2012": "voc", "ade": "ade20k", "coco": "cocostuff",
               "cocostuff164k": "cocostuff"}
    key = aliases.get(key, key)
    if key not in registry:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(registry)}")
    return registry[key](root, split, transform=transform)


__all__ = ["ADE20K", "COCOStuff", "CamVid", "Cityscapes", "IGNORE_INDEX", "SegmentationDataset",
           "VOCSegmentation", "bit_palette", "get_dataset", "registry"]
