"""Train fastseg's default model (the one `fastseg.Segmenter()` loads) on CamVid train, from scratch.

    .venv/bin/python tools/train_default_model.py --root ../shared/data/camvid --out runs/default

Resumable: run the same command again after an interruption and it continues after the last
finished epoch (runs/default/last.pt). When training ends, the weights of the best val epoch are
written as fp16 safetensors to fastseg/weights/camvid_unet_resnet18.safetensors together with
runs/default/summary.json (per-class val IoU, timings), which MODEL_CARD.md reports.

Val is used for selecting the epoch only; the training set alone drives the weights.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from fastseg.data import get_dataset
from fastseg.models import create, save
from fastseg.training import train
from fastseg.training.augment import eval_transform, train_transform
from fastseg.training.losses import CrossEntropyLoss, label_statistics, median_frequency_weights

# The architecture: a ResNet-18 of half width (base 32) under a four-block U-Net decoder that stops at
# stride 2; the fused upsample+argmax tail takes the logits to full size.
MODEL = dict(name="unet_resnet18", num_classes=11, base_width=32, decoder_channels=(128, 64, 32, 16))
PACKAGED = Path(__file__).resolve().parent.parent / "fastseg" / "weights" / "camvid_unet_resnet18.safetensors"


class CachedImages(torch.utils.data.Dataset):
    """The reader's decoded images and labels kept in memory (190 MB for CamVid train): decoding
    PNGs every epoch would take CPU time from training on a 2-core machine."""

    def __init__(self, dataset, transform):
        self.pairs = [(dataset.read_image(i), dataset.read_label(i)) for i in range(len(dataset))]
        self.transform, self.num_classes = transform, dataset.num_classes

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.transform(*self.pairs[index])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/camvid")
    p.add_argument("--out", default="runs/default")
    p.add_argument("--epochs", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, nargs=2, default=(288, 384), metavar=("H", "W"))
    p.add_argument("--scale", type=float, nargs=2, default=(0.75, 1.5), metavar=("LOW", "HIGH"))
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-every", type=int, default=2)
    p.add_argument("--export", type=Path, default=PACKAGED, help="where the fp16 weights go")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    started = time.time()
    raw_train = get_dataset("camvid", args.root, "train")
    train_set = CachedImages(raw_train, train_transform(crop_size=tuple(args.crop), scale=tuple(args.scale)))
    val_set = CachedImages(get_dataset("camvid", args.root, "val"), eval_transform())

    # Square root of median-frequency balancing: poles, signs, pedestrians and cyclists count more,
    # without the full weights' loss of accuracy on road, sky and buildings.
    counts, image_pixels = label_statistics(raw_train, raw_train.num_classes)
    weight = median_frequency_weights(counts, image_pixels).sqrt()
    print("class weights:", ", ".join(f"{c}={w:.2f}" for c, w in zip(raw_train.classes, weight.tolist())))

    config = dict(MODEL)
    model = create(config.pop("name"), **config)
    result = train(model, train_set, val_set, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=args.weight_decay, optimizer="adamw", warmup_iters=200,
                   loss_fn=CrossEntropyLoss(weight=weight), checkpoint_dir=args.out,
                   val_every=args.val_every, seed=0)

    best = torch.load(Path(args.out) / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    model = model.half().eval()
    args.export.parent.mkdir(parents=True, exist_ok=True)
    save(model, args.export)
    summary = {"model": MODEL, "best_epoch": best["epoch"], "val_miou": best["miou"],
               "val_iou": dict(zip(raw_train.classes, best["iou"])), "epochs": args.epochs,
               "train_seconds_this_run": time.time() - started,
               "train_seconds_total": float(sum(r["seconds"] for r in result.history)),
               "history": result.history, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                    for k, v in vars(args).items()}}
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"best val mIoU {best['miou']:.4f} at epoch {best['epoch']}; weights: {args.export} "
          f"({args.export.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
