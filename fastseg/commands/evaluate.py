"""`fastseg eval`: a model on a dataset split: per-class table, mIoU, pixel accuracy, confusion matrix.

    fastseg eval --dataset camvid --root ../shared/data/camvid --split val [--model FILE] [--crf]
    torchrun --standalone --nproc_per_node=2 -m fastseg eval ...     # the split sharded over processes

Writes into --out: results.json (scores, per-class IoU / accuracy, the confusion matrices),
table.txt (what is printed) and confusion_matrix.png (+ confusion_matrix_crf.png with --crf; without
matplotlib a warning instead, and the exit status stays 0). Annotation values outside the dataset's
classes and ignore values are scored as ignore, with a warning that counts them.
With --crf the network runs once per image and its output is scored twice, as the Segmenter gives it
and refined by the dense CRF, so the printed comparison is per class on identical logits.
Under torchrun every process takes every world_size-th image, the confusion matrices are summed
(all-reduce: gloo on the CPU, NCCL on GPUs) and rank 0 prints and writes. With --ray [ADDRESS] a
pool of Ray actors evaluates batches of images and their matrices are summed
(fastseg/distributed/ray_eval.py).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from ..models import pretrained
from ._model import UsageError, add_model_source_arguments, resolve
from ._ray_options import add_ray_arguments, ray_misuse
from ._scale import add_scale_arguments, scale_options

# The CRF's defaults for `--crf`: those chosen for the packaged default model (a local,
# edge-following bilateral term; pydensecrf's usual sxy 80, srgb 13, compat 10 is tuned for peaky
# outputs and erases thin classes such as poles and signs).
CRF_DEFAULTS = dict(pretrained.get().crf)


def add_arguments(parser) -> None:
    parser.add_argument("--dataset", required=True, help="camvid, cityscapes, voc, ade20k or cocostuff")
    parser.add_argument("--root", required=True, type=Path, help="the dataset's folder, in its own layout")
    parser.add_argument("--split", default="val", help="default: val")
    add_model_source_arguments(parser)
    parser.add_argument("--crf", action="store_true",
                        help="also score the predictions refined by the dense CRF (same forward pass)")
    parser.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                        help=f"override a DenseCRF parameter (repeatable); defaults {CRF_DEFAULTS}")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N images of the split (default: all of them)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json, table.txt, confusion_matrix.png "
                             "(default: runs/eval/DATASET_SPLIT)")
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "inductor", "onnxruntime", "openvino"),
                        help="the Segmenter's model runtime (default: auto)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8", "auto"),
                        help="int8: the packaged model's int8 graph, or --model FILE written by fastseg quantize")
    add_scale_arguments(parser)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: torch's; under torchrun cores / local ranks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_ray_arguments(parser)


def crf_parameters(pairs) -> dict:
    params = dict(CRF_DEFAULTS)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in CRF_DEFAULTS:
            raise UsageError(f"--crf-param: expected NAME=VALUE with NAME in {sorted(CRF_DEFAULTS)}, got {pair!r}")
        try:
            params[name] = int(value) if name == "n_iter" else float(value)
        except ValueError:
            raise UsageError(f"--crf-param {name}: {value!r} is not a number") from None
    return params


def _check(args) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads: must be >= 1, got {args.threads}")
    if args.crf_param and not args.crf:
        raise UsageError("--crf-param needs --crf")
    if ray_misuse(args):
        raise UsageError(ray_misuse(args))


def run(args) -> int:
    from ..distributed import PeerFailed, Workers

    try:
        _check(args)
        crf_params = crf_parameters(args.crf_param) if args.crf else None
        if getattr(args, "ray", None) is not None:
            from ..distributed.ray_eval import run as run_on_ray

            return run_on_ray(args, crf_params)
        workers = Workers.from_env(args.device, args.threads)
    except (UsageError, ValueError) as exc:
        return _fail(exc)
    try:
        return _evaluate(args, workers, crf_params)
    except (UsageError, OSError, KeyError, ValueError, PeerFailed) as exc:
        return _fail(exc)
    finally:
        workers.close()


def _fail(exc: Exception) -> int:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError's str quotes
    print(f"fastseg eval: error: {message}", file=sys.stderr)
    return 2


def _evaluate(args, workers, crf_params) -> int:
    import torch

    from ..crf import DenseCRF
    from ..data import get_dataset
    from ..evaluation import STAGES, evaluate

    started = time.perf_counter()
    with workers.together("setup"):  # an error on one rank stops all of them
        dataset = get_dataset(args.dataset, args.root, args.split)
        resolved = resolve(args.model, args.num_classes)
        out = args.out or Path("runs") / "eval" / f"{dataset.name}_{args.split}"
        if workers.is_main:
            out.mkdir(parents=True, exist_ok=True)  # before the long part: a bad --out fails now
        seg = make_segmenter(args, resolved, workers.device)
        crf = None if crf_params is None else DenseCRF(**crf_params)
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    where = f" (rank 0 of {workers.world_size})" if workers.world_size > 1 else ""
    with workers.together("evaluation"):
        result = evaluate(seg, dataset, workers.shard(range(n)), crf=crf, batch_size=args.batch_size,
                          progress=workers.is_main and not args.no_progress,
                          desc=f"eval {dataset.name}/{args.split}{where}")
    result.plain.all_reduce()
    if result.crf is not None:
        result.crf.all_reduce()
    totals = workers.sum(torch.tensor([result.frames] + [result.seconds[s] for s in STAGES], dtype=torch.float64))
    outside = workers.sum(torch.tensor([result.outside_classes.get(v, 0) for v in range(256)], dtype=torch.int64))
    if not workers.is_main:
        return 0
    how = {"processes": workers.world_size, "threads_per_process": torch.get_num_threads(),
           "device": str(workers.device), "runtime": seg.runtime.name, "precision": seg.precision}
    return write_report(args, dataset, resolved.source, out, result, totals, outside, how, started)


def make_segmenter(args, resolved, device):
    """The Segmenter of --model, --runtime, --precision, --scale / --size on `device`."""
    from ..segmenter import Segmenter

    # int8 runs a quantized graph: the packaged model's, found by its name, or an int8 file
    return Segmenter(args.model if args.precision == "int8" else resolved.model, device=device,
                     runtime=args.runtime, precision=args.precision, **scale_options(args))


def write_report(args, dataset, model: str, out: Path, result, totals, outside, how: dict, started: float) -> int:
    """Print the scores and write results.json, table.txt and the pictures, from the whole split's
    Evaluation (its matrices summed over every process), totals (frames, then seconds per stage,
    summed), outside (pixels per raw annotation value outside the classes) and how it ran
    (processes, threads_per_process, device, runtime, precision)."""
    from .._atomic import write_text
    from ..evaluation import STAGES

    outside_classes = {v: int(n) for v, n in enumerate(outside.tolist()) if n}
    if outside_classes:
        print(f"fastseg eval: warning: {_outside_text(outside_classes, dataset)}", file=sys.stderr)
    frames = int(totals[0])
    per_frame = {s: float(t) / max(frames, 1) for s, t in zip(STAGES, totals[1:])}
    report = {
        "dataset": dataset.name, "split": args.split, "root": os.fspath(args.root), "model": model,
        "frames": frames, "classes": list(dataset.classes), "ignore_index": dataset.ignore_index, **how,
        "batch_size": args.batch_size,
        "seconds_per_frame": per_frame,  # summed over processes / frames; "model" includes preprocessing
        "wall_seconds": time.perf_counter() - started, "crf": crf_parameters(args.crf_param) if args.crf else None,
        "labels_outside_classes": {str(v): n for v, n in outside_classes.items()},  # raw value: pixels
        "results": {"plain": _scores_json(result.plain.compute(), dataset.classes)},
    }
    if result.crf is not None:
        report["results"]["crf"] = _scores_json(result.crf.compute(), dataset.classes)
    text = _text(report, result)
    print(text)
    write_text(out / "results.json", json.dumps(report, indent=1))
    write_text(out / "table.txt", text + "\n")
    pictures = f", confusion_matrix{'{,_crf}' if result.crf else ''}.png" if _pictures(report, result, out) else ""
    print(f"\nwrote {out}/results.json, table.txt{pictures}")
    return 0


def _outside_text(outside: dict[int, int], dataset) -> str:
    """The sentence saying which annotation values were outside the dataset's classes, and how often."""
    ids = ", ".join(f"{v} ({n:,} pixels)" for v, n in sorted(outside.items(), key=lambda kv: -kv[1])[:10])
    more = f" and {len(outside) - 10} more" if len(outside) > 10 else ""
    return (f"{sum(outside.values()):,} annotated pixels hold label values outside {dataset.name}'s "
            f"{dataset.num_classes} classes and its ignore values {list(dataset.raw_ignore)}: {ids}{more}; "
            "they were scored as ignore (annotations of another label set?)")


def _finite(v: float):
    return None if v is None or not math.isfinite(v) else v  # JSON has no nan


def _scores_json(scores, classes) -> dict:
    m = scores.matrix
    return {
        "miou": _finite(scores.miou), "pixel_acc": _finite(scores.pixel_acc),
        "mean_acc": _finite(scores.mean_acc), "fw_iou": _finite(scores.fw_iou),
        "mean_dice": _finite(scores.mean_dice),
        "per_class": {name: {"iou": _finite(float(scores.iou[i])), "acc": _finite(float(scores.class_acc[i])),
                             "gt_pixels": int(m[i].sum()), "pred_pixels": int(m[:, i].sum())}
                      for i, name in enumerate(classes)},
        "confusion_matrix": m.tolist(),  # rows = ground truth, columns = prediction
    }


def _text(report: dict, result) -> str:
    threads = report["threads_per_process"]
    spf = report["seconds_per_frame"]
    head = (f"{report['dataset']} {report['split']}: {report['frames']} images, model {report['model']}, "
            f"{report['processes']} process(es) x {threads} thread(s), runtime {report['runtime']}\n"
            f"per image: model {1e3 * spf['model']:.1f} ms, upsample+argmax {1e3 * spf['tail']:.1f} ms"
            + (f", CRF {1e3 * spf['crf']:.1f} ms" if result.crf else "") + "\n")
    classes = report["classes"]
    if result.crf is None:
        return head + "\n" + result.plain.compute().table(classes)
    return head + "\n" + comparison_table(result.plain.compute(), result.crf.compute(), classes) + \
        f"\nCRF: {report['crf']}"


def comparison_table(a, b, classes, names=("", "+CRF")) -> str:
    """Per-class IoU and accuracy of two score sets side by side, with the change (points)."""
    w = max(8, *(len(c) for c in classes))

    def pct(v):
        v = float(v)
        return "-" if v != v else f"{100 * v:.2f}"

    def delta(x, y):
        x, y = float(x), float(y)
        return "-" if x != x or y != y else f"{100 * (y - x):+.2f}"

    cols = [f"IoU{names[0]}", f"IoU{names[1]}", "change", f"Acc{names[0]}", f"Acc{names[1]}", "change"]
    head = f"{'class':<{w}} " + " ".join(f"{c:>8}" for c in cols)
    lines = [head, "-" * len(head)]
    rows = [(c, a.iou[i], b.iou[i], a.class_acc[i], b.class_acc[i]) for i, c in enumerate(classes)]
    rows.append(("mean", a.miou, b.miou, a.mean_acc, b.mean_acc))
    for k, (name, ia, ib, xa, xb) in enumerate(rows):
        if k == len(classes):
            lines.append("-" * len(head))
        cells = (pct(ia), pct(ib), delta(ia, ib), pct(xa), pct(xb), delta(xa, xb))
        lines.append(f"{name:<{w}} " + " ".join(f"{c:>8}" for c in cells))
    lines.append(f"pixel accuracy {pct(a.pixel_acc)} % -> {pct(b.pixel_acc)} % with the CRF "
                 f"({delta(a.pixel_acc, b.pixel_acc)} points)")
    return "\n".join(lines)


def _pictures(report: dict, result, out: Path) -> bool:
    """Draw the confusion matrices; False (with a warning) when matplotlib is missing: the scores are
    written already, and a missing picture must not turn a finished evaluation into a failure."""
    from ..plots import confusion_matrix_figure

    name = Path(report["model"]).name
    for key, meter, suffix in (("plain", result.plain, ""), ("crf", result.crf, "_crf")):
        if meter is None:
            continue
        r = report["results"][key]
        title = (f"{report['dataset']} {report['split']} ({report['frames']} images), {name}"
                 f"{' + CRF' if key == 'crf' else ''}\nmIoU {100 * (r['miou'] or 0):.2f} %, "
                 f"pixel accuracy {100 * (r['pixel_acc'] or 0):.2f} %; rows normalised to 100 %")
        try:
            confusion_matrix_figure(meter.matrix.cpu(), report["classes"], out / f"confusion_matrix{suffix}.png",
                                    title)
        except ImportError as exc:
            print(f"fastseg eval: warning: confusion_matrix{suffix}.png not drawn: {exc}", file=sys.stderr)
            return False
    return True
