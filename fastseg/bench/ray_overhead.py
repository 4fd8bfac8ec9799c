"""What Ray adds to `fastseg predict`: the per-image overhead of a Ray Data actor pool over the same
Segmenter in one process, and the start-up of a local Ray instance (`ray_predict` case).

The frames are CamVid val frames, decoded once. The single process runs `Segmenter.predict` on each;
Ray runs them through `fastseg.distributed.predict_dataset` with one worker holding all the cores
the process has (the same torch threads), one frame per batch. Both per-image times are taken
between the first and the last labels (arriving at the driver, for Ray), so that the actor's start
(a Python process, torch, the model) is not spread over the frames; that start is reported on its
own, with ray.init's. Rounds alternate between the two (medians). Scaling over workers needs more cores than
the 2 this is measured on, so it is not claimed here.

    python -m fastseg bench --only ray_predict --camvid ../shared/data/camvid
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .measure import Agreement, Figure, Row

FRAMES = {True: 8, False: 32}
ROUNDS = {True: 1, False: 5}


def _frames(camvid: Path, n: int) -> list[np.ndarray]:
    from ..data import CamVid

    val = CamVid(camvid, "val")
    return [np.asarray(val[i][0]) for i in range(n)]


def _ray_round(ray, frames: list[np.ndarray], threads: int) -> tuple[float, float, list[np.ndarray]]:
    """(seconds to the first labels, seconds per image after it, the labels in frame order)."""
    from ..distributed import predict_dataset

    rows = ray.data.from_items([{"image": f, "index": i} for i, f in enumerate(frames)])
    started = time.perf_counter()
    arrivals, labels = [], {}
    for row in predict_dataset(rows, workers=1, cpus_per_worker=threads, threads=threads).iter_rows():
        arrivals.append(time.perf_counter())
        labels[int(row["index"])] = row["labels"]
    per_image = (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1)
    return arrivals[0] - started, per_image, [labels[i] for i in range(len(frames))]


def _single_round(seg, frames: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """(seconds per image between the first and the last labels, as a Ray round counts them; the labels)."""
    arrivals, labels = [], []
    for f in frames:
        labels.append(seg.predict(f).labels)
        arrivals.append(time.perf_counter())
    return (arrivals[-1] - arrivals[0]) / max(1, len(arrivals) - 1), labels


def ray_predict(quick: bool, camvid: Path) -> list[Row | Figure]:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        return []  # the case needs the ray extra (the test extra has it)
    import torch

    from .. import Segmenter
    from ..distributed.ray_cluster import quiet

    threads = torch.get_num_threads()
    frames = _frames(camvid, FRAMES[quick])
    seg = Segmenter()
    seg.predict(frames[0])  # its first-call costs out of the timing, as the actor's are
    if ray.is_initialized():
        raise RuntimeError("ray_predict measures a local instance's start-up: run it without Ray initialised")
    t0 = time.perf_counter()
    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False, logging_level="warning")
    init_seconds = time.perf_counter() - t0
    quiet(ray)
    single, ours, first, equal = [], [], [], True
    try:
        for _ in range(ROUNDS[quick]):
            per_image, reference = _single_round(seg, frames)
            single.append(per_image)
            to_first, per_image, labels = _ray_round(ray, frames, threads)
            first.append(to_first)
            ours.append(per_image)
            equal = equal and all(np.array_equal(a, b) for a, b in zip(labels, reference))
    finally:
        ray.shutdown()
    ours_ms, ref_ms = 1e3 * statistics.median(ours), 1e3 * statistics.median(single)
    shape = f"{len(frames)} CamVid val frames, 480x360, {threads} threads"
    row = Row("Ray Data predict, per image", shape, "predict_dataset (1 actor)",
              "one process, Segmenter.predict", ours_ms, ref_ms, len(ours),
              Agreement.exact(equal).requiring(True, "labels of every frame"))
    overhead = ours_ms - ref_ms
    figure = Figure(
        "Ray Data predict, start-up and overhead", shape,
        f"a local Ray instance starts in {init_seconds:.1f} s (ray.init) and a pool's first labels arrive "
        f"{statistics.median(first):.1f} s after the dataset starts (an actor process, torch, the model); then "
        f"{overhead:+.1f} ms per image ({100 * overhead / ref_ms:+.0f} %) over one process",
        equal, {"init_s": init_seconds, "first_labels_s": statistics.median(first), "overhead_ms": overhead,
                "ray_ms": ours_ms, "single_ms": ref_ms})
    return [row, figure]
