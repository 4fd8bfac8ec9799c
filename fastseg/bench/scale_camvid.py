"""A photo far larger than the model's training images: a CamVid val frame enlarged 8x to 3840x2880
(bicubic), as is and with noise added at the large size (sensor noise, which a resize without
antialiasing would alias into the network's input). The Segmenter resizes it towards the default
model's training size (480x360) and upsamples the logits straight to 3840x2880; its labels are held
against the native 480x360 frame's logits upsampled straight to 3840x2880, and its time against the
native frame's (`fastseg bench --only scale_camvid --camvid DIR`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import ops
from ..data import CamVid
from .measure import Agreement, Reference, Row, measure
from .timing import SETTLE

SIZE = (2880, 3840)   # (height, width): CamVid's 360x480 times 8
NOISE = 8.0           # standard deviation of the added noise, in 0..255 levels
AGREEMENT = 0.985     # of pixels with the native answer's label
TIME_RATIO = 1 / 1.3  # native frame's time / the enlarged frame's: within 1.3x


def frames(root: Path, index: int = 0, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(the native val frame, it enlarged to SIZE with `noise` added), uint8 [H,W,3]."""
    native = np.asarray(CamVid(root, "val")[index][0])
    big = np.asarray(Image.fromarray(native).resize(SIZE[::-1], Image.BICUBIC), dtype=np.float32)
    if noise:
        big = big + np.random.default_rng(seed).normal(0.0, noise, big.shape).astype(np.float32)
    return native, np.clip(np.round(big), 0, 255).astype(np.uint8)


@torch.inference_mode()
def native_labels_at(seg, native: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The native frame's logits (the network at the frame's own size) upsampled straight to `size`."""
    x = seg.preprocess(torch.from_numpy(native)[None], hwc=True)
    logits, _ = seg.logits(x)
    return ops.upsample_argmax(logits, size=size, align_corners=seg.align_corners)[0]


def agreement(seg, native: np.ndarray, big: np.ndarray) -> Agreement:
    return Agreement.labels(seg.predict(big).labels, native_labels_at(seg, native, SIZE), AGREEMENT)


def scale_camvid(quick: bool, camvid: Path) -> list[Row]:
    from .. import Segmenter

    seg = Segmenter()
    rows = []
    for noise in (0.0, NOISE):
        native, big = frames(camvid, noise=noise)
        agree = agreement(seg, native, big)
        what = "enlarged 8x" + (f", noise sigma {noise:g}" if noise else "")
        rows += measure(f"Segmenter: CamVid frame {what}", f"{SIZE[1]}x{SIZE[0]} uint8 -> labels",
                        {"fastseg (resized to 480x360, logits upsampled to 3840x2880)": partial(seg.predict, big)},
                        {"the native 480x360 frame": Reference(
                            partial(seg.predict, native),
                            agree, TIME_RATIO)},
                        rounds=3 if quick else 11, settle=SETTLE)
    return rows
