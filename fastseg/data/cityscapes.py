"""Cityscapes, fine annotations, as distributed (leftImg8bit_trainvaltest.zip + gtFine_trainvaltest.zip).

    root/leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

The ``labelIds`` PNGs hold the 34 full label ids (0..33); the 19 evaluated classes get train ids
0..18 (the official cityscapesScripts table) and every other id becomes 255 (ignored). The test
split's labels are all "unlabeled" on purpose, so it reads but is useless for scores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Pair, SegmentationDataset, _require_dir, list_files, lookup_table, pair_by_key

# (train id order) name, label id, official colour
_TABLE = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)

CLASSES = tuple(name for name, _, _ in _TABLE)
PALETTE = np.array([colour for _, _, colour in _TABLE], dtype=np.uint8)
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for train_id, (_, label_id, _) in enumerate(_TABLE)}

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(SegmentationDataset):
    name = "cityscapes"
    classes = CLASSES
    palette = PALETTE
    splits = ("train", "val", "test")
    label_map = lookup_table(LABEL_ID_TO_TRAIN_ID)
    # the label ids 0..33 that are not evaluated (void, ego vehicle, ...), and 255
    raw_ignore = tuple(i for i in range(34) if i not in LABEL_ID_TO_TRAIN_ID) + (255,)

    def find_pairs(self, root: Path, split: str) -> list[Pair]:
        image_dir = _require_dir(root / "leftImg8bit" / split, f"Cityscapes {split} images")
        label_dir = _require_dir(root / "gtFine" / split, f"Cityscapes {split} labels")
        # Key = "city/city_seq_frame", so a frame filed under the wrong city does not pair.
        images = list_files(image_dir, _IMAGE_SUFFIX, recursive=True)
        labels = list_files(label_dir, _LABEL_SUFFIX, recursive=True)

        def key(path: Path, suffix: str, base: Path) -> str:
            rel = path.relative_to(base).as_posix()
            return rel[: -len(suffix)]

        return pair_by_key(images, labels, lambda p: key(p, _IMAGE_SUFFIX, image_dir),
                           lambda p: key(p, _LABEL_SUFFIX, label_dir), f"Cityscapes {split}")
