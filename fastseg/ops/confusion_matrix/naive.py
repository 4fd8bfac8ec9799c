"""confusion_matrix in plain PyTorch: the specification the native and Triton kernels are tested against."""
from __future__ import annotations

import torch


def reference(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
              ignore_index: int | None = 255) -> torch.Tensor:
    """The specification, in plain PyTorch: mask the ignored pixels, check the range, bincount."""
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    C = num_classes
    if bool(((t < 0) | (t >= C)).any()) or bool(((p < 0) | (p >= C)).any()):
        raise_out_of_range(pred, target, C, ignore_index)
    return torch.bincount(t * C + p, minlength=C * C).reshape(C, C)


def raise_out_of_range(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                       ignore_index: int | None) -> None:
    """Raise the ValueError naming the first input, and a value, outside [0, C) at a counted pixel.

    Only called once a kernel has flagged a bad value, so its cost does not matter.
    """
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, values in (("target", t), ("pred", p)):
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.numel():
            not_ignored = "" if name == "pred" or ignore_index is None else \
                f" and is not ignore_index={ignore_index}"
            where = "" if name == "target" or ignore_index is None else " at a pixel whose target is not ignored"
            raise ValueError(
                f"confusion_matrix: {name} holds the value {int(bad[0])}{where}, which is outside "
                f"[0, num_classes={num_classes}){not_ignored} ({bad.numel()} such pixel(s))")
    raise AssertionError("confusion_matrix: a kernel flagged an out-of-range value that is not there")
