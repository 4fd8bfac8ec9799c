"""CamVid in the SegNet split layout (the 11-class version used by SegNet and ENet).

    root/train/*.png       root/trainannot/*.png     (367 pairs, 480x360)
    root/val/*.png         root/valannot/*.png       (101)
    root/test/*.png        root/testannot/*.png      (233, when present)

Labels are 8-bit PNGs of ids 0..10 plus 11 = Unlabelled. Id 11 is mapped to 255 so that every fastseg
dataset shares ``ignore_index = 255`` (losses and metrics skip it); ids 0..10 are kept as they are.
An image and its label share a file name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Pair, SegmentationDataset, _require_dir, list_files, lookup_table, pair_by_key

CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist")

# SegNet's colours (SegNet-Tutorial); Unlabelled (id 11, here 255) is black.
PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
], dtype=np.uint8)

RAW_IGNORE = 11  # "Unlabelled" in the files


class CamVid(SegmentationDataset):
    name = "camvid"
    classes = CLASSES
    palette = PALETTE
    splits = ("train", "val", "test")
    label_map = lookup_table({i: i for i in range(len(CLASSES))})  # 11 (and anything else) -> 255
    raw_ignore = (RAW_IGNORE, 255)

    def find_pairs(self, root: Path, split: str) -> list[Pair]:
        image_dir = _require_dir(root / split, f"CamVid {split} images")
        label_dir = _require_dir(root / f"{split}annot", f"CamVid {split} labels")
        images = list_files(image_dir, ".png")
        labels = list_files(label_dir, ".png")
        return pair_by_key(images, labels, lambda p: p.stem, lambda p: p.stem, f"CamVid {split}")
