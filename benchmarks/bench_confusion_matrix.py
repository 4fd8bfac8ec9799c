"""Confusion matrix: fastseg native (C++) against what users would otherwise run.

References, timed in the same run and interleaved:
  bincount      torch.bincount(t[valid] * C + p[valid], minlength=C*C).reshape(C, C), with the
                masking and the widening to int64 a user has to do (uint8 * 19 would overflow)
  torchmetrics  MulticlassJaccardIndex(num_classes=19, ignore_index=255, average=None),
                reset + update + compute (its defaults, argument validation included)
All three matrices are asserted equal (torchmetrics' confmat state, and its IoU against ours).

Workload: 8 x 1024 x 2048 labels (quick mode: 2 x 256 x 512), 19 classes, 5 % of the target
pixels = 255 (ignored). Ground truth is made of blocks of one class, like real label maps; the
prediction agrees on ~85 % of the pixels. uint8 (what upsample_argmax and PNG label files give)
is the main case; int64 is reported too.

  pytest benchmarks/bench_confusion_matrix.py -s            (add --quick for the CI size)
  FASTSEG_BENCH_STRICT=1 ... also asserts the issue's targets (5x bincount, 10x torchmetrics)
"""
from __future__ import annotations

import pytest
import torch

from fastseg.metrics import confusion_matrix, scores_from_matrix

C = 19
IGNORE = 255


def workload(quick: bool, dtype: torch.dtype):
    n, h, w = (2, 256, 512) if quick else (8, 1024, 2048)
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, C, (n, h // 32, w // 32), generator=g, dtype=torch.uint8)
    target = blocks.repeat_interleave(32, 1).repeat_interleave(32, 2)
    noise = torch.rand(target.shape, generator=g) < 0.15
    pred = torch.where(noise, torch.randint(0, C, target.shape, generator=g, dtype=torch.uint8), target)
    target = target.masked_fill(torch.rand(target.shape, generator=g) < 0.05, IGNORE)
    return pred.to(dtype).contiguous(), target.to(dtype).contiguous()


def bincount_route(pred, target):
    valid = target != IGNORE
    return torch.bincount(target[valid].long() * C + pred[valid].long(), minlength=C * C).reshape(C, C)


def run(compare, quick, dtype, targets):
    from torchmetrics.classification import MulticlassJaccardIndex

    pred, target = workload(quick, dtype)
    metric = MulticlassJaccardIndex(num_classes=C, ignore_index=IGNORE, average=None)

    def native():
        return confusion_matrix(pred, target, C, IGNORE, backend="native")

    def bincount():
        return bincount_route(pred, target)

    def torchmetrics():
        metric.reset()
        metric.update(pred, target)
        return metric.compute()

    # Equal results, in this run, before any timing.
    ours = native()
    assert torch.equal(ours, bincount())
    iou_tm = torchmetrics()
    assert torch.equal(metric.confmat.long(), ours)
    assert torch.allclose(iou_tm.double(), scores_from_matrix(ours).iou, rtol=1e-6, atol=1e-6)
    assert int(ours.sum()) == int((target != IGNORE).sum())

    return compare(ours={"native": native},
                   references={"bincount": bincount, "torchmetrics": torchmetrics},
                   rounds=3 if quick else 5, targets=targets)


def test_confusion_matrix_uint8(compare, quick):
    run(compare, quick, torch.uint8,
        targets={"bincount / native": 5, "torchmetrics / native": 10})


def test_confusion_matrix_int64(compare, quick):
    run(compare, quick, torch.int64, targets=None)  # reported, no target in the issue
