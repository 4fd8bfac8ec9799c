"""COCO-Stuff 164k (COCO 2017 images + stuffthingmaps_trainval2017.zip).

    root/images/{train2017,val2017}/000000xxxxxx.jpg
    root/stuffthingmaps_trainval2017/{train2017,val2017}/000000xxxxxx.png
        (``root/annotations/{train2017,val2017}`` is accepted too: a common place to unzip them)

The stuffthingmaps hold, per pixel, the COCO-Stuff id minus one: 0..90 things, 91..181 stuff, and
255 = unlabeled. Eleven thing ids were defined by COCO but never annotated (street sign, hat, shoe,
eye glasses, plate, mirror, window, desk, door, blender, hair brush), so the 182 ids carry 171
classes; they are numbered 0..170 in id order and everything else is 255.

Palette: COCO-Stuff's own helper colours only the stuff classes (things black), so we use the
PASCAL VOC bit palette on the original 1-based COCO-Stuff ids: distinct, stable colours.
"""
from __future__ import annotations

from pathlib import Path

from .base import Pair, SegmentationDataset, _require_dir, bit_palette, list_files, lookup_table, pair_by_key

# labels.txt of COCO-Stuff, ids 1..182 (0 = unlabeled is not a class); None = never annotated.
_ALL_IDS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", None, "backpack",
    "umbrella", None, None, "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", None, "dining table", None, None, "toilet",
    None, "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", None, "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", None,
    # stuff, ids 92..182
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter",
    "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other",
    "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper",
    "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf",
    "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone", "straw",
    "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable",
    "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile",
    "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
assert len(_ALL_IDS) == 182

# raw PNG value (= id - 1) of each class, in train-id order
RAW_VALUES = tuple(raw for raw, name in enumerate(_ALL_IDS) if name is not None)
CLASSES = tuple(name for name in _ALL_IDS if name is not None)
PALETTE = bit_palette(len(_ALL_IDS) + 1)[[raw + 1 for raw in RAW_VALUES]]

_LABEL_DIRS = ("stuffthingmaps_trainval2017", "annotations")


class COCOStuff(SegmentationDataset):
    name = "cocostuff"
    classes = CLASSES
    palette = PALETTE
    splits = ("train", "val")
    label_map = lookup_table({raw: train_id for train_id, raw in enumerate(RAW_VALUES)})

    def find_pairs(self, root: Path, split: str) -> list[Pair]:
        folder = f"{split}2017"
        image_dir = _require_dir(root / "images" / folder, f"COCO-Stuff {split} images")
        label_root = next((root / d for d in _LABEL_DIRS if (root / d / folder).is_dir()), None)
        if label_root is None:
            raise FileNotFoundError(f"COCO-Stuff {split} labels not found: expected one of "
                                    + ", ".join(str(root / d / folder) for d in _LABEL_DIRS))
        images = list_files(image_dir, ".jpg")
        labels = list_files(label_root / folder, ".png")
        return pair_by_key(images, labels, lambda p: p.stem, lambda p: p.stem, f"COCO-Stuff {split}")
