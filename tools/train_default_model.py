"""Train fastseg's default model (the one `fastseg.Segmenter()` loads) on CamVid, from scratch.

Two kinds of run:

  recipe run:  .venv/bin/python tools/train_default_model.py --holdout 0006R0 --out runs/recipe-a ...
      trains on CamVid train without the frames of one sequence and scores the model on that
      sequence, a street the model never saw: this is how a recipe and its schedule are chosen.
      runs/recipe-a/summary.json holds the held-out per-class IoU, runs/recipe-a/model.safetensors
      the last weights (fp16; a teacher for --teacher, never the packaged model).
  final run:   .venv/bin/python tools/train_default_model.py --splits train val --out runs/final ...
      trains on every frame given, for the fixed schedule a recipe run chose, and exports the last
      weights (no epoch is picked on frames the model trained on) as fp16 safetensors to
      fastseg/weights/camvid_unet_resnet18.safetensors. The demo frames the package ships
      (fastseg/assets/camvid_demo) are left out of it.

Distillation: --teacher FILE (a model file, e.g. a recipe run's model.safetensors or a final run's
--export; several files: their ensemble, the mean of their class probabilities) runs that model on
every training batch, and the loss becomes (1 - alpha) * class-weighted cross-entropy
+ alpha * T^2 * KL(teacher || student) at temperature T (--distill-weight alpha, --temperature T).
For a recipe run, the teachers must have trained without the held-out sequence too.

Speed: --bf16 runs the forward passes under bf16 autocast in channels_last (weights, optimizer, the
weight average and the held-out scoring stay fp32). On a CPU with AMX a training step of this model
takes 0.41-0.43x the time of fp32 at one thread and 0.44-0.46x at two (three runs; batch 8, 288x384;
benchmarks/results/train_step.json, from benchmarks/train_step.py). MODEL_CARD.md
compares bf16 recipe runs with fp32 ones, and runs of several seeds, before any bf16 figure is set
against an fp32 one.

Resumable: run the same command again after an interruption and it continues after the last
finished epoch (OUT/last.pt).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from fastseg.data import get_dataset
from fastseg.models import create, load, save
from fastseg.training import evaluate, train
from fastseg.training.augment import Compose, PasteClasses, eval_transform, train_transform
from fastseg.training.losses import (
    CrossEntropyLoss,
    DistillationLoss,
    OhemCrossEntropy,
    SoftmaxAverage,
    label_statistics,
    median_frequency_weights,
)

# The architecture: a ResNet-18 of half width (base 32) under a four-block U-Net decoder that stops at
# stride 2; the fused upsample+argmax tail takes the logits to full size.
MODEL = dict(name="unet_resnet18", num_classes=11, base_width=32, decoder_channels=(128, 64, 32, 16))
PACKAGED = Path(__file__).resolve().parent.parent / "fastseg" / "weights" / "camvid_unet_resnet18.safetensors"
# `fastseg demo`'s packaged frames: a final run leaves them out, so the demo shows frames never trained on
DEMO_FRAMES = Path(__file__).resolve().parent.parent / "fastseg" / "assets" / "camvid_demo"


def sequence(path: Path) -> str:
    """CamVid frame names start with their video sequence: 0006R0_f02370.png -> 0006R0."""
    return path.name.split("_")[0]


class CachedImages(torch.utils.data.Dataset):
    """Decoded images and labels kept in memory (190 MB for CamVid train): decoding PNGs every epoch
    would take CPU time from training on a 2-core machine. `keep(path)` picks the frames."""

    def __init__(self, datasets, transform, keep=lambda path: True):
        self.pairs, self.names = [], []
        for dataset in datasets:
            for i, (image_path, _) in enumerate(dataset.pairs):
                if keep(image_path):
                    self.pairs.append((dataset.read_image(i), dataset.read_label(i)))
                    self.names.append(image_path.name)
        if not self.pairs:
            raise ValueError("no frames left to train or score on: check --splits and --holdout")
        self.transform, self.num_classes = transform, datasets[0].num_classes

    def read_label(self, index):
        return self.pairs[index][1]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.transform(*self.pairs[index])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/camvid")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val"],
                   help="the CamVid splits to train on")
    p.add_argument("--holdout", metavar="SEQUENCE",
                   help="a recipe run: leave this sequence's frames out of training and score on them")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=(288, 384), metavar=("H", "W"))
    p.add_argument("--input-size", type=int, nargs=2, default=(360, 480), metavar=("H", "W"),
                   help="size of the training frames (CamVid's), saved in the model's config: the "
                        "Segmenter resizes inputs towards it (default: 360 480)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.5), metavar=("LOW", "HIGH"))
    p.add_argument("--jitter", type=float, default=0.3, help="brightness / contrast / saturation range")
    p.add_argument("--hue", type=float, default=0.0, help="hue shift range (fraction of the circle)")
    p.add_argument("--camera", action="store_true",
                   help="camera jitter: exposure curve, white balance, blur and sensor noise (CameraJitter)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="score and export an exponential moving average of the weights")
    p.add_argument("--paste", nargs="+", metavar="CLASS", default=[],
                   help="class-mix paste: these classes' pixels from another training frame, in place "
                        "(e.g. Pedestrian Bicyclist)")
    p.add_argument("--paste-prob", type=float, default=0.5, help="the share of crops pasted into (default 0.5)")
    p.add_argument("--loss", choices=["ce", "ohem"], default="ce")
    p.add_argument("--base-width", type=int, default=MODEL["base_width"])
    p.add_argument("--context", choices=["none", "pool"], default="none",
                   help="a context branch on the U-Net's coarsest map (pool: image pooling)")
    p.add_argument("--teacher", type=Path, nargs="+", metavar="FILE",
                   help="distil from this model file (fastseg's safetensors format), run on every batch; "
                        "from several, their mean class probabilities (an ensemble)")
    p.add_argument("--distill-weight", type=float, default=0.5, metavar="ALPHA",
                   help="the teacher's share of the loss, the labels' is 1 - ALPHA (default 0.5)")
    p.add_argument("--temperature", type=float, default=1.0, help="distillation temperature (default 1)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--bf16", action="store_true",
                   help="forward passes in bf16 autocast, channels_last (0.41-0.46x the step time on a CPU "
                        "with AMX; weights, optimizer and scoring stay fp32)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the batch order and the augmentation (default 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--export", type=Path, default=PACKAGED, help="where the fp16 weights go (final runs)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    # a bad file fails before any work; the files are fp16, a teacher runs in fp32 (or under --bf16)
    teachers = [load(path).float() for path in args.teacher or []]
    teacher = teachers[0] if len(teachers) == 1 else SoftmaxAverage(teachers) if teachers else None
    started = time.time()
    readers = [get_dataset("camvid", args.root, split) for split in args.splits]
    if args.holdout:
        train_set = CachedImages(readers, train_transform(crop_size=tuple(args.crop), scale=tuple(args.scale),
                                                          jitter=args.jitter, hue=args.hue, camera=args.camera),
                                 keep=lambda path: sequence(path) != args.holdout)
        val_set = CachedImages(readers, eval_transform(), keep=lambda path: sequence(path) == args.holdout)
    else:
        demo = {p.stem for p in DEMO_FRAMES.glob("*.jpg")}
        train_set = CachedImages(readers, train_transform(crop_size=tuple(args.crop), scale=tuple(args.scale),
                                                          jitter=args.jitter, hue=args.hue, camera=args.camera),
                                 keep=lambda path: path.stem not in demo)
        val_set = None
    classes = readers[0].classes
    if args.paste:
        unknown = sorted(set(args.paste) - set(classes))
        if unknown:
            p.error(f"--paste: unknown class(es) {', '.join(unknown)}; CamVid's: {', '.join(classes)}")
        paste = PasteClasses(train_set.pairs, [classes.index(c) for c in args.paste], p=args.paste_prob)
        train_set.transform = Compose([paste, *train_set.transform.transforms])
    print(f"training on {len(train_set)} frames"
          + (f", scoring on the {len(val_set)} frames of {args.holdout}" if val_set is not None else ""))

    # Square root of median-frequency balancing: poles, signs, pedestrians and cyclists count more,
    # without the full weights' loss of accuracy on road, sky and buildings.
    counts, image_pixels = label_statistics(
        (train_set.read_label(i) for i in range(len(train_set))), train_set.num_classes)
    weight = median_frequency_weights(counts, image_pixels).sqrt()
    print("class weights:", ", ".join(f"{c}={w:.2f}" for c, w in zip(classes, weight.tolist())))

    config = dict(MODEL, base_width=args.base_width)
    if args.context != "none":
        config["context"] = args.context
    torch.manual_seed(args.seed)
    model = create(config.pop("name"), **config)
    loss = (OhemCrossEntropy(weight=weight, min_kept=args.batch_size * 16_000) if args.loss == "ohem"
            else CrossEntropyLoss(weight=weight))
    if teacher is not None:
        loss = DistillationLoss(loss, alpha=args.distill_weight, temperature=args.temperature)
    result = train(model, train_set, val_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, optimizer="adamw", warmup_iters=200,
                   loss_fn=loss, checkpoint_dir=args.out, val_every=args.val_every, seed=args.seed,
                   ema_decay=args.ema, teacher=teacher, progress=sys.stderr.isatty(),
                   autocast=torch.bfloat16 if args.bf16 else None, channels_last=args.bf16)
    final = result.ema if result.ema is not None else model
    summary = {"model": dict(MODEL, **config), "epochs": args.epochs, "frames": len(train_set),
               "train_seconds_this_run": time.time() - started,
               "train_seconds_total": float(sum(r["seconds"] for r in result.history)),
               "history": result.history, "args": json.loads(json.dumps(vars(args), default=str))}
    if val_set is not None:
        # the held-out score of the last epoch (the fixed schedule), and the best epoch for reference
        last = evaluate(final, val_set, train_set.num_classes, progress=False)
        best = torch.load(Path(args.out) / "best.pt", map_location="cpu", weights_only=True)
        summary.update(holdout=args.holdout, holdout_frames=len(val_set), holdout_miou=last["miou"],
                       holdout_iou=dict(zip(classes, last["iou"])), best_epoch=best["epoch"],
                       best_miou=best["miou"])
        print(f"{args.holdout}: mIoU {last['miou']:.4f} after the last epoch "
              f"(best {best['miou']:.4f} at epoch {best['epoch']})")
        export(final, args.input_size, Path(args.out) / "model.safetensors")  # a teacher for later runs
    else:
        # what the model trained on, for its card: `fastseg demo` never shows these frames as unseen
        summary["training"] = {"splits": args.splits, "excluded_frames": sorted(demo)}
        export(final, args.input_size, args.export)
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


def export(model, input_size, path: Path) -> None:
    """The weights as fp16 safetensors with the training frame size in the config."""
    half = model.half().eval()
    half.config["input_size"] = list(input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(half, path)
    print(f"weights: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
