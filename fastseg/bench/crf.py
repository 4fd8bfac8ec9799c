"""Cases of the dense CRF against pydensecrf2 (pydensecrf's algorithm, which fastseg's CRF follows).

Inputs are CamVid val frames with noisy softmax probabilities made from their ground truth when a
CamVid folder is given (`camvid`), else smooth synthetic images whose labels follow their colours;
the row's shape says which."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .measure import Agreement, Figure, Reference, Row, measure, smooth_image

FRAME = "0016E5_07959.png"
NUM_CLASSES = 11


def _pydensecrf() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        print("bench: pydensecrf2 is not installed (pip install pydensecrf2): no dense CRF rows", file=sys.stderr)
        return False
    return True


def _frame(camvid: Path | None, index: int, quick: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """(image uint8 [H,W,3], labels [H,W], where from): CamVid val frame `index` (or FRAME for index
    0), in quick mode a 160x120 crop; without CamVid, a synthetic 480x360 (quick: 240x180) image."""
    if camvid is None:
        h, w = (180, 240) if quick else (360, 480)
        image = smooth_image(h, w, seed=1 + index)
        labels = (image.astype(np.int64).sum(-1) * NUM_CLASSES // (3 * 256)).clip(0, NUM_CLASSES - 1)
        return image, labels, "synthetic"
    from PIL import Image

    names = [FRAME] if index == 0 else sorted(p.name for p in (camvid / "val").glob("*.png"))[::12]
    name = names[index % len(names)]
    image = np.array(Image.open(camvid / "val" / name).convert("RGB"))
    labels = np.array(Image.open(camvid / "valannot" / name))
    if quick:
        image, labels = (np.ascontiguousarray(a[100:220, 150:310]) for a in (image, labels))
    return image, labels, "CamVid val"


def noisy_softmax(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Probabilities [C,H,W] float32 that favour `labels` (label NUM_CLASSES and above: class 0)
    under strong noise, like an uncertain network's output."""
    rng = np.random.default_rng(seed)
    lab = np.where(labels < NUM_CLASSES, labels, 0)
    logits = 2.0 * np.eye(NUM_CLASSES, dtype=np.float32)[lab].transpose(2, 0, 1)
    logits += rng.normal(0, 1.5, logits.shape).astype(np.float32)
    return torch.softmax(torch.from_numpy(logits), 0).numpy()


def crf(quick: bool, camvid: Path | None = None) -> list[Row]:
    """One frame, 5 iterations, pydensecrf's usual parameters, fastseg on torch's threads."""
    if not _pydensecrf():
        return []
    from ..crf import DenseCRF

    image, labels, source = _frame(camvid, 0, quick)
    probs = noisy_softmax(labels)
    model = DenseCRF()
    q, q_ref = model(image, probs), model.reference(image, probs)
    dq = float(np.abs(q - q_ref).mean())
    agreement = Agreement.labels(q.argmax(0), q_ref.argmax(0), 0.995).requiring(dq <= 1e-3, f"mean abs. dQ {dq:.1e}")
    h, w = labels.shape
    return measure("dense CRF (5 iterations)", f"{w}x{h} {source}, {NUM_CLASSES} labels",
                   {f"fastseg ({torch.get_num_threads()} threads)": lambda: model(image, probs)},
                   {"pydensecrf2": Reference(lambda: model.reference(image, probs), agreement, 5)},
                   rounds=3 if quick else 11)


def crf_batch(quick: bool, camvid: Path | None = None) -> list[Row]:
    """A batch of 8 frames in one call on 2 threads against 1 (images run in parallel, one per
    thread): the ratio is the scaling, the results must be identical."""
    from ..crf import DenseCRF

    frames = [_frame(camvid, i + 1, quick) for i in range(8)]
    images = np.stack([f[0] for f in frames])
    probs = np.stack([noisy_softmax(f[1], seed=i) for i, f in enumerate(frames)])
    model = DenseCRF()
    before = torch.get_num_threads()

    def on(threads: int):
        def run():
            torch.set_num_threads(threads)
            try:
                return model(images, probs)
            finally:
                torch.set_num_threads(before)
        return run

    h, w = frames[0][1].shape
    return measure("dense CRF, batch of 8", f"8x{w}x{h} {frames[0][2]}, {NUM_CLASSES} labels",
                   {"fastseg, 2 threads": on(2)},
                   {"fastseg, 1 thread": Reference(on(1), Agreement.exact(np.array_equal(on(1)(), on(2)())), 1.6)},
                   rounds=2 if quick else 5)


def crf_memory(quick: bool, camvid: Path | None = None) -> list[Figure]:
    """Growth of the peak resident set during one full-size call, fastseg against pydensecrf2 (a
    fresh process each, same imports and inputs, the smaller of two runs); fastseg must stay within
    its own worst-case bound. The same in both modes: one call each."""
    if not _pydensecrf():
        return []
    from ..crf import DenseCRF
    from .memory import peak_growth

    image = None if camvid is None else camvid / "val" / FRAME
    ours = min(peak_growth("crf", "fastseg", image) for _ in range(2)) / 2**20
    ref = min(peak_growth("crf", "pydensecrf", image) for _ in range(2)) / 2**20
    bound = DenseCRF().memory_bound(360, 480, NUM_CLASSES) / 2**20
    text = f"peak memory {ours:.1f} MiB vs pydensecrf2 {ref:.1f} MiB (fastseg's bound {bound:.1f} MiB)"
    return [Figure("dense CRF peak memory", f"480x360 {'synthetic' if camvid is None else 'CamVid val'}", text,
                   ours <= bound, {"fastseg_mib": ours, "pydensecrf2_mib": ref, "bound_mib": bound})]


def crf_camvid(quick: bool, camvid: Path) -> list[Figure]:
    """The CRF raises the mIoU of a coarse (1/8 resolution) prediction over CamVid val. The claim is
    about the whole split; quick mode's 6 frames are consecutive frames of one street and only show
    the figures."""
    from .crf_camvid import evaluate, report

    result = evaluate(camvid, limit=6 if quick else None, factor=8)
    print("\n" + report(result, 8), file=sys.stderr)
    gain = 100 * (result["miou_crf"] - result["miou_coarse"])
    text = (f"mIoU {100 * result['miou_coarse']:.2f} -> {100 * result['miou_crf']:.2f} % ({gain:+.2f} points) "
            f"over {result['frames']} frames")
    return [Figure("dense CRF on 1/8-resolution predictions", "CamVid val, 480x360", text, quick or gain > 0,
                   {"frames": result["frames"], "miou_coarse": result["miou_coarse"], "miou_crf": result["miou_crf"]})]
