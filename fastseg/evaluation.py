"""A model over a dataset split: the confusion matrix of its predictions, with and without the CRF.

    seg = fastseg.Segmenter("model.safetensors")
    run = evaluate(seg, fastseg.data.get_dataset("camvid", root, "val"), crf=DenseCRF(...))
    run.plain.compute().miou, run.crf.compute().miou

The Segmenter's stages run one after the other (preprocess, model, fused upsample + argmax), exactly
what `Segmenter.predict` does. With a CRF, the same network output is refined as well, as the
Segmenter's CRF stage does it, so both matrices come from one forward pass per image and the
comparison is per class on identical logits.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import ops
from .metrics import ConfusionMatrix
from .segmenter.scale import tail_size

STAGES = ("read", "model", "tail", "crf")


@dataclass
class Evaluation:
    plain: ConfusionMatrix                 # the Segmenter's labels
    crf: ConfusionMatrix | None            # the same logits refined by the CRF (when one is given)
    frames: int = 0
    seconds: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    # {raw label value: pixels} of annotation values outside the dataset's classes, scored as ignore
    # (a dataset that counts them: fastseg.data's readers, `outside_classes`)
    outside_classes: dict = field(default_factory=dict)


def _batches(dataset, indices, batch_size: int):
    """(images uint8 [n,H,W,3], labels uint8 [n,H,W]) of consecutive samples of one size."""
    images, labels = [], []
    for i in indices:
        image, label = dataset[i]
        if images and (len(images) == batch_size or images[0].shape != image.shape):
            yield np.stack(images), np.stack(labels)
            images, labels = [], []
        images.append(image)
        labels.append(label)
    if images:
        yield np.stack(images), np.stack(labels)


def evaluate(seg, dataset, indices=None, crf=None, batch_size: int = 1, progress: bool = True,
             desc: str = "eval") -> Evaluation:
    """Confusion matrices of `seg` on dataset[i] for i in indices (default: all)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    indices = range(len(dataset)) if indices is None else indices
    C = dataset.num_classes
    result = Evaluation(ConfusionMatrix(C, dataset.ignore_index),
                        None if crf is None else ConfusionMatrix(C, dataset.ignore_index))
    bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not progress)
    outside_before = _outside_classes(dataset)
    batches = _batches(dataset, indices, batch_size)
    sync = seg.runtime.sync
    with bar, torch.inference_mode(), seg.runtime.kernel_threads():
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            images, targets = (torch.from_numpy(a) for a in batch)
            t1 = time.perf_counter()
            H, W = images.shape[1:3]
            network = seg.scaling.network_size(H, W)  # as Segmenter.predict: its scale / size
            x = seg.preprocess(images.to(seg.device), hwc=True, size=network)
            logits, padded = seg.logits(x)
            full = tail_size((H, W), network, padded)
            if logits.shape[1] != C:
                raise ValueError(f"the model predicts {logits.shape[1]} classes but {type(dataset).__name__} "
                                 f"has {C} ({', '.join(dataset.classes[:4])}, ...): a model trained on "
                                 "another label set?")
            t2 = sync()
            labels = ops.upsample_argmax(logits, size=full, align_corners=seg.align_corners)[:, :H, :W]
            result.plain.update(labels, targets.to(labels.device))
            t3 = sync()
            if crf is not None:
                z = F.interpolate(logits.float(), size=full, mode="bilinear",
                                  align_corners=seg.align_corners)[:, :, :H, :W]
                _, refined = crf(images.to(z.device), z.contiguous(), logits=True, return_labels=True)
                result.crf.update(refined, targets.to(refined.device))
            t4 = sync()
            for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                result.seconds[stage] += dt
            result.frames += len(images)
            bar.update(len(images))
    after = _outside_classes(dataset)
    result.outside_classes = {v: n - outside_before.get(v, 0) for v, n in after.items()
                              if n > outside_before.get(v, 0)}
    return result


def _outside_classes(dataset) -> dict[int, int]:
    counted = getattr(dataset, "outside_classes", None)
    return counted() if callable(counted) else {}
