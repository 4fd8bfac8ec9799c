"""Does the dense CRF help? Measured on real CamVid val frames (the `crf_camvid` bench case:
`fastseg bench --only crf_camvid --camvid DIR`, the folder holding val/ and valannot/).

A coarse prediction is made from the ground truth itself, the way a low-resolution network output
looks: labels taken at 1/factor resolution, softened (one-hot mixed with a uniform distribution) and
bilinearly upsampled back to 480x360. Its argmax is blocky at every object boundary; the CRF, which
sees the full-resolution image, should move those boundaries onto the image edges. mIoU (11 classes,
label 11 ignored) is computed before and after with fastseg.metrics.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..crf import DenseCRF
from ..data import CamVid
from ..metrics import ConfusionMatrix

NUM_CLASSES = 11


# pydensecrf's usual bilateral term (sxy=80, srgb=13, compat=10) is tuned for peaky network outputs
# and erases thin classes (poles, signs) of this coarse prediction; a local, edge-following term
# helps instead. (Found on every 20th val frame; the figures printed are over the whole split.)
DEMO_CRF = dict(n_iter=5, sxy_gaussian=3, compat_gaussian=1, sxy_bilateral=10, srgb_bilateral=10, compat_bilateral=5)


def coarse_prediction(labels: np.ndarray, factor: int = 8, confidence: float = 0.95) -> np.ndarray:
    """Softened one-hot of the labels at 1/factor resolution, upsampled: probabilities [C,H,W] float32."""
    h, w = labels.shape
    small = np.minimum(labels[factor // 2::factor, factor // 2::factor], NUM_CLASSES).astype(np.int64)
    onehot = np.eye(NUM_CLASSES + 1, dtype=np.float32)[small][..., :NUM_CLASSES]  # ignored -> all zeros
    known = onehot.sum(-1, keepdims=True)
    probs = confidence * onehot + (1 - confidence * known) / NUM_CLASSES
    up = F.interpolate(torch.from_numpy(probs).permute(2, 0, 1)[None], size=(h, w), mode="bilinear",
                       align_corners=False)[0]
    return up.numpy()


def evaluate(root: Path, limit: int | None = None, factor: int = 8, crf: DenseCRF | None = None) -> dict:
    """mIoU of the coarse prediction and of its CRF refinement over `limit` val frames."""
    crf = crf or DenseCRF(**DEMO_CRF)
    val = CamVid(root, "val")
    n = len(val) if limit is None else min(limit, len(val))
    coarse, refined = ConfusionMatrix(NUM_CLASSES), ConfusionMatrix(NUM_CLASSES)
    seconds = 0.0
    for i in range(n):
        image, labels = val[i]
        probs = coarse_prediction(labels, factor)
        t0 = time.perf_counter()
        _, crf_labels = crf(image, probs, return_labels=True)
        seconds += time.perf_counter() - t0
        coarse.update(probs.argmax(0).astype(np.uint8), labels)
        refined.update(crf_labels, labels)
    a, b = coarse.compute(), refined.compute()
    return {
        "frames": n,
        "miou_coarse": a.miou,
        "miou_crf": b.miou,
        "iou_coarse": a.iou.numpy(),
        "iou_crf": b.iou.numpy(),
        "pixel_acc_coarse": a.pixel_acc,
        "pixel_acc_crf": b.pixel_acc,
        "crf_seconds_per_frame": seconds / max(n, 1),
    }


def report(r: dict, factor: int) -> str:
    lines = [f"CamVid val, {r['frames']} frames, coarse = 1/{factor}-resolution labels, softened and upsampled",
             f"  {'class':12s} {'IoU coarse':>10s} {'IoU +CRF':>10s}"]
    for name, a, b in zip(CamVid.classes, r["iou_coarse"], r["iou_crf"]):
        lines.append(f"  {name:12s} {100 * a:10.2f} {100 * b:10.2f}")
    lines.append(f"  {'mIoU':12s} {100 * r['miou_coarse']:10.2f} {100 * r['miou_crf']:10.2f}"
                 f"   ({100 * (r['miou_crf'] - r['miou_coarse']):+.2f} points)")
    lines.append(f"  {'pixel acc.':12s} {100 * r['pixel_acc_coarse']:10.2f} {100 * r['pixel_acc_crf']:10.2f}")
    lines.append(f"  CRF: {DEMO_CRF}")
    lines.append(f"  CRF time: {1e3 * r['crf_seconds_per_frame']:.1f} ms per 480x360 frame "
                 f"({torch.get_num_threads()} threads)")
    return "\n".join(lines)

