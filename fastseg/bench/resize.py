"""The Segmenter's preprocessing of a frame larger than the model's training size: a uint8 HWC frame
to the normalised float input at 480x360 in one native pass (`fastseg.ops.resize_normalize`), against
what users would write with torch: an antialiased F.interpolate on the float image, or torch's own
uint8 antialiased resize, then the normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .measure import Agreement, Reference, Row, generator, measure

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def resize_normalize(quick: bool) -> list[Row]:
    from ..ops import resize_normalize as op

    H, W = (720, 960) if quick else (2880, 3840)
    size = (360, 480)
    frame = torch.randint(0, 256, (1, H, W, 3), dtype=torch.uint8, generator=generator(0))
    chw = frame.permute(0, 3, 1, 2)  # the HWC frame as the Segmenter sees it: a view
    scale, shift = 1 / (255 * STD), MEAN / STD

    def ours():
        return op(chw, size, scale, shift)

    def float_route():
        x = F.interpolate(chw.float(), size=size, mode="bilinear", antialias=True)
        return x.mul_(scale).sub_(shift)

    def uint8_route():
        return F.interpolate(chw, size=size, mode="bilinear", antialias=True).float().mul_(scale).sub_(shift)

    got = ours()
    # torch's uint8 resize works in fixed point and rounds to whole levels: within a few levels (3e-2
    # of the normalised range) on a large shrink
    refs = {"F.interpolate(float, antialias) + normalise":
            Reference(float_route, Agreement.close(got, float_route(), 1e-5)),
            "F.interpolate(uint8, antialias) + normalise":
            Reference(uint8_route, Agreement.close(got, uint8_route(), 3e-2))}
    return measure("resize + normalise", f"1x{H}x{W}x3 uint8 -> 1x3x360x480 fp32", {"fastseg": ours}, refs,
                   rounds=5 if quick else 11)
