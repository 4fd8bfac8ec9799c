"""Figures for people to look at (matplotlib, drawn off-screen): the confusion matrix of an
evaluation and the speed-ups of `fastseg bench`."""
from __future__ import annotations

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("fastseg's figures need matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    from ._atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight")


def confusion_matrix_figure(matrix, class_names, path, title: str = "") -> None:
    """The row-normalised matrix (each ground-truth class sums to 100 %) as a heat map with class
    names, cell values in percent (up to 30 classes), and each class's IoU next to its row. Larger
    label sets get a larger picture with smaller print, so that every name stays readable."""
    plt = _pyplot()
    from matplotlib.colors import ListedColormap

    m = np.asarray(matrix, dtype=np.float64)
    C = m.shape[0]
    names = [str(n) for n in class_names]
    if m.shape != (C, C) or len(names) != C:
        raise ValueError(f"confusion_matrix_figure: a [C, C] matrix and C names expected, got {m.shape} "
                         f"and {len(names)} names")
    gt = m.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = np.where(gt > 0, m / gt, np.nan) * 100   # nan: a class absent from the ground truth
        tp = np.diag(m)
        iou = tp / (m.sum(0) + m.sum(1) - tp) * 100

    cell = 0.55 if C <= 30 else max(0.08, 16 / C)
    side = max(5.0, cell * C + 3.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=110 if C <= 30 else 150)
    cmap = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.02, 1, 256))).with_extremes(bad="#dddddd")
    im = ax.imshow(rows, cmap=cmap, vmin=0, vmax=100, interpolation="nearest")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.12)
    bar.set_label("% of the ground-truth class's pixels")

    ticks = np.arange(C)
    if C <= 256:  # names fit their rows down to ~5 pt (ADE20K's 150, COCO-Stuff's 171 classes)
        font = min(9.0, 0.75 * 72 * cell)
        ax.set_xticks(ticks, names, rotation=60, ha="right", rotation_mode="anchor", fontsize=font)
        ax.set_yticks(ticks, names, fontsize=font)
        # each class's IoU on the right of its row
        right = ax.secondary_yaxis("right")
        right.set_yticks(ticks, ["-" if v != v else f"{v:.1f}" for v in iou], fontsize=font)
        right.set_ylabel("IoU %", fontsize=font + 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    if C <= 30:
        for i in range(C):
            for j in range(C):
                v = rows[i, j]
                if v == v and v >= 0.05:
                    ax.text(j, i, f"{v:.0f}" if v >= 9.5 else f"{v:.1f}", ha="center", va="center",
                            fontsize=7, color="white" if v > 55 else "black")
    ax.set_title(title, fontsize=11)
    _save(fig, path)
    plt.close(fig)


def speedup_figure(labels, ratios, path, title: str = "", ok=None) -> None:
    """Horizontal bars of speed-ups (reference time / fastseg time) on a log axis, 1x marked;
    bars of rows whose results did not agree are drawn hatched in red."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    ratios = np.asarray(ratios, dtype=np.float64)
    n = len(ratios)
    ok = [True] * n if ok is None else list(ok)
    fig, ax = plt.subplots(figsize=(9, 0.45 * n + 1.6), dpi=110)
    y = np.arange(n)[::-1]  # first row on top
    colours = ["#2b7bba" if r >= 1 else "#e08a2b" for r in ratios]
    bars = ax.barh(y, ratios, color=colours, height=0.6)
    for b, good in zip(bars, ok):
        if not good:
            b.set_facecolor("#d62728")
            b.set_edgecolor("black")
            b.set_hatch("//")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(y, labels, fontsize=9)
    hi = max(10.0, ratios.max() * 3) if n else 10.0
    lo = min(0.5, ratios.min() / 2) if n else 0.5
    ax.set_xlim(lo, hi)
    for yi, r, good in zip(y, ratios, ok):
        ax.text(r * 1.08, yi, f"{r:.3g}x" + ("" if good else "  (results differ!)"), va="center", fontsize=9)
    ax.set_xlabel("speed-up over the reference (reference time / fastseg time, log scale; >1 = fastseg faster)")
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)
