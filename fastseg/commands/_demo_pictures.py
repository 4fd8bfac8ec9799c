"""The two pictures of `fastseg demo`: frames with their segmentation, and the CRF at boundaries."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import viz

IGNORE = 255


@dataclass
class Frame:
    name: str
    image: np.ndarray    # uint8 [H,W,3]
    truth: np.ndarray    # uint8 [H,W] train ids, 255 = unlabelled
    plain: np.ndarray    # prediction without the CRF
    refined: np.ndarray  # prediction with the CRF


def accuracy(pred: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of labelled pixels (inside `where`, if given) predicted right."""
    mask = truth != IGNORE
    if where is not None:
        mask &= where
    return float((pred[mask] == truth[mask]).mean()) if mask.any() else float("nan")


def boundary_band(truth: np.ndarray, radius: int = 3) -> np.ndarray:
    """bool [H,W]: pixels within `radius` of a ground-truth class boundary (the band where a
    prediction's boundaries are judged; boundaries with unlabelled areas count too)."""
    edge = torch.from_numpy(viz.boundaries(truth)).float()[None, None]
    band = F.max_pool2d(edge, 2 * radius + 1, stride=1, padding=radius)
    return band[0, 0].numpy() > 0


def segmentation_sheet(frames: list[Frame], classes, palette, title: str) -> Image.Image:
    """One row per frame: input | prediction | ground truth | overlay, a legend below."""
    cells, captions = [], []
    for f in frames:
        cells.append([f.image, viz.colorize(f.plain, palette), viz.colorize(f.truth, palette),
                      viz.overlay(f.image, f.plain, palette, alpha=0.55)])
        captions.append([f.name, f"{100 * accuracy(f.plain, f.truth):.1f} % of pixels right", None, None])
    return viz.grid(cells, column_titles=["input: CamVid val frame", "prediction (fastseg)",
                                          "ground truth (CamVid labels)", "prediction over the input"],
                    captions=captions, title=title,
                    legend=viz.legend_entries(classes, palette, ignored="unlabelled (not scored)"))


def best_crop(frame: Frame, size: int, band: np.ndarray) -> tuple[int, int, int]:
    """(top, left, changed): the size x size window where the CRF changed the most labels near true
    boundaries (inside `band`), i.e. where it moved edges or removed thin objects."""
    changed = (frame.plain != frame.refined) & band
    counts = F.avg_pool2d(torch.from_numpy(changed.astype(np.float32))[None, None], size, stride=4)[0, 0]
    flat = int(counts.argmax())
    top, left = divmod(flat, counts.shape[1])
    return top * 4, left * 4, int(round(float(counts.max()) * size * size))


def _zoomed(image, labels, palette, factor) -> np.ndarray:
    """The labels over the image, enlarged, with the label regions' edges drawn in white."""
    blend = viz.zoom(viz.overlay(image, labels, palette, alpha=0.45), factor)
    return viz.outline(blend, viz.zoom(labels, factor))


def crf_sheet(frames: list[Frame], classes, palette, title: str, band_radius: int, crops: int = 4,
              size: int = 120, factor: int = 3) -> Image.Image:
    """Per frame (the `crops` frames where it did most), the crop where the CRF changed the most labels
    near true boundaries, enlarged: input | without CRF | with CRF | truth, each prediction over the
    input with its edges in white, and its accuracy inside the crop written on it."""
    found = [(best_crop(f, size, boundary_band(f.truth, band_radius)), f) for f in frames]
    chosen = sorted(found, key=lambda t: -t[0][2])[:crops]
    cells, captions = [], []
    for (top, left, changed), f in chosen:
        window = (slice(top, top + size), slice(left, left + size))
        image, truth = f.image[window], f.truth[window]
        where = Image.fromarray(f.image)
        viz.draw_box(where, (left, top, left + size - 1, top + size - 1), width=3)
        where = where.resize((where.width * size * factor // where.height, size * factor), Image.Resampling.BILINEAR)
        row = [where, viz.zoom(image, factor)]
        caption = [f"{f.name}\nCRF changed {changed} px near edges here", None]
        for pred in (f.plain[window], f.refined[window]):
            row.append(_zoomed(image, pred, palette, factor))
            caption.append(f"{100 * accuracy(pred, truth):.1f} % right")
        row.append(_zoomed(image, truth, palette, factor))
        caption.append(None)
        cells.append(row)
        captions.append(caption)
    return viz.grid(cells, column_titles=["where (red box)", f"input, {factor}x", "without CRF",
                                          "with CRF", "ground truth"],
                    captions=captions, title=title,
                    legend=viz.legend_entries(classes, palette, ignored="unlabelled (not scored)"))
