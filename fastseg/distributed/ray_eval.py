"""`fastseg eval ... --ray [ADDRESS]`: the split's images evaluated by a pool of Ray actors, their
confusion matrices summed into exactly the single-process matrix.

Rows are image indices. Each actor (`EvaluateIndices`) opens the dataset and makes the Segmenter as
the single-process command does, and for a batch of indices runs fastseg.evaluation.evaluate, which
gives back that batch's confusion matrices (int64 counts), frame count, stage seconds and the
annotation values outside the classes. A batch's row reaches the driver only when the batch is
finished, so a retried batch (its actor killed, restarted by Ray) is counted once; integer sums do
not depend on the order the batches arrive in, so the sum is the single-process matrix exactly.
The report (table, results.json, pictures) is the single-process command's.
"""
from __future__ import annotations

import os
import sys
import time
from argparse import Namespace

import numpy as np
from tqdm.auto import tqdm

from ..commands import evaluate as single
from ..commands._ray_options import ray_address
from .ray_cluster import RayMissing, cluster, local_cpus, local_gpus
from .ray_dataset import worker_threads

OUTSIDE_VALUES = 256  # raw annotation values counted when outside the classes (uint8 labels)


class EvaluateIndices:
    """One actor: the dataset, a Segmenter and the CRF; batches of indices in, one row of sums out."""

    def __init__(self, args: Namespace, threads: int, crf_params: dict | None):
        import torch

        from ..crf import DenseCRF
        from ..data import get_dataset

        torch.set_num_threads(threads)
        self.args = args
        self.dataset = get_dataset(args.dataset, args.root, args.split)
        self.seg = single.make_segmenter(args, single.resolve(args.model, args.num_classes), args.device)
        self.crf = None if crf_params is None else DenseCRF(**crf_params)

    def __call__(self, batch: dict) -> dict:
        from ..evaluation import STAGES, evaluate

        result = evaluate(self.seg, self.dataset, [int(i) for i in batch["index"]], crf=self.crf,
                          batch_size=self.args.batch_size, progress=False)
        crf = result.crf.matrix if result.crf is not None else result.plain.matrix.new_zeros(0)
        return {"plain": [result.plain.matrix.cpu().numpy().ravel()], "crf": [crf.cpu().numpy().ravel()],
                "frames": [result.frames], "seconds": [np.array([result.seconds[s] for s in STAGES])],
                "outside": [np.array([result.outside_classes.get(v, 0) for v in range(OUTSIDE_VALUES)], np.int64)],
                "runtime": [self.seg.runtime.name], "precision": [self.seg.precision], "worker": [os.getpid()]}


def run(args: Namespace, crf_params: dict | None) -> int:
    """The command's exit status (2: a usage or set-up error, as single-process eval)."""
    import torch

    from ..data import get_dataset
    from ..evaluation import Evaluation
    from ..metrics import ConfusionMatrix

    started = time.perf_counter()
    try:
        dataset = get_dataset(args.dataset, args.root, args.split)
        resolved = single.resolve(args.model, args.num_classes)
        out = args.out or single.Path("runs") / "eval" / f"{dataset.name}_{args.split}"
        out.mkdir(parents=True, exist_ok=True)  # before the long part: a bad --out fails now
        single.make_segmenter(args, resolved, args.device)  # options checked once here, not in every actor
    except (single.UsageError, OSError, KeyError, ValueError, TypeError) as exc:
        return single._fail(exc)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    C = dataset.num_classes
    sums: dict[str, np.ndarray] = {"plain": np.zeros(C * C, np.int64), "crf": np.zeros(C * C, np.int64),
                                   "frames": np.zeros((), np.int64), "seconds": np.zeros(4),
                                   "outside": np.zeros(OUTSIDE_VALUES, np.int64)}
    how: dict = {}
    worker_args = Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("_")})
    try:
        with cluster(ray_address(args.ray), num_cpus=local_cpus(args), num_gpus=local_gpus(args)) as ray, \
                tqdm(total=n, unit="img", desc=f"eval {dataset.name}/{args.split} ({args.workers} Ray workers)",
                     disable=args.no_progress, file=sys.stderr) as bar:
            rows = ray.data.from_items([{"index": i} for i in range(n)]).map_batches(
                EvaluateIndices, batch_size=args.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=args.workers),
                num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker or None,
                fn_constructor_kwargs={"args": worker_args, "crf_params": crf_params,
                                       "threads": worker_threads(args.cpus_per_worker, args.threads)})
            for row in rows.iter_rows():
                for key in ("plain", "crf", "frames", "seconds", "outside"):
                    if key != "crf" or crf_params is not None:
                        sums[key] = sums[key] + row[key]
                how.update(runtime=row["runtime"], precision=row["precision"])
                bar.update(int(row["frames"]))
    except RayMissing as exc:
        return single._fail(exc)
    except Exception as exc:  # the cluster, or an actor that cannot start (a bad --model, --runtime)
        print(f"fastseg eval: error: Ray: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if sums["frames"] != n:
        print(f"fastseg eval: error: {sums['frames']} of {n} images came back from the workers", file=sys.stderr)
        return 1
    result = Evaluation(ConfusionMatrix(C, dataset.ignore_index),
                        None if crf_params is None else ConfusionMatrix(C, dataset.ignore_index))
    result.plain.matrix = torch.from_numpy(sums["plain"].reshape(C, C))
    if result.crf is not None:
        result.crf.matrix = torch.from_numpy(sums["crf"].reshape(C, C))
    totals = torch.tensor([float(sums["frames"]), *sums["seconds"].tolist()], dtype=torch.float64)
    how = {"processes": args.workers, "threads_per_process": worker_threads(args.cpus_per_worker, args.threads),
           "device": args.device, **how, "ray_workers": args.workers}
    return single.write_report(args, dataset, resolved.source, out, result, totals, torch.from_numpy(sums["outside"]),
                               how, started)
