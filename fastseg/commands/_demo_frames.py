"""Which frames `fastseg demo` shows: real CamVid frames the model did not train on.

Two pools of frames: CamVid's train and val splits when the dataset is on disk, else the few frames
the package ships (fastseg/assets/camvid_demo, with frames.json naming each frame's split). A
packaged model's card says what it trained on ("training": {"splits": [...], "excluded_frames":
[...]}); a frame of a trained split is seen unless it was excluded. Seen frames are never shown as
unseen: they are left out and counted. For a model without a card nothing is known, and the demo
says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.camvid import CamVid

PACKAGED = Path(__file__).resolve().parents[1] / "assets" / "camvid_demo"


@dataclass(frozen=True)
class DemoFrame:
    name: str     # CamVid's file stem, e.g. 0006R0_f03780
    split: str    # the CamVid split the frame belongs to
    image: Path
    label: Path   # raw CamVid ids (11 = Unlabelled)

    @property
    def street(self) -> str:
        """CamVid frame names start with their drive: 0006R0_f03780 -> 0006R0."""
        return self.name.split("_")[0]

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB [H,W,3] and train ids [H,W] (255 = unlabelled)."""
        with Image.open(self.image) as im:
            image = np.array(im.convert("RGB"))
        with Image.open(self.label) as im:
            truth = CamVid.label_map[np.asarray(im)]
        if image.shape[:2] != truth.shape:
            raise ValueError(f"{self.image} and its label {self.label} differ in size")
        return image, truth


def packaged_frames(folder: Path = PACKAGED) -> list[DemoFrame]:
    splits = json.loads((folder / "frames.json").read_text())
    return [DemoFrame(name, split, folder / f"{name}.jpg", folder / f"{name}_label.png")
            for name, split in sorted(splits.items())]


def camvid_frames(root: Path) -> list[DemoFrame]:
    """The train and val frames under a CamVid root (the splits that are present)."""
    frames = []
    for split in ("train", "val"):
        if (root / split).is_dir():
            frames += [DemoFrame(image.stem, split, image, label) for image, label in CamVid(root, split).pairs]
    return frames


@dataclass(frozen=True)
class Pool:
    unseen: list[DemoFrame]
    seen: int          # frames of the pool the model trained on (not shown)
    known: bool        # False: the model carries no record of what it trained on


def split_by_training(frames: list[DemoFrame], card: dict | None) -> Pool:
    training = (card or {}).get("training")
    if not isinstance(training, dict):
        return Pool(list(frames), 0, False)
    splits, excluded = set(training.get("splits", ())), set(training.get("excluded_frames", ()))
    unseen = [f for f in frames if f.split not in splits or f.name in excluded]
    return Pool(unseen, len(frames) - len(unseen), True)


def pick(frames: list[DemoFrame], count: int) -> list[DemoFrame]:
    """Up to `count` frames spread over the streets (one from each drive in turn), and evenly over
    each drive's frames: a demo should show more than one street when it can."""
    streets: dict[str, list[DemoFrame]] = {}
    for f in sorted(frames, key=lambda f: f.name):
        streets.setdefault(f.street, []).append(f)
    per_street = {s: _spread(fs, count) for s, fs in streets.items()}
    picked: list[DemoFrame] = []
    for rank in range(max((len(v) for v in per_street.values()), default=0)):
        picked += [fs[rank] for fs in per_street.values() if rank < len(fs)]
    return sorted(picked[:count], key=lambda f: f.name)


def _spread(frames: list[DemoFrame], count: int) -> list[DemoFrame]:
    """`count` frames evenly spaced over the list, the middle ones first (so that a cut keeps them spread)."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    order = sorted(idx, key=lambda i: abs(i - (len(frames) - 1) / 2))
    return [frames[i] for i in order]
