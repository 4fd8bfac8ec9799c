"""PASCAL VOC 2012 segmentation, as distributed (VOCtrainval_11-May-2012.tar).

    root/JPEGImages/{id}.jpg
    root/SegmentationClass/{id}.png          palette PNGs: pixel value = class id
    root/ImageSets/Segmentation/{train,val,trainval}.txt

``root`` is the ``VOC2012`` folder; ``VOCdevkit`` (holding ``VOC2012``) is accepted too. Classes
0..20 (0 = background); 255 marks object boundaries and difficult regions and is ignored. The PNGs'
palette is only for display: the stored indices are the class ids, read as they are.
"""
from __future__ import annotations

from pathlib import Path

from .base import Pair, SegmentationDataset, _require_dir, bit_palette, lookup_table

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
           "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
           "sheep", "sofa", "train", "tvmonitor")

PALETTE = bit_palette(len(CLASSES))  # VOC's own palette (e.g. 1 aeroplane = (128, 0, 0))


class VOCSegmentation(SegmentationDataset):
    name = "voc"
    classes = CLASSES
    palette = PALETTE
    splits = ("train", "val", "trainval")
    label_map = lookup_table({i: i for i in range(len(CLASSES))})  # 255 stays 255

    def find_pairs(self, root: Path, split: str) -> list[Pair]:
        if not (root / "JPEGImages").is_dir() and (root / "VOC2012" / "JPEGImages").is_dir():
            root = root / "VOC2012"
        image_dir = _require_dir(root / "JPEGImages", "VOC images (JPEGImages)")
        label_dir = _require_dir(root / "SegmentationClass", "VOC labels (SegmentationClass)")
        list_path = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_path.is_file():
            raise FileNotFoundError(f"VOC split list not found: {list_path}")
        ids = sorted({line.split()[0] for line in list_path.read_text().splitlines() if line.strip()})
        pairs = [(image_dir / f"{i}.jpg", label_dir / f"{i}.png") for i in ids]
        missing = [p for pair in pairs for p in pair if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"VOC {split}: {len(missing)} file(s) listed in {list_path} are "
                                    f"missing, e.g. {missing[0]}")
        return pairs
