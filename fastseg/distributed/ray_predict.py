"""`fastseg predict ... --ray [ADDRESS]`: the same inputs, options and outputs as the single-process
command (fastseg/commands/predict.py), the images segmented by a pool of Ray actors.

The driver (this process) lists the inputs and leaves out those whose outputs all exist (a re-run
starts no Ray at all when everything is done), validates the model and options once, then streams
one row per image (its path and output key) through Ray Data to `--workers` actors
(`PredictFiles`), each holding one Segmenter. An actor reads its images itself (no image bytes go
through Ray's object store), segments them and writes every output the way the single-process
command does (atomically: a temporary file and os.replace; on an object store, each object once,
whole), and gives back one row per image: its error or "", and its pid. A killed actor is restarted
by Ray and its unfinished batches are retried (Ray Data's actor pools: max_restarts=-1,
max_task_retries=-1); an image written twice is written atomically both times, so nothing is lost
or half-written.
"""
from __future__ import annotations

import os
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
from tqdm.auto import tqdm

from .._atomic import remove_stale_temporaries
from ..commands import _inputs
from ..commands import predict as single
from ..commands._ray_options import ray_address
from . import ray_files
from .ray_cluster import RayMissing, cluster, import_ray, local_cpus, local_gpus
from .ray_dataset import worker_threads


class PredictFiles:
    """One actor: a Segmenter made as the single-process command makes it, and batches of
    (path, key) rows in, (path, key, error, worker) rows out."""

    def __init__(self, args: Namespace, threads: int):
        import torch

        torch.set_num_threads(threads)
        made = single._segmenter(args)
        if made is None:
            raise RuntimeError("the Segmenter could not be made (see the error above)")
        self.chosen, self.seg = made
        self.args = args

    def __call__(self, batch: dict) -> dict:
        # a URL stays a string (see ray_files.list_images)
        sources = [_inputs.Source(cast(Path, _path(p)), str(k)) for p, k in zip(batch["path"], batch["key"])]
        if ray_files.is_url(self.args.out) or any(ray_files.is_url(s.path) for s in sources):
            errors = [ray_files.segment_to_urls(s, self.seg, self.chosen.palette, self.args) for s in sources]
        else:
            errors = single._segment_batch(sources, self.seg, self.chosen.palette, self.args)
        return {"path": batch["path"], "key": batch["key"], "error": np.array([e or "" for e in errors], dtype=object),
                "worker": np.full(len(sources), os.getpid(), dtype=np.int64)}


def _path(text) -> Path | str:
    return str(text) if ray_files.is_url(text) else Path(str(text))


def run(args: Namespace, on_result: Callable[[dict], None] | None = None) -> int:
    """The command's exit status. on_result(row) is called as each image comes back (its path, key,
    error and the pid of the worker that did it)."""
    try:
        import_ray()
    except RayMissing as exc:
        print(f"fastseg predict: {exc}", file=sys.stderr)
        return 2
    planned = _plan(args)
    if isinstance(planned, int):
        return planned
    found, todo, done_before = planned
    made = single._segmenter(args)  # every option checked here, once, before any actor starts
    if made is None:
        return 2
    del made
    worker_args = Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("_")})
    threads = worker_threads(args.cpus_per_worker, args.threads)
    rows = [{"path": str(s.path), "key": s.key} for s in todo]
    failed: list[tuple[str, str]] = []
    finished = 0
    started = time.perf_counter()
    try:
        with cluster(ray_address(args.ray), num_cpus=local_cpus(args), num_gpus=local_gpus(args)) as ray, \
                tqdm(total=len(todo), unit="image", desc=f"predict ({args.workers} Ray workers)",
                     file=sys.stderr) as bar:
            labelled = ray.data.from_items(rows).map_batches(
                PredictFiles, batch_size=args.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=args.workers),
                num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker or None,
                fn_constructor_kwargs={"args": worker_args, "threads": threads})
            for row in labelled.iter_rows():
                if row["error"]:
                    failed.append((row["path"], row["error"]))
                    bar.write(f"failed: {row['path']}: {row['error']}", file=sys.stderr)
                else:
                    finished += 1
                bar.update()
                if on_result is not None:
                    on_result(row)
    except KeyboardInterrupt:
        single._summary(finished, done_before, failed, found.missing, time.perf_counter() - started)
        print("interrupted: run the same command again to finish (finished images are skipped)", file=sys.stderr)
        return 130
    except Exception as exc:  # the cluster, or an actor that cannot start
        print(f"fastseg predict: Ray: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not ray_files.is_url(args.out):  # what killed workers left; every writer of this run has ended
        remove_stale_temporaries(args.out)
    single._summary(finished, done_before, failed, found.missing, time.perf_counter() - started)
    lost = len(todo) - finished - len(failed)
    if lost:
        print(f"fastseg predict: {lost} image(s) came back from no worker", file=sys.stderr)
    return 1 if failed or found.missing or lost else 0


def _plan(args):
    """As the single-process command plans (predict.plan), with URLs listed and checked through pyarrow."""
    urls = [ray_files.is_url(a) for a in args.inputs]
    if any(urls) and not all(urls):
        print("fastseg predict: INPUTs are either all URLs or all local (file:///path is a local folder's URL)",
              file=sys.stderr)
        return 2
    find = (lambda: ray_files.list_images(list(args.inputs), args.recursive)) if any(urls) else None
    finished = None
    if ray_files.is_url(args.out):
        find = find or (lambda: _inputs.find_inputs(args.inputs, args.recursive))
        def finished(sources):
            return ray_files.outputs_done(str(args.out), [s.key for s in sources], args.save)
    return single.plan(args, find, finished)
