"""`fastseg demo`: the default model on real driving frames, as pictures a person can look at.

    fastseg demo [--root ../shared/data/camvid] [--out out/demo] [--frames 6]

Segments a few real CamVid street frames (480x360) that the model did not train on, with the packaged
default model through `fastseg.Segmenter`, scores them against CamVid's labels, runs them again with
the dense CRF stage, and writes
    OUT/segmentation.png    per frame: input | prediction | ground truth | overlay, with a legend
    OUT/crf_boundaries.png  enlarged crops where the CRF changed the most: without | with CRF | truth
The frames come from CamVid on disk when it is there (--root, or ../shared/data/camvid), else from
the few frames the package ships, so the demo runs offline on a fresh machine. Frames the model
trained on (its card says which) are never shown as unseen: they are left out and counted.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from . import _demo_frames as demo_frames
from . import _demo_pictures as pictures
from ._model import add_model_arguments, choose_model

CAMVID = Path("shared") / "data" / "camvid"
BOUNDARY_RADIUS = 3  # pixels: the band around true boundaries where boundary accuracy is measured


def add_arguments(parser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="CamVid folder with train/ and val/ (default: ../shared/data/camvid, looked for "
                             "from the current folder and from the fastseg checkout; without it, the frames "
                             "the package ships)")
    parser.add_argument("--out", type=Path, default=Path("out") / "demo",
                        help="where the pictures go (default: out/demo)")
    parser.add_argument("--frames", type=int, default=6,
                        help="how many frames, spread over the streets (default: 6)")
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

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames < 1:
        print("fastseg demo: --frames must be at least 1", file=sys.stderr)
        return 2
    root = find_camvid(args.root)
    if root is None and args.root is not None:
        print(f"fastseg demo: CamVid not found at {args.root}; pass --root /path/to/camvid (the folder "
              f"holding train/, val/ and their annot/ folders), or leave --root out to use the frames "
              f"the package ships.", file=sys.stderr)
        return 1
    try:
        chosen = choose_model(args.model, args.num_classes, args.dataset or "camvid")
        source = demo_frames.camvid_frames(root) if root is not None else demo_frames.packaged_frames()
    except (ValueError, FileNotFoundError) as exc:
        print(f"fastseg demo: {exc}", file=sys.stderr)
        return 1
    if chosen.classes != CamVid.classes:
        print(f"fastseg demo: the demo scores CamVid's 11 classes; {chosen.description} predicts "
              f"{len(chosen.classes)}", file=sys.stderr)
        return 1
    where = root if root is not None else demo_frames.PACKAGED
    pool = demo_frames.split_by_training(source, chosen.card)
    if not pool.unseen:
        print(f"fastseg demo: {chosen.description} trained on every frame under {where}, so none of them "
              f"can show how it does on frames it has not seen; pass --root with other CamVid frames.",
              file=sys.stderr)
        return 1
    picks = demo_frames.pick(pool.unseen, args.frames)
    streets = sorted({f.street for f in picks})
    seen_note = (f"; the model trained on the other {pool.seen} frames there, which are not shown" if pool.seen
                 else "" if pool.known else "; whether this model trained on them is not known (it has no card)")
    unseen_words = "not used in training" if pool.known else "training unknown"
    card = chosen.card or {}
    card_note = f" (model card: {card['summary']})" if "summary" in card else ""
    print(f"input: {len(picks)} CamVid frames ({unseen_words}) from {len(streets)} "
          f"street{'s' if len(streets) > 1 else ''} ({', '.join(streets)}), from {where}{seen_note}")
    print(chosen.summary() + (f"\n      {card_note}" if card_note else ""))

    started = time.perf_counter()
    frames, seconds, crf_seconds = _segment(picks, chosen)
    plain = _score([f.plain for f in frames], frames, len(chosen.classes))
    refined = _score([f.refined for f in frames], frames, len(chosen.classes))
    h, w = frames[0].image.shape[:2]
    ms, crf_ms = 1e3 * float(np.median(seconds)), 1e3 * float(np.median(crf_seconds))
    threads = torch.get_num_threads()

    title = (f"fastseg demo: {len(frames)} CamVid frames ({w}x{h} street video, {unseen_words}) "
             f"from {where}\n"
             f"model: {chosen.description}{card_note}\n"
             f"on these frames: mIoU {100 * plain.miou:.1f} %, pixel accuracy {100 * plain.pixel_acc:.1f} %; "
             f"{ms:.0f} ms per frame (Segmenter, {threads} threads)")
    crf_title = (f"dense CRF stage: crops where it changed the most labels near true boundaries "
                 f"({BOUNDARY_RADIUS} px), edges of each labelling in white\n"
                 f"on the {len(frames)} frames: mIoU {100 * plain.miou:.1f} % without, {100 * refined.miou:.1f} % "
                 f"with the CRF; within {BOUNDARY_RADIUS} px of true boundaries "
                 f"{100 * plain.boundary_acc:.1f} % vs {100 * refined.boundary_acc:.1f} % of pixels right")
    sheet, crf_sheet = args.out / "segmentation.png", args.out / "crf_boundaries.png"
    _save(pictures.segmentation_sheet(frames, chosen.classes, chosen.palette, title), sheet)
    _save(pictures.crf_sheet(frames, chosen.classes, chosen.palette, crf_title, BOUNDARY_RADIUS), crf_sheet)

    print(f"time:  {ms:.0f} ms per {w}x{h} frame (median of {len(seconds)}; Segmenter.predict, {threads} threads); "
          f"the CRF stage adds {crf_ms:.0f} ms{_load_note()}")
    print(f"score: against CamVid's labels of {'these' if len(frames) > 1 else 'this'} "
          f"{len(frames)} frame{'s' if len(frames) > 1 else ''}")
    for name, sc in (("without CRF", plain), ("with CRF", refined)):
        print(f"       {name:<11}: mIoU {100 * sc.miou:.1f} %, pixel accuracy {100 * sc.pixel_acc:.1f} %, "
              f"within {BOUNDARY_RADIUS} px of true boundaries {100 * sc.boundary_acc:.1f} %")
    print(f"pictures (open them):\n  {sheet.resolve()}   input | prediction | ground truth | overlay\n"
          f"  {crf_sheet.resolve()}   boundary crops without / with the CRF")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def _segment(picks, chosen):
    """Each picked frame through the Segmenter without and with the CRF stage; the seconds per frame
    of the first, and the seconds of the CRF stage of the second."""
    from ..segmenter import Segmenter

    seg = Segmenter(chosen.model)
    seg_crf = Segmenter(chosen.model, crf=chosen.make_crf())
    images = [f.read() for f in picks]
    for _ in range(2):  # warm-up: first-call allocations are not a frame's time
        seg.predict(images[0][0])
    frames, seconds, crf_seconds = [], [], []
    for f, (image, truth) in zip(picks, images):
        t0 = time.perf_counter()
        plain = seg.predict(image).labels
        seconds.append(time.perf_counter() - t0)
        result = seg_crf.predict(image)
        crf_seconds.append(result.timings["crf"])
        frames.append(pictures.Frame(f.name, image, truth, plain, result.labels))
    return frames, seconds, crf_seconds


@dataclass
class _Score:
    miou: float
    pixel_acc: float
    boundary_acc: float   # accuracy within BOUNDARY_RADIUS px of a true boundary


def _score(predictions, frames, num_classes: int) -> _Score:
    """Pooled over the frames, like a dataset's confusion matrix (not a mean of per-frame scores)."""
    from ..metrics import ConfusionMatrix

    meter = ConfusionMatrix(num_classes)
    for pred, f in zip(predictions, frames):
        meter.update(pred, f.truth)
    scores = meter.compute()
    bands = np.stack([pictures.boundary_band(f.truth, BOUNDARY_RADIUS) for f in frames])
    boundary = pictures.accuracy(np.stack(predictions), np.stack([f.truth for f in frames]), bands)
    return _Score(scores.miou, scores.pixel_acc, boundary)


def _load_note() -> str:
    """Times on a shared machine depend on what else runs: say how busy it was."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return ""
    return f" (load average {load:.1f} on {os.cpu_count()} cores)"


def _save(picture, path: Path) -> None:
    with atomic_write(path) as f:
        picture.save(f, format="PNG")
