"""The size each image runs through the network at, and the size its logits are upsampled to.

A model is trained on images of one scale: objects of a given size in pixels. A 4K photo of a street
holds cars eight times larger than the 480x360 frames the default model learnt, and run at full size
it agrees with the frame's own answer on under half the pixels (and takes seconds). So when the model
knows its training size (`fastseg.models.input_size(model)`, saved in its config), each image is
resized so that its short side matches the training size's short side, keeping its aspect ratio
(antialiased when shrinking, inside the preprocessing pass: `fastseg.ops.resize_normalize`), and the
fused tail upsamples the logits straight to the image's own size. Models of unknown training size
(converted from torchvision, smp, transformers) run images at their own size unless told.

    scale=None, size=None   the model's training size when known, else the image's own size
    scale=0.5               each side times 0.5 (scale=1: the image as it is)
    size=512                the short side to 512 pixels, aspect ratio kept
    size=(h, w)             exactly h x w (the labels still come back at the image's own size)
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Scaling:
    trained: tuple[int, int] | None = None    # the model's training (height, width), if known
    scale: float | None = None
    size: int | tuple[int, int] | None = None

    @classmethod
    def of(cls, scale, size, trained: tuple[int, int] | None) -> Scaling:
        """Checked arguments of the Segmenter (errors name `scale` / `size`)."""
        if scale is not None and size is not None:
            raise ValueError(f"scale, size: give one of them, got scale={scale!r} and size={size!r}")
        if scale is not None:
            if (not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not math.isfinite(scale)
                    or scale <= 0):
                raise ValueError(f"scale: must be a positive number (1: images at their own size), got {scale!r}")
            scale = float(scale)
        if size is not None:
            size = _check_size(size)
        return cls(trained, scale, size)

    def network_size(self, H: int, W: int) -> tuple[int, int]:
        """(h, w) the network runs an H x W image at."""
        if isinstance(self.size, tuple):
            return self.size
        if isinstance(self.size, int):
            factor = self.size / min(H, W)
        elif self.scale is not None:
            factor = self.scale
        elif self.trained is not None:
            factor = min(self.trained) / min(H, W)
        else:
            return H, W
        return max(1, round(H * factor)), max(1, round(W * factor))


def tail_size(image: tuple[int, int], network: tuple[int, int], padded: tuple[int, int]) -> tuple[int, int]:
    """The size to upsample the logits to, of which the top-left image[0] x image[1] are the labels.
    The logits cover the network's input as padded (bottom / right) to the model's stride: stretched
    by the same factor as the image, the image's part of them lands on the image's own pixels."""
    (H, W), (h, w), (ph, pw) = image, network, padded
    if (ph, pw) == (h, w):
        return H, W
    return math.ceil(H * ph / h), math.ceil(W * pw / w)


def _check_size(size) -> int | tuple[int, int]:
    def positive_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1

    if positive_int(size):
        return int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(positive_int(v) for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size: expected the short side in pixels or (height, width), positive integers, got {size!r}")
