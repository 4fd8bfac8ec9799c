"""`fastseg demo`: the default model on real driving frames, as pictures a person can look at.

    fastseg demo [--root ../shared/data/camvid] [--out out/demo] [--frames 6]

Reads a few CamVid val frames (real 480x360 street video the model never trained on), segments them
with the packaged default model through `fastseg.Segmenter`, scores them against CamVid's labels,
runs them again with the dense CRF stage, and writes
    OUT/segmentation.png    per frame: input | prediction | ground truth | overlay, with a legend
    OUT/crf_boundaries.png  enlarged crops where the CRF changed the most: without | with CRF | truth
Works offline: the model ships with the package and CamVid is read from disk.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from ._model import add_model_arguments, choose_model

HELP = "segment CamVid val frames with the default model and write pictures (prediction, truth, CRF)"
CAMVID = Path("shared") / "data" / "camvid"
BOUNDARY_RADIUS = 3  # pixels: the band around true boundaries where boundary accuracy is measured


def add_arguments(parser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="CamVid folder with val/ and valannot/ (default: ../shared/data/camvid, "
                             "looked for from the current folder and from the fastseg checkout)")
    parser.add_argument("--out", type=Path, default=Path("out") / "demo", help="where the pictures go")
    parser.add_argument("--frames", type=int, default=6, help="how many val frames (spread over the split)")
    add_model_arguments(parser)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")


def find_camvid(root: Path | None) -> Path | None:
    """--root, else ../shared/data/camvid seen from the current folder or from the repository
    (FASTSEG_SHARED overrides ../shared, as in the tests)."""
    if root is not None:
        return root if (root / "val").is_dir() else None
    repo = Path(__file__).resolve().parents[2]
    candidates = [Path(os.environ["FASTSEG_SHARED"]) / "data" / "camvid"] if "FASTSEG_SHARED" in os.environ else []
    candidates += [Path.cwd().parent / CAMVID, repo.parent / CAMVID, Path.cwd() / CAMVID]
    return next((c for c in candidates if (c / "val").is_dir()), None)


def run(args) -> int:
    import torch

    from ..data import CamVid
    from ..metrics import ConfusionMatrix
    from ..segmenter import Segmenter
    from . import _demo_pictures as pictures

    if args.threads:
        torch.set_num_threads(args.threads)
    root = find_camvid(args.root)
    if root is None:
        where = args.root if args.root is not None else "../shared/data/camvid (from here or from the repository)"
        print(f"fastseg demo: CamVid not found at {where}. The demo segments CamVid val frames; pass "
              f"--root /path/to/camvid (the folder holding val/ and valannot/).", file=sys.stderr)
        return 1
    if args.frames < 1:
        print("fastseg demo: --frames must be at least 1", file=sys.stderr)
        return 2
    try:
        val = CamVid(root, "val")
        chosen = choose_model(args.model, args.num_classes, args.dataset or "camvid")
    except (ValueError, FileNotFoundError) as exc:
        print(f"fastseg demo: {exc}", file=sys.stderr)
        return 1
    picks = np.unique(np.linspace(0, len(val) - 1, min(args.frames, len(val))).round().astype(int))
    print(f"input: {len(picks)} of the {len(val)} CamVid val frames (real street video, not used in training), "
          f"from {root / 'val'}")
    print(chosen.summary())
    card = chosen.card or {}
    if "val_miou" in card:
        print(f"       its model card: val mIoU {100 * card['val_miou']:.1f} % over all {len(val)} val frames")

    started = time.perf_counter()
    seg = Segmenter(chosen.model)
    seg_crf = Segmenter(chosen.model, crf=chosen.make_crf())
    seg.predict(val.read_image(int(picks[0])))  # warm-up: first-call allocations are not a frame's time
    frames, seconds, crf_seconds = [], [], []
    for i in picks:
        image, truth = val[int(i)]
        t0 = time.perf_counter()
        plain = seg.predict(image).labels
        seconds.append(time.perf_counter() - t0)
        result = seg_crf.predict(image)
        crf_seconds.append(result.timings["crf"])
        frames.append(pictures.Frame(val.pairs[int(i)][0].stem, image, truth, plain, result.labels))

    plain_cm, crf_cm = ConfusionMatrix(val.num_classes), ConfusionMatrix(val.num_classes)
    for f in frames:
        plain_cm.update(f.plain, f.truth)
        crf_cm.update(f.refined, f.truth)
    plain_s, crf_s = plain_cm.compute(), crf_cm.compute()
    # pooled over the frames (they share one size), like the confusion matrix
    truths = np.stack([f.truth for f in frames])
    bands = np.stack([pictures.boundary_band(f.truth, BOUNDARY_RADIUS) for f in frames])
    edge_plain = pictures.accuracy(np.stack([f.plain for f in frames]), truths, bands)
    edge_crf = pictures.accuracy(np.stack([f.refined for f in frames]), truths, bands)
    h, w = frames[0].image.shape[:2]
    ms = 1e3 * float(np.median(seconds))

    title = (f"fastseg demo: {len(frames)} CamVid val frames ({w}x{h} street video, not seen in training) "
             f"from {root / 'val'}\n"
             f"model: {chosen.description}\n"
             f"on these frames: mIoU {100 * plain_s.miou:.1f} %, pixel accuracy {100 * plain_s.pixel_acc:.1f} %; "
             f"{ms:.0f} ms per frame (Segmenter, {torch.get_num_threads()} threads)")
    crf_title = (f"dense CRF stage: where it changed the most labels in each of {len(frames)} CamVid val frames\n"
                 f"on the {len(frames)} frames: mIoU {100 * plain_s.miou:.1f} % without, {100 * crf_s.miou:.1f} % "
                 f"with the CRF; within {BOUNDARY_RADIUS} px of true boundaries "
                 f"{100 * edge_plain:.1f} % vs {100 * edge_crf:.1f} % of pixels right")
    out = args.out
    sheet = out / "segmentation.png"
    crf_sheet = out / "crf_boundaries.png"
    _save(pictures.segmentation_sheet(frames, chosen.classes, chosen.palette, title), sheet)
    _save(pictures.crf_sheet(frames, chosen.classes, chosen.palette, crf_title), crf_sheet)

    print(f"time:  {ms:.0f} ms per {w}x{h} frame (median of {len(seconds)}; Segmenter.predict, "
          f"{torch.get_num_threads()} threads); the CRF stage adds {1e3 * float(np.median(crf_seconds)):.0f} ms")
    print(f"score: against CamVid's labels of these {len(frames)} frames")
    print(f"       without CRF: mIoU {100 * plain_s.miou:.1f} %, pixel accuracy {100 * plain_s.pixel_acc:.1f} %, "
          f"near boundaries ({BOUNDARY_RADIUS} px) {100 * edge_plain:.1f} %")
    print(f"       with CRF:    mIoU {100 * crf_s.miou:.1f} %, pixel accuracy {100 * crf_s.pixel_acc:.1f} %, "
          f"near boundaries ({BOUNDARY_RADIUS} px) {100 * edge_crf:.1f} %")
    print(f"pictures (open them):\n  {sheet.resolve()}   input | prediction | ground truth | overlay\n"
          f"  {crf_sheet.resolve()}   boundary crops without / with the CRF")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def _save(picture, path: Path) -> None:
    with atomic_write(path) as f:
        picture.save(f, format="PNG", optimize=False)
