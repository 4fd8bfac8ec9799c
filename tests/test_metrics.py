"""fastseg.metrics: the ConfusionMatrix meter and its scores (hand-checked, and against torchmetrics),
including all_reduce across two real processes on the gloo backend."""
from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastseg.metrics import ConfusionMatrix, confusion_matrix, scores_from_matrix

NAN = float("nan")


def assert_close(got, want, tol=1e-12):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    assert torch.allclose(got, want, rtol=tol, atol=tol, equal_nan=True), (got, want)


def hand_case():
    # 4 classes; class 3 appears nowhere; one pixel ignored (its prediction 2 must not count).
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    return pred, target


def test_scores_of_a_hand_checked_case():
    pred, target = hand_case()
    meter = ConfusionMatrix(4, ignore_index=255)
    meter.update(pred, target)
    s = meter.compute()
    # rows = ground truth: class 0 -> (0, 1); class 1 -> (1, 1); class 2 -> (0)
    assert s.matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    # IoU = tp / (gt + pred - tp): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0), absent -> nan
    assert_close(s.iou, [1 / 3, 2 / 3, 0.0, NAN])
    assert_close(s.miou, (1 / 3 + 2 / 3 + 0) / 3)
    assert_close(s.class_acc, [1 / 2, 2 / 2, 0 / 1, NAN])
    assert_close(s.mean_acc, 0.5)
    assert_close(s.dice, [2 / 4, 4 / 5, 0.0, NAN])
    assert_close(s.mean_dice, (0.5 + 0.8 + 0) / 3)
    assert_close(s.pixel_acc, 3 / 5)
    assert_close(s.fw_iou, 2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)


def test_class_predicted_but_absent_from_ground_truth():
    # Class 2 is only predicted: IoU and Dice 0 (counted in the means), accuracy undefined.
    m = torch.tensor([[3, 0, 1], [0, 2, 0], [0, 0, 0]])
    s = scores_from_matrix(m)
    assert_close(s.iou, [3 / 4, 1.0, 0.0])
    assert_close(s.miou, (3 / 4 + 1 + 0) / 3)
    assert_close(s.class_acc, [3 / 4, 1.0, NAN])
    assert_close(s.mean_acc, (3 / 4 + 1) / 2)
    assert_close(s.dice, [6 / 7, 1.0, 0.0])


def test_empty_meter_scores_are_nan_not_errors():
    s = ConfusionMatrix(3).compute()
    assert all(math.isnan(v) for v in (s.miou, s.pixel_acc, s.mean_acc, s.fw_iou, s.mean_dice))
    assert bool(s.iou.isnan().all())


@pytest.mark.parametrize("C", [2, 7, 19])
def test_scores_match_torchmetrics(C):
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

    g = torch.Generator().manual_seed(C)
    target = torch.randint(0, C, (3, 40, 50), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target,
                       torch.randint(0, C, target.shape, generator=g))
    target[torch.rand(target.shape, generator=g) < 0.05] = 255
    pred, target = pred.to(torch.uint8), target.to(torch.uint8)
    meter = ConfusionMatrix(C, ignore_index=255)
    for i in range(3):  # batch by batch
        meter.update(pred[i], target[i])
    s = meter.compute()

    def tm(metric_cls, **kw):
        m = metric_cls(num_classes=C, ignore_index=255, **kw)
        m.update(pred.long(), target.long())
        return m.compute().double()

    jaccard = MulticlassJaccardIndex(num_classes=C, ignore_index=255, average=None)
    jaccard.update(pred.long(), target.long())
    assert torch.equal(jaccard.confmat.long(), s.matrix)
    tol = 1e-6  # torchmetrics divides in float32
    assert_close(s.iou, jaccard.compute().double(), tol)
    assert_close(s.miou, tm(MulticlassJaccardIndex, average="macro"), tol)
    assert_close(s.pixel_acc, tm(MulticlassAccuracy, average="micro"), tol)
    assert_close(s.class_acc, tm(MulticlassAccuracy, average=None), tol)
    assert_close(s.mean_acc, tm(MulticlassAccuracy, average="macro"), tol)
    assert_close(s.dice, tm(MulticlassF1Score, average=None), tol)  # Dice = F1 per class


def test_update_accumulates_like_one_big_matrix_any_kind():
    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 6, (4, 31, 29), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    pred = torch.randint(0, 6, (4, 31, 29), generator=g)
    whole = confusion_matrix(pred, target, 6)
    meter = ConfusionMatrix(6)
    batch = meter.update(pred[0], target[0])                             # torch
    assert torch.equal(batch, confusion_matrix(pred[0], target[0], 6))
    meter.update(pred[1].numpy(), target[1].numpy().astype(np.uint8))    # numpy, mixed dtypes
    ro = pred[2].to(torch.uint8).numpy()
    ro.setflags(write=False)
    meter.update(ro, target[2].to(torch.uint8).numpy())                  # read-only numpy
    meter.update(pred[3].T, target[3].T)                                 # non-contiguous
    assert torch.equal(meter.matrix, whole)

    # merge: two half meters give the whole; reset empties
    a, b = ConfusionMatrix(6), ConfusionMatrix(6)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    assert torch.equal(a.merge(b).matrix, whole)
    a.reset()
    assert int(a.matrix.sum()) == 0
    with pytest.raises(ValueError, match="meters differ"):
        a.merge(ConfusionMatrix(6, ignore_index=None))
    with pytest.raises(ValueError, match="meters differ"):
        a.merge(ConfusionMatrix(5))
    with pytest.raises(TypeError, match="expected a ConfusionMatrix"):
        a.merge(whole)


def test_meter_rejects_bad_input():
    for bad in (0, -2, 2.0, True, "3"):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            ConfusionMatrix(bad)
    assert ConfusionMatrix(np.int32(4)).matrix.shape == (4, 4)
    meter = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="pred holds the value 3"):
        meter.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shapes differ"):
        meter.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    assert int(meter.matrix.sum()) == 0  # a rejected batch adds nothing


def test_table_lists_every_class_and_the_means():
    pred, target = hand_case()
    meter = ConfusionMatrix(4)
    meter.update(pred, target)
    text = meter.compute().table(["road", "sidewalk", "building", "sky"])
    lines = text.splitlines()
    assert len(lines) == 2 + 4 + 2 + 1
    assert lines[2].split()[:2] == ["road", "33.33"]
    assert lines[5].split()[:4] == ["sky", "-", "-", "-"]  # absent: undefined, not 0
    assert lines[7].split()[:2] == ["mean", "33.33"]
    assert "pixel accuracy 60.00 %" in text
    assert "mIoU 33.33 %" in str(meter.compute())
    with pytest.raises(ValueError, match="3 names for 4 classes"):
        meter.compute().table(["a", "b", "c"])


def test_all_reduce_without_distributed_is_a_no_op():
    assert not dist.is_initialized()
    meter = ConfusionMatrix(3)
    meter.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    before = meter.matrix.clone()
    assert torch.equal(meter.all_reduce().matrix, before)


# ---- two real processes on the gloo backend --------------------------------------------------

WORLD = 2
C_DIST = 19


def dist_data():
    g = torch.Generator().manual_seed(1234)
    target = torch.randint(0, C_DIST, (6, 37, 45), generator=g).to(torch.uint8)
    target[torch.rand(target.shape, generator=g) < 0.05] = 255
    pred = torch.randint(0, C_DIST, (6, 37, 45), generator=g).to(torch.uint8)
    return pred, target


def _dist_worker(rank: int, port: int, out_dir: str) -> None:
    # Each rank counts its own share of the images, then all_reduce sums the meters.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=__import__("datetime").timedelta(seconds=60))
    try:
        pred, target = dist_data()
        meter = ConfusionMatrix(C_DIST, ignore_index=255)
        for i in range(rank, pred.shape[0], WORLD):
            meter.update(pred[i], target[i])
        local = meter.matrix.clone()
        meter.all_reduce()
        torch.save({"local": local, "reduced": meter.matrix, "miou": meter.compute().miou},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_reduce_across_two_gloo_processes(tmp_path):
    mp.spawn(_dist_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    pred, target = dist_data()
    single = ConfusionMatrix(C_DIST, ignore_index=255)
    single.update(pred, target)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    # each rank saw only part of the data, and after all_reduce every rank holds the whole
    assert not torch.equal(results[0]["local"], single.matrix)
    assert torch.equal(results[0]["local"] + results[1]["local"], single.matrix)
    for r in results:
        assert torch.equal(r["reduced"], single.matrix)
        assert r["miou"] == single.compute().miou


@pytest.mark.interpreter  # the Triton kernel on CPU tensors: its flags stay "on the device" as on a GPU
def test_meter_on_a_device_kernel_reports_bad_labels_when_the_matrix_is_read():
    good_p, good_t = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 255])
    meter = ConfusionMatrix(3, backend="triton")
    meter.update(good_p, good_t)
    meter.update(torch.tensor([0, 3]), torch.tensor([0, 1]))  # no wait, so no error yet
    with pytest.raises(ValueError, match=r"an update's pred held a value outside \[0, num_classes=3\)"):
        meter.compute()
    with pytest.raises(ValueError, match="pred held"):
        _ = meter.matrix  # still, until reset
    meter.reset()
    meter.update(good_p, good_t)
    meter.update(torch.tensor([1]), torch.tensor([7]))
    with pytest.raises(ValueError, match="target held"):
        meter.merge(ConfusionMatrix(3))
    meter.reset()
    meter.update(good_p, good_t)
    assert meter.matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert "pixels=3" in repr(meter)
