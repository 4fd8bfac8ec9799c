"""Segmentation losses that honour ignore_index, and class weights from label statistics.

All losses take logits [N, C, H, W] (any float dtype; computed in float32) and integer targets
[N, H, W]. They average over the pixels that count (weighted by class weight where given, as
``F.cross_entropy`` does) and return 0, not nan, when every pixel is ignored.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255


def _check(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    if logits.dim() < 2:
        raise ValueError(f"logits must be [N, C, ...], got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits "
                         f"{tuple(logits.shape)} (expected {tuple(logits.shape[:1] + logits.shape[2:])})")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor, got {target.dtype}")
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have shape ({logits.shape[1]},), got {tuple(weight.shape)}")


def _weighted_mean(per_pixel: torch.Tensor, pixel_weight: torch.Tensor) -> torch.Tensor:
    """sum(w * l) / sum(w); 0 (with zero, finite gradients) when nothing counts."""
    total = pixel_weight.sum()
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return (per_pixel * pixel_weight).sum() / safe


def _pixel_terms(logits, target, weight, ignore_index):
    """Per-pixel -log p_target, the per-pixel weight (0 where ignored), and log p_target."""
    logits = logits.float()
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target)).long()
    n_classes = logits.shape[1]
    if bool(((safe_target < 0) | (safe_target >= n_classes)).any()):
        bad = target[valid & ((target < 0) | (target >= n_classes))][0].item()
        raise ValueError(f"target holds {bad}, outside [0, {n_classes}) and not ignore_index={ignore_index}")
    log_p = F.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    pixel_weight = valid.float()
    if weight is not None:
        pixel_weight = pixel_weight * weight.float().to(logits.device)[safe_target]
    return -log_p, pixel_weight, log_p


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Weighted-mean cross-entropy; equals F.cross_entropy(reduction="mean") except 0 when all ignored."""
    _check(logits, target, weight)
    nll, pixel_weight, _ = _pixel_terms(logits, target, weight, ignore_index)
    return _weighted_mean(nll, pixel_weight)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -(1 - p_t)^gamma log p_t, weighted mean; gamma=0 is cross-entropy."""
    _check(logits, target, weight)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    nll, pixel_weight, log_p = _pixel_terms(logits, target, weight, ignore_index)
    modulation = (1.0 - log_p.exp()).clamp_min(0.0) ** gamma
    return _weighted_mean(modulation * nll, pixel_weight)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7,
                       min_kept: int = 100_000, weight: torch.Tensor | None = None,
                       ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Online hard example mining cross-entropy (as in PSPNet / HRNet training).

    Keeps the pixels whose probability of the true class is at most max(thresh, p_k), where p_k is
    the min_kept-th smallest such probability in the batch, so at least min_kept pixels (or all
    valid ones) count. The selection is not differentiated through. thresh >= 1 keeps every pixel.
    """
    _check(logits, target, weight)
    if min_kept < 0:
        raise ValueError(f"min_kept must be >= 0, got {min_kept}")
    nll, pixel_weight, log_p = _pixel_terms(logits, target, weight, ignore_index)
    with torch.no_grad():
        valid = target != ignore_index
        p_true = log_p.detach().exp()
        n_valid = int(valid.sum())
        threshold = torch.tensor(float(thresh), device=p_true.device)
        if n_valid > 0 and min_kept > 0:
            k = min(min_kept, n_valid)
            kth = p_true[valid].kthvalue(k).values
            threshold = torch.maximum(threshold, kth)
        keep = valid & (p_true <= threshold)
    return _weighted_mean(nll, pixel_weight * keep.float())


def distillation_kl(logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
                    temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015), per pixel: KL(teacher || student) of the class
    distributions softened by `temperature`, times temperature**2 (so its gradients keep their scale
    as the temperature changes), averaged over the pixels whose target is not ignore_index (crop
    padding and unlabelled pixels say nothing the teacher could be trusted on). The teacher is not
    differentiated through."""
    _check(logits, target, None)
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the student's "
                         f"{tuple(logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    per_pixel = (log_teacher.exp() * (log_teacher - log_student)).sum(1)
    return _weighted_mean(per_pixel, (target != ignore_index).float()) * temperature ** 2


class CrossEntropyLoss(nn.Module):
    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        return cross_entropy(logits, target, self.weight, self.ignore_index)


class FocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        return focal_loss(logits, target, self.gamma, self.weight, self.ignore_index)


class OhemCrossEntropy(nn.Module):
    def __init__(self, thresh: float = 0.7, min_kept: int = 100_000, weight: torch.Tensor | None = None,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.thresh, self.min_kept = thresh, min_kept
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        return ohem_cross_entropy(logits, target, self.thresh, self.min_kept, self.weight, self.ignore_index)


class DistillationLoss(nn.Module):
    """(1 - alpha) * base(logits, target) + alpha * distillation_kl(logits, teacher_logits, target, T):
    the labels, and a larger model's view of every labelled pixel (which classes it finds close)."""

    def __init__(self, base: nn.Module, alpha: float = 0.5, temperature: float = 1.0,
                 ignore_index: int = IGNORE_INDEX):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.base, self.alpha, self.temperature, self.ignore_index = base, alpha, temperature, ignore_index

    def forward(self, logits, target, teacher_logits):
        kd = distillation_kl(logits, teacher_logits, target, self.temperature, self.ignore_index)
        return (1.0 - self.alpha) * self.base(logits, target) + self.alpha * kd


class SoftmaxAverage(nn.Module):
    """Several trained models as one teacher: the log of their mean class probabilities, which are
    logits whose softmax is that mean. An ensemble of runs that differ only in their seed is more
    accurate than each of them, and a student distilled from it can keep part of that (Hinton et
    al. 2015). Every model must give logits of one shape (or a dict with "out")."""

    def __init__(self, models: Iterable[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)
        if not len(self.models):
            raise ValueError("SoftmaxAverage needs at least one model")

    def forward(self, images):
        outs = [m(images) for m in self.models]
        probs = [(o["out"] if isinstance(o, dict) else o).float().softmax(1) for o in outs]
        shapes = {tuple(p.shape) for p in probs}
        if len(shapes) != 1:
            raise ValueError(f"the models' logits differ in shape: {sorted(shapes)}")
        # clamp: a probability that underflows to 0 would give -inf logits, and NaN in the KL
        return torch.stack(probs).mean(0).clamp_min(torch.finfo(torch.float32).tiny).log()


# ---- class weights from label statistics -------------------------------------------------------

def label_statistics(labels: Iterable, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """Per class: pixel count, and total pixels of the images in which the class appears.

    labels: an iterable of integer label maps (numpy or torch), or a dataset with ``read_label``
    (e.g. a fastseg.data reader, read without its transform). Values other than 0..C-1 and
    ignore_index raise ValueError. Returns two int64 numpy arrays of length num_classes.
    """
    if hasattr(labels, "read_label") and hasattr(labels, "__len__"):
        dataset: Any = labels
        labels = (dataset.read_label(i) for i in range(len(dataset)))
    counts = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    for label in labels:
        label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        flat = label.ravel().astype(np.int64)
        flat = flat[flat != ignore_index]
        if flat.size and (flat.min() < 0 or flat.max() >= num_classes):
            raise ValueError(f"label value {flat.max() if flat.max() >= num_classes else flat.min()} "
                             f"outside [0, {num_classes}) and not ignore_index={ignore_index}")
        hist = np.bincount(flat, minlength=num_classes)
        counts += hist
        image_pixels[hist > 0] += label.size  # the whole image, ignored pixels included (as SegNet)
    return counts, image_pixels


def median_frequency_weights(counts, image_pixels=None) -> torch.Tensor:
    """Median frequency balancing (Eigen & Fergus 2015, as used by SegNet and ENet).

    freq(c) = pixels of class c / total pixels of the images where c appears (or, without
    image_pixels, / all labelled pixels); weight(c) = median(freq) / freq(c). A class that never
    appears gets weight 0. Returns a float32 tensor to pass as ``weight=``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    denominator = counts.sum() if image_pixels is None else np.asarray(image_pixels, dtype=np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("no class has any pixel: cannot compute median-frequency weights")
    freq = np.zeros_like(counts)
    np.divide(counts, denominator, out=freq, where=present)
    weights = np.zeros_like(counts)
    weights[present] = np.median(freq[present]) / freq[present]
    return torch.tensor(weights, dtype=torch.float32)
