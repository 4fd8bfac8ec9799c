"""Choose the packaged model's CRF setting on a sequence the model never trained on.

    .venv/bin/python tools/choose_crf.py --run runs/recipe-a            # a recipe run (held out 0006R0)
    .venv/bin/python tools/choose_crf.py --model FILE --holdout 0006R0  # any fastseg model file
    .venv/bin/python tools/choose_crf.py --run runs/recipe-b --grid mild --out runs/recipe-b/crf-mild.json

Runs every frame of the held-out sequence through the Segmenter without a CRF and with each setting of
a small grid (the setting the package ships among them), and keeps the setting with the best mIoU
among those that lower no class by more than --max-drop IoU points. Choosing on val would reward a
setting tuned to a street the model memorised; a recipe run's held-out sequence is a street it never
saw. Writes OUT (default RUN/crf.json): every setting's per-class IoU, and the choice.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from fastseg.crf import DenseCRF
from fastseg.data import get_dataset
from fastseg.metrics import ConfusionMatrix
from fastseg.models import create, load
from fastseg.models.pretrained import get as packaged
from fastseg.segmenter import Segmenter


def grid(name: str = "usual") -> list[dict]:
    """The settings tried. "usual": pydensecrf's usual setting, the packaged one, and milder bilateral
    terms around it. "mild": weaker still (a bilateral compat of 1-2, kernels of 10-20 pixels, 2 or 5
    iterations), for a model whose thin classes (poles, signs) the usual grid erases."""
    if name == "mild":
        return [dict(sxy_gaussian=3, compat_gaussian=1, sxy_bilateral=sxy, srgb_bilateral=srgb, compat_bilateral=compat,
                     n_iter=n_iter)
                for sxy, srgb, compat, n_iter in itertools.product((10, 20), (3, 5), (1, 2), (2, 5))]
    settings = [dict(packaged().crf), dict(sxy_gaussian=3, compat_gaussian=3, sxy_bilateral=80, srgb_bilateral=13,
                                           compat_bilateral=10)]
    for sxy, srgb, compat in itertools.product((20, 40), (5, 10), (2, 4)):
        settings.append(dict(sxy_gaussian=3, compat_gaussian=1, sxy_bilateral=sxy, srgb_bilateral=srgb,
                             compat_bilateral=compat))
    unique = {json.dumps(dict(s, n_iter=5), sort_keys=True) for s in settings}
    return [json.loads(s) for s in sorted(unique)]


def model_of_run(run: Path) -> tuple[torch.nn.Module, str]:
    """A recipe run's final weights (the weight average when the run kept one) and its held-out sequence."""
    summary = json.loads((run / "summary.json").read_text())
    config = dict(summary["model"])
    model = create(config.pop("name"), **config)
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    return model.eval(), summary["holdout"]


def held_out_frames(root: str, sequence: str):
    for split in ("train", "val"):
        data = get_dataset("camvid", root, split)
        for i, (path, _) in enumerate(data.pairs):
            if path.name.split("_")[0] == sequence:
                yield data.read_image(i), data.read_label(i)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a finished recipe run (summary.json and last.pt)")
    src.add_argument("--model", type=Path, help="a fastseg model file (then --holdout is needed)")
    p.add_argument("--holdout", help="the CamVid sequence the model never trained on (default: the run's)")
    p.add_argument("--root", default="../shared/data/camvid")
    p.add_argument("--max-drop", type=float, default=1.0, help="IoU points any class may lose (default: 1)")
    p.add_argument("--out", type=Path, help="the results (default: RUN/crf.json, or crf.json)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grid", choices=("usual", "mild"), default="usual", help="the settings tried (default: usual)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.run is not None:
        model, sequence = model_of_run(args.run)
        sequence = args.holdout or sequence
    elif args.holdout is None:
        p.error("--model needs --holdout")
    else:
        model, sequence = load(args.model).eval(), args.holdout
    out = args.out or ((args.run or Path(".")) / "crf.json")
    frames = list(held_out_frames(args.root, sequence))
    if not frames:
        p.error(f"no CamVid frames of sequence {sequence!r} under {args.root}")
    classes = get_dataset("camvid", args.root, "val").classes
    settings = grid(args.grid)

    meters = {"none": ConfusionMatrix(len(classes))} | {json.dumps(s, sort_keys=True): ConfusionMatrix(len(classes))
                                                        for s in settings}
    plain = Segmenter(model)
    refined = {key: Segmenter(model, crf=DenseCRF(**json.loads(key))) for key in meters if key != "none"}
    for image, truth in tqdm(frames, desc=f"{sequence}: {len(meters)} settings", unit="frame"):
        meters["none"].update(plain.predict(image).labels, truth)
        for key, seg in refined.items():
            meters[key].update(seg.predict(image).labels, truth)

    base = meters["none"].compute()
    results = []
    for key, meter in meters.items():
        scores = meter.compute()
        drops = {c: 100 * (b - s) for c, b, s in zip(classes, base.iou.tolist(), scores.iou.tolist())}
        results.append({"setting": None if key == "none" else json.loads(key), "miou": scores.miou,
                        "iou": dict(zip(classes, scores.iou.tolist())), "largest_drop": max(drops.values()),
                        "largest_drop_class": max(drops, key=drops.__getitem__)})
    allowed = [r for r in results if r["setting"] is not None and r["largest_drop"] <= args.max_drop]
    best = max(allowed, key=lambda r: r["miou"]) if allowed else None
    out.write_text(json.dumps({"sequence": sequence, "frames": len(frames), "max_drop": args.max_drop,
                               "without_crf_miou": base.miou, "chosen": best, "settings": results}, indent=2))
    for r in sorted(results, key=lambda r: -r["miou"]):
        print(f"mIoU {100 * r['miou']:5.2f}  largest drop {r['largest_drop']:+5.2f} ({r['largest_drop_class']})  "
              f"{r['setting']}")
    if best is None:
        print(f"no setting keeps every class within {args.max_drop} IoU points: ship no CRF setting", file=sys.stderr)
        return 1
    print(f"chosen: {best['setting']} (mIoU {100 * best['miou']:.2f} vs {100 * base.miou:.2f} without); "
          f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
