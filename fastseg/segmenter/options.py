"""The Segmenter's grouped options: sliding-window tiling and test-time augmentation."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["Tiling", "TTA"]

TTA_AVERAGES = ("softmax", "logits")


@dataclass(frozen=True)
class Tiling:
    """Run each image larger than one tile as overlapping tiles of `size` = (height, width), rounded up
    to the model's output stride, blending their low-resolution logits with a tent window (tile
    centres count more than their edges). Memory is bounded by `batch` tiles of activations plus one
    low-resolution logits map per image.

    overlap: the fraction of a tile shared with its neighbour (0 <= overlap < 1).
    batch: tiles run through the model together.
    """

    size: tuple[int, int]
    overlap: float = 1 / 3
    batch: int = 1

    def __post_init__(self):
        try:
            h, w = (int(v) for v in self.size)
        except (TypeError, ValueError):
            raise TypeError(f"Tiling.size: expected (height, width), got {self.size!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"Tiling.size: must be positive, got {self.size!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"Tiling.overlap: must be in [0, 1), got {self.overlap!r}")
        if int(self.batch) != self.batch or self.batch < 1:
            raise ValueError(f"Tiling.batch: must be a positive integer, got {self.batch!r}")
        object.__setattr__(self, "size", (h, w))
        object.__setattr__(self, "overlap", float(self.overlap))
        object.__setattr__(self, "batch", int(self.batch))

    def rounded(self, stride: int) -> Tiling:
        """The same tiling with the tile size rounded up to a multiple of `stride`."""
        h, w = self.size
        return dataclasses.replace(self, size=(-(-h // stride) * stride, -(-w // stride) * stride))


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation. Each scale s runs the image resized by s (and, with `flip`, also
    mirrored); the class probabilities (average="softmax") or the logits ("logits") are averaged at
    the low resolution of scale 1, and the fused tail runs once on the average (for softmax, on its
    logarithm, so the confidence is the averaged probability)."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    average: str = "softmax"

    def __post_init__(self):
        try:
            scales = tuple(float(s) for s in self.scales)
        except (TypeError, ValueError):
            raise TypeError(f"TTA.scales: expected a sequence of positive numbers, got {self.scales!r}") from None
        if not scales or any(not (s > 0 and math.isfinite(s)) for s in scales):
            raise ValueError(f"TTA.scales: expected positive scales, got {self.scales!r}")
        if self.average not in TTA_AVERAGES:
            raise ValueError(f"TTA.average: expected one of {TTA_AVERAGES}, got {self.average!r}")
        object.__setattr__(self, "flip", bool(self.flip))
        object.__setattr__(self, "scales", scales)

    @property
    def active(self) -> bool:
        """False when it would run the image once, as it is."""
        return self.flip or self.scales != (1.0,)
