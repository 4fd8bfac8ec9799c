"""`predict_dataset`: a Ray Dataset of images in, the same rows with their labels out.

    import ray, fastseg.distributed
    images = ray.data.read_images("s3://bucket/frames/", include_paths=True)   # column "image"
    labelled = fastseg.distributed.predict_dataset(images, workers=4, cpus_per_worker=2)
    labelled.write_parquet("s3://bucket/labels/")

The rows go through Ray Data's streaming executor to a fixed pool of `workers` actors, each holding
one Segmenter made once in its constructor (the model is loaded once per actor, not per batch). Ray
Data restarts an actor whose process dies and retries the batches it held (actor pools run with
max_restarts=-1 and max_task_retries=-1 unless told otherwise), so a killed worker costs time, not rows.
"""
from __future__ import annotations

import os

import numpy as np


def worker_threads(cpus_per_worker: float, threads: int | None = None) -> int:
    """torch threads in one actor: `threads` when given, else the CPUs Ray reserved for it."""
    return max(1, int(threads if threads else cpus_per_worker))


class SegmentBatch:
    """One actor of the pool: a Segmenter, and batches of images in, labels out."""

    def __init__(self, model, threads: int, image_column: str, labels_column: str, options: dict):
        import torch

        from ..segmenter import Segmenter

        torch.set_num_threads(threads)
        self.seg = Segmenter(model, **options)
        self.image_column, self.labels_column = image_column, labels_column

    def __call__(self, batch: dict) -> dict:
        images = [np.asarray(image) for image in batch[self.image_column]]
        labels = self.seg.predict(images).labels if images else []
        out = dict(batch)
        if labels and all(a.shape == labels[0].shape for a in labels):
            out[self.labels_column] = np.stack(labels)
        else:  # images of several sizes: one array per row
            column = np.empty(len(labels), dtype=object)
            column[:] = labels
            out[self.labels_column] = column
        out["worker"] = np.full(len(images), os.getpid(), dtype=np.int64)
        return out


def predict_dataset(dataset, model=None, *, workers: int = 1, cpus_per_worker: float = 1,
                    gpus_per_worker: float = 0, batch_size: int = 1, threads: int | None = None,
                    image_column: str = "image", labels_column: str = "labels", **segmenter_options):
    """The rows of `dataset` (a ray.data.Dataset whose `image_column` holds uint8 HWC RGB images, as
    ray.data.read_images gives them) with a `labels_column` added (uint8 [H,W] class ids at each
    image's own size) and a `worker` column (the pid of the actor that segmented the row). Lazy, like
    every Ray Dataset: nothing runs until the result is consumed or written.

    model: what fastseg.Segmenter takes (None: the packaged default model; a registered name, a
    saved file, a model object); segmenter_options: its keyword arguments (device, precision,
    runtime, scale, size, tta, crf, ...). workers: the actors in the pool, each reserving
    cpus_per_worker CPUs and gpus_per_worker GPUs (set device="cuda" with GPUs); batch_size: rows per
    call of one actor; threads: torch threads per actor (default: its CPUs).
    """
    from .ray_cluster import import_ray

    ray = import_ray()
    if workers < 1 or batch_size < 1:
        raise ValueError(f"workers and batch_size must be >= 1, got {workers} and {batch_size}")
    return dataset.map_batches(
        SegmentBatch, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs={"model": model, "threads": worker_threads(cpus_per_worker, threads),
                               "image_column": image_column, "labels_column": labels_column,
                               "options": segmenter_options})
