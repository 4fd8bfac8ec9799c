"""The common base of the dataset readers: file pairing, label id mapping, checks.

Every reader yields ``(image, label)``: the image as a uint8 ``[H, W, 3]`` RGB numpy array and the
label as a uint8 ``[H, W]`` numpy array of *train ids* (``0 .. num_classes-1``, and
``ignore_index`` = 255 for pixels that count in neither loss nor metrics). An optional joint
``transform(image, label)`` (see ``fastseg.training.augment``) is applied last.

A reader only has to say where its pairs are (``find_pairs``) and how its on-disk label values map to
train ids (``label_map``, a 256-entry lookup table); decoding, checking and mapping live here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IGNORE_INDEX = 255

Pair = tuple[Path, Path]


def lookup_table(mapping: dict[int, int], default: int = IGNORE_INDEX) -> np.ndarray:
    """A 256-entry uint8 table sending raw label value -> train id; values not in mapping -> default."""
    lut = np.full(256, default, dtype=np.uint8)
    for raw, train_id in mapping.items():
        lut[raw] = train_id
    return lut


def bit_palette(n: int) -> np.ndarray:
    """The PASCAL VOC palette: entry i spreads the bits of i over the high bits of R, G and B.

    Bit 3k of i goes to bit 7-k of R, bit 3k+1 to G, bit 3k+2 to B, so neighbouring ids get
    clearly different colours and the table extends to any length.
    """
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        value, shift = i, 7
        while value:
            for channel in range(3):
                palette[i, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return palette


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a directory")
    return path


def list_files(folder: Path, suffix: str, recursive: bool = False) -> list[Path]:
    """Files of folder whose names end with suffix (case-insensitive), sorted by path."""
    pattern = "**/*" if recursive else "*"
    suffix = suffix.lower()
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.name.lower().endswith(suffix))


def pair_by_key(images: Sequence[Path], labels: Sequence[Path],
                image_key: Callable[[Path], str], label_key: Callable[[Path], str],
                where: str) -> list[Pair]:
    """Match image and label files on a key (e.g. the file stem); any unmatched file is an error."""
    image_by_key = {image_key(p): p for p in images}
    label_by_key = {label_key(p): p for p in labels}
    if len(image_by_key) != len(images) or len(label_by_key) != len(labels):
        raise ValueError(f"{where}: two files share one name key; cannot pair images and labels")
    no_label = sorted(set(image_by_key) - set(label_by_key))
    no_image = sorted(set(label_by_key) - set(image_by_key))
    if no_label or no_image:
        parts = []
        if no_label:
            parts.append(f"{len(no_label)} image(s) without a label, e.g. {image_by_key[no_label[0]]}")
        if no_image:
            parts.append(f"{len(no_image)} label(s) without an image, e.g. {label_by_key[no_image[0]]}")
        raise ValueError(f"{where}: images and labels do not pair up: " + "; ".join(parts))
    return [(image_by_key[k], label_by_key[k]) for k in sorted(image_by_key)]


class SegmentationDataset(torch.utils.data.Dataset):
    """Base of all readers. Subclasses set the class attributes and implement ``find_pairs``.

    Class attributes:
        name: registry name.           classes: class names, index = train id.
        palette: uint8 [num_classes, 3] colours, index = train id.
        splits: the split names the reader knows.
        label_map: uint8 [256] raw on-disk label value -> train id (255 = ignore).
        raw_ignore: the raw values the dataset documents as "ignore" (unlabelled, void, boundaries).
            Any other raw value that maps to ignore is outside the dataset's classes: a label file of
            another label set, or damaged. It is ignored too, and counted (`outside_classes`).
    """

    name: str = ""
    classes: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    splits: tuple[str, ...] = ()
    label_map: np.ndarray = np.arange(256, dtype=np.uint8)
    ignore_index: int = IGNORE_INDEX
    raw_ignore: tuple[int, ...] = (IGNORE_INDEX,)

    def __init__(self, root: str | Path, split: str = "train",
                 transform: Callable[[np.ndarray, np.ndarray], object] | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{type(self).__name__}: root {self.root} is not a directory")
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: split must be one of {list(self.splits)}, got {split!r}")
        self.split = split
        self.transform = transform
        self.pairs: list[Pair] = self.find_pairs(self.root, split)
        self._outside = np.zeros(256, np.int64)  # pixels per raw value outside the classes, as read
        if not self.pairs:
            raise FileNotFoundError(f"{type(self).__name__}: split {split!r} under {self.root} has no images")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def find_pairs(self, root: Path, split: str) -> list[Pair]:
        """Sorted (image path, label path) pairs of the split; raise a clear error on a bad layout."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.pairs)

    def read_image(self, index: int) -> np.ndarray:
        path = self.pairs[index][0]
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy (np.asarray would be read-only)

    def read_raw_label(self, index: int) -> np.ndarray:
        """The label exactly as stored (palette indices for 'P' images), uint8 [H, W]."""
        path = self.pairs[index][1]
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise ValueError(f"label {path} has mode {im.mode!r}; expected a single-channel "
                                 "8-bit ('L') or palette ('P') PNG of class ids")
            return np.asarray(im)

    def read_label(self, index: int) -> np.ndarray:
        """The label as train ids (uint8 [H, W], 255 = ignore), without the transform."""
        raw = self.read_raw_label(index)
        outside = ((self.label_map == self.ignore_index) & ~np.isin(np.arange(256), self.raw_ignore))[raw]
        if outside.any():
            self._outside += np.bincount(raw[outside], minlength=256)
        return self.label_map[raw]

    def outside_classes(self) -> dict[int, int]:
        """{raw label value: pixels} of the labels read so far whose values are neither a class nor
        one of `raw_ignore`: they were read as ignore, and a caller scoring them should say so."""
        return {int(v): int(self._outside[v]) for v in np.flatnonzero(self._outside)}

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, label = self.read_image(index), self.read_label(index)
        if image.shape[:2] != label.shape:
            raise ValueError(f"image {self.pairs[index][0]} is {image.shape[1]}x{image.shape[0]} but its "
                             f"label {self.pairs[index][1]} is {label.shape[1]}x{label.shape[0]}")
        if self.transform is not None:
            return self.transform(image, label)
        return image, label

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] picture of a train-id label; ignored pixels are black."""
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(self.palette)] = self.palette
        return table[np.asarray(label, dtype=np.uint8)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"
