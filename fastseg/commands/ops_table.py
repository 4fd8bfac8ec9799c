"""The fused ops against the references users would otherwise run, as a table.

Each row times fastseg and its reference interleaved in the same run (medians), checks that they
agree, and prints the speed-up. Absolute times on a shared machine mean little; the ratio is the claim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._timing import interleaved_medians


def _upsample_row(gen: torch.Generator):
    from .ops.upsample_argmax import upsample_argmax

    logits = torch.randn(1, 19, 128, 256, generator=gen)
    size = (1024, 2048)
    ours = lambda: upsample_argmax(logits, size=size)  # noqa: E731
    ref = lambda: F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)  # noqa: E731
    agree = (ours().long() == ref()).float().mean().item()
    t = interleaved_medians({"ours": ours, "ref": ref}, rounds=5)
    return ("upsample + argmax", "1x19x128x256 -> 1024x2048", "F.interpolate + argmax",
            t["ref"], t["ours"], f"{agree * 100:.4f} % labels equal")


def _confusion_row(gen: torch.Generator):
    from .metrics import confusion_matrix

    c = 19
    pred = torch.randint(0, c, (4, 1024, 2048), generator=gen, dtype=torch.uint8)
    target = torch.randint(0, c, (4, 1024, 2048), generator=gen, dtype=torch.uint8)
    target[torch.rand(target.shape, generator=gen) < 0.05] = 255

    def ref():
        valid = target != 255
        idx = target[valid].long() * c + pred[valid].long()
        return torch.bincount(idx, minlength=c * c).reshape(c, c)

    ours = lambda: confusion_matrix(pred, target, c)  # noqa: E731
    equal = torch.equal(ours(), ref())
    t = interleaved_medians({"ours": ours, "ref": ref}, rounds=5)
    return ("confusion matrix", "4x1024x2048 uint8, 19 classes", "torch.bincount(t*C+p)",
            t["ref"], t["ours"], "exactly equal" if equal else "MISMATCH")


def run() -> int:
    gen = torch.Generator().manual_seed(0)
    print(f"fastseg demo: fused ops vs their references on this machine "
          f"({torch.get_num_threads()} threads, medians of interleaved runs)\n")
    rows = [_upsample_row(gen), _confusion_row(gen)]
    head = ("op", "shape", "reference", "ref ms", "fastseg ms", "speed-up", "agreement")
    table = [head] + [(op, shape, ref, f"{tr * 1e3:.1f}", f"{to * 1e3:.1f}", f"{tr / to:.1f}x", agree)
                      for op, shape, ref, tr, to, agree in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    ok = all("MISMATCH" not in r[-1] for r in rows)
    return 0 if ok else 1
