"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

    meter = ConfusionMatrix(num_classes=19, ignore_index=255)
    for pred, target in batches:
        meter.update(pred, target)      # adds this batch's counts (native / Triton kernels)
    meter.all_reduce()                  # under torch.distributed: every rank now holds the total
    scores = meter.compute()
    print(scores.table(class_names))    # per-class IoU / accuracy / Dice, then the means

Conventions (the ones Cityscapes, ADE20K and mmsegmentation report):
- Dataset-level accumulation: the counts of every pixel of every image go into one [C, C] matrix
  and the scores are computed once from it. Images are not scored one by one and averaged (that
  would weigh a 10-pixel image like a 2-megapixel one and make absent classes ill-defined).
- Rows are ground truth, columns prediction: matrix[t, p] counts pixels of class t predicted as p.
- Pixels whose target is ignore_index are skipped entirely (neither the target nor the prediction
  counts). Any other label outside [0, num_classes) raises ValueError: from update() on the CPU;
  on a GPU, when the meter's matrix is next read (matrix, compute, merge, all_reduce), since update
  never waits for the GPU (the kernel's two out-of-range flags stay on the device until then).
- A class absent from both ground truth and prediction has no defined score: its IoU and Dice are
  nan and it is left out of the means (miou, mean_dice are nan-means). A class predicted but absent
  from the ground truth scores IoU 0 and Dice 0 (its false positives count against it); its
  accuracy (recall) is nan, since it has no ground-truth pixel, and is left out of mean_acc.
- pixel_acc = correct / counted pixels; fw_iou = sum over classes of (ground-truth share) x IoU.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch

from .ops.confusion_matrix import _arguments, confusion_matrix, count

__all__ = ["confusion_matrix", "ConfusionMatrix", "Scores", "scores_from_matrix"]


@dataclass(frozen=True)
class Scores:
    """Scores of one confusion matrix. Per-class values are float64 tensors [C] (nan: undefined)."""

    matrix: torch.Tensor      # int64 [C, C], rows = ground truth, columns = prediction
    iou: torch.Tensor         # tp / (tp + fp + fn)
    class_acc: torch.Tensor   # tp / (tp + fn), the per-class recall
    dice: torch.Tensor        # 2 tp / (2 tp + fp + fn)
    miou: float
    mean_acc: float
    mean_dice: float
    pixel_acc: float
    fw_iou: float

    def table(self, class_names=None, digits: int = 2) -> str:
        """A printable per-class table (percentages; '-' where undefined) followed by the means."""
        C = self.matrix.shape[0]
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(C)]
        if len(names) != C:
            raise ValueError(f"table: class_names has {len(names)} names for {C} classes")
        gt = self.matrix.sum(1).tolist()
        pr = self.matrix.sum(0).tolist()
        w = max(8, max(len(n) for n in names))

        def pct(v: float) -> str:
            return "-" if v != v else f"{100 * v:.{digits}f}"

        head = f"{'class':<{w}} {'IoU':>7} {'Acc':>7} {'Dice':>7} {'GT pixels':>14} {'pred pixels':>14}"
        lines = [head, "-" * len(head)]
        for i in range(C):
            lines.append(f"{names[i]:<{w}} {pct(float(self.iou[i])):>7} {pct(float(self.class_acc[i])):>7} "
                         f"{pct(float(self.dice[i])):>7} {gt[i]:>14,} {pr[i]:>14,}")
        lines.append("-" * len(head))
        lines.append(f"{'mean':<{w}} {pct(self.miou):>7} {pct(self.mean_acc):>7} {pct(self.mean_dice):>7} "
                     f"{sum(gt):>14,} {sum(pr):>14,}")
        lines.append(f"pixel accuracy {pct(self.pixel_acc)} %, frequency-weighted IoU {pct(self.fw_iou)} %")
        return "\n".join(lines)

    def __str__(self) -> str:
        return (f"mIoU {100 * self.miou:.2f} %, pixel acc {100 * self.pixel_acc:.2f} %, "
                f"mean acc {100 * self.mean_acc:.2f} %, fw IoU {100 * self.fw_iou:.2f} %, "
                f"mean Dice {100 * self.mean_dice:.2f} %")


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, nan where den == 0 (an undefined score, not a zero one)."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


def _nanmean(x: torch.Tensor) -> float:
    return float(x.nanmean()) if bool((~x.isnan()).any()) else float("nan")


def scores_from_matrix(matrix) -> Scores:
    """All the scores of a [C, C] confusion matrix (rows = ground truth), per the module conventions."""
    m = torch.as_tensor(matrix).detach().to("cpu", torch.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix: expected a square [C, C] matrix, got shape {tuple(m.shape)}")
    m64 = m.double()
    tp = m64.diagonal()
    gt = m64.sum(1)   # pixels of each class in the ground truth
    pr = m64.sum(0)   # pixels predicted as each class
    total = m64.sum()
    iou = _ratio(tp, gt + pr - tp)
    class_acc = _ratio(tp, gt)
    dice = _ratio(2 * tp, gt + pr)
    present = gt > 0
    fw_iou = float((gt[present] / total * iou[present]).sum()) if total > 0 else float("nan")
    return Scores(
        matrix=m, iou=iou, class_acc=class_acc, dice=dice,
        miou=_nanmean(iou), mean_acc=_nanmean(class_acc), mean_dice=_nanmean(dice),
        pixel_acc=float(tp.sum() / total) if total > 0 else float("nan"),
        fw_iou=fw_iou,
    )


class ConfusionMatrix:
    """Accumulates a [C, C] int64 confusion matrix over batches; see the module conventions.

    update(pred, target) adds a batch (any shape, any integer dtype, torch / numpy / CuPy; the
    kernel follows the data's device), merge(other) adds another meter, reset() zeroes,
    all_reduce() sums the meters of every torch.distributed rank, compute() gives the Scores.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, backend: str = "auto"):
        try:
            C = -1 if isinstance(num_classes, bool) else operator.index(num_classes)
        except TypeError:
            C = -1
        if C < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = C
        self.ignore_index = None if ignore_index is None else operator.index(ignore_index)
        self.backend = backend
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self._flags: torch.Tensor | None = None  # out-of-range flags of updates not yet checked

    @property
    def matrix(self) -> torch.Tensor:
        """The accumulated [C, C] int64 counts; raises ValueError if an update held an out-of-range label."""
        self._check()
        return self._matrix

    @matrix.setter
    def matrix(self, value: torch.Tensor) -> None:
        self._matrix = value

    def _check(self) -> None:
        """Read the device flags of the updates since the last check (the meter's one wait)."""
        if self._flags is None:
            return
        bad_pred, bad_target = (bool(v) for v in self._flags.tolist())
        if bad_pred or bad_target:
            which = "target" if bad_target else "pred"
            raise ValueError(
                f"confusion_matrix: an update's {which} held a value outside [0, num_classes={self.num_classes}) "
                f"at a counted pixel (ignore_index={self.ignore_index}); those pixels are not in the matrix "
                "(reset() to start again)")
        self._flags = None

    def update(self, pred, target) -> torch.Tensor:
        """Add one batch; returns that batch's own [C, C] matrix (a torch tensor). On a GPU nothing
        waits: an out-of-range label is reported when the matrix is next read."""
        p, t, _, C, ignore = _arguments(pred, target, self.num_classes, self.ignore_index)
        batch, flags = count(p, t, C, ignore, self.backend)  # raises here where it already knows (CPU)
        if batch.device != self._matrix.device:
            if self._flags is None and not bool(self._matrix.any()):  # still empty: follow the data's device
                self._matrix = self._matrix.to(batch.device)
            else:
                batch = batch.to(self._matrix.device)
        self._matrix += batch
        if flags is not None:
            flags = flags.to(self._matrix.device, torch.int64) != 0
            self._flags = flags if self._flags is None else self._flags | flags
        return batch

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another meter's counts (e.g. from another worker); returns self."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"merge: expected a ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"merge: meters differ (num_classes {self.num_classes} vs {other.num_classes}, "
                f"ignore_index {self.ignore_index} vs {other.ignore_index})")
        self.matrix += other.matrix.to(self._matrix.device)
        return self

    def reset(self) -> None:
        self._matrix = torch.zeros_like(self._matrix)
        self._flags = None

    def all_reduce(self, group=None) -> ConfusionMatrix:
        """Sum the counts of every rank (torch.distributed all_reduce, SUM); a no-op when
        torch.distributed is not initialised. A collective: every rank calls it once, after its
        last update; each then holds the dataset-wide matrix. Returns self."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        m = self.matrix
        if dist.get_backend(group) == "nccl" and m.device.type != "cuda":
            m = m.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(m, op=dist.ReduceOp.SUM, group=group)
        self._matrix = m.to(self._matrix.device)
        return self

    def compute(self) -> Scores:
        return scores_from_matrix(self.matrix)

    def __repr__(self) -> str:
        return (f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
                f"pixels={int(self._matrix.sum())})")
