"""A resumable training loop: AdamW/SGD, poly learning rate, periodic val mIoU, atomic checkpoints.

    from fastseg.training import train, train_transform, eval_transform
    train_set = get_dataset("camvid", root, "train", transform=train_transform(crop_size=(352, 480)))
    val_set = get_dataset("camvid", root, "val", transform=eval_transform())
    result = train(model, train_set, val_set, epochs=100, checkpoint_dir="runs/camvid")

Datasets yield (float image [3, H, W], int label [H, W]) pairs. The model maps [N, 3, H, W] to logits
[N, C, h, w] (or a dict with "out", as torchvision's models do); logits smaller than the label are
upsampled bilinearly before the loss and the argmax.

Resuming: after every epoch ``checkpoint_dir/last.pt`` holds the model, optimizer, scheduler, epoch,
best mIoU and history, written atomically (a temporary file, then os.replace), so a crash never
leaves a half-written checkpoint. A call with the same arguments picks up after the last finished
epoch. Each epoch's randomness (shuffle order, augmentation, dropout) is reseeded from
(seed, epoch), so an interrupted and resumed run ends with the same weights as a straight one.
Checkpoints are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._atomic import atomic_write
from ..metrics import ConfusionMatrix
from .losses import CrossEntropyLoss

IGNORE_INDEX = 255
CHECKPOINT = "last.pt"
BEST = "best.pt"


# ---- evaluation --------------------------------------------------------------------------------

def _forward(model: nn.Module, images: torch.Tensor, size, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Logits at `size`, in fp32: under autocast only the network runs in the lower precision; the
    upsampling, the loss and the argmax see fp32 logits."""
    if autocast is None:
        out = model(images)
    else:
        with torch.autocast(images.device.type, dtype=autocast):
            out = model(images)
    if isinstance(out, dict):
        out = out["out"]
    out = out.float()
    if out.shape[-2:] != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, dataset, num_classes: int, *, batch_size: int = 1, device="cpu",
             ignore_index: int = IGNORE_INDEX, num_workers: int = 0, progress: bool = True) -> dict:
    """Confusion matrix, per-class IoU and mIoU (nan-mean) of model on dataset."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    meter = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for images, labels in tqdm(loader, desc="val", leave=False, disable=not progress):
        images, labels = images.to(device), labels.to(device)
        meter.update(_forward(model, images, labels.shape[-2:]).argmax(1), labels)
    model.train(was_training)
    scores = meter.compute()
    return {"confusion": meter.matrix.cpu(), "iou": scores.iou.tolist(), "miou": float(scores.miou)}


# ---- checkpoints -------------------------------------------------------------------------------

def save_atomic(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then os.replace onto path."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


# ---- training ----------------------------------------------------------------------------------

class WeightAverage:
    """An exponential moving average of a model's parameters and buffers (Polyak averaging).

    The averaged copy is what gets scored and saved: late in training single steps still move the
    weights between minibatch-specific states, and the average sits nearer the middle of them, which
    is what held-out frames reward. Integer buffers (BatchNorm's step counter) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # early on the average would be dominated by the random initialisation: ramp the decay up
        decay = min(self.decay, (1 + step) / (10 + step))
        live = dict(model.state_dict())
        for name, avg in self.model.state_dict().items():
            value = live[name]
            if avg.is_floating_point():
                avg.mul_(decay).add_(value.detach(), alpha=1 - decay)
            else:
                avg.copy_(value)


@dataclass
class TrainResult:
    epochs_done: int
    best_miou: float
    history: list = field(default_factory=list)   # one dict per epoch: loss, lr, seconds, miou
    checkpoint: Path | None = None
    ema: nn.Module | None = None                   # the weight average, when ema_decay was given


def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    """Reseed every RNG the epoch may use; return the generator that orders the epoch's batches."""
    s = seed * 100_003 + epoch
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)
    return torch.Generator().manual_seed(s)


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float):
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")


def train(model: nn.Module, train_set, val_set=None, epochs: int = 1, *,
          num_classes: int | None = None, batch_size: int = 8, lr: float = 1e-3,
          weight_decay: float = 1e-4, optimizer: str = "adamw", momentum: float = 0.9,
          poly_power: float = 0.9, warmup_iters: int = 0, loss_fn: Callable | None = None,
          ignore_index: int = IGNORE_INDEX, checkpoint_dir: str | Path | None = None,
          resume: bool = True, val_every: int = 1, device="cpu", seed: int = 0,
          num_workers: int = 0, grad_clip: float | None = None, progress: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          ema_decay: float | None = None, teacher: nn.Module | None = None,
          autocast: torch.dtype | None = None, channels_last: bool = False,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train model for `epochs` epochs (in total, counting epochs done before a resume).

    num_classes: taken from ``train_set.num_classes`` when not given (for val mIoU).
    loss_fn(logits, target): default cross-entropy ignoring ignore_index.
    lr schedule: per iteration, linear warmup over warmup_iters, then lr * (1 - t/T) ** poly_power.
    val_every: run val (when val_set is given) every that many epochs and after the last one;
    ``best.pt`` keeps the model weights of the best val mIoU.
    on_epoch_end(epoch, record): called after the epoch's checkpoint is written.
    ema_decay: keep an exponential moving average of the weights (`WeightAverage`); val scores it,
    ``best.pt`` holds it, and ``TrainResult.ema`` returns it.
    teacher: a trained model run (in eval mode, without gradients) on every training batch; its
    logits go to the loss as a third argument, loss_fn(logits, target, teacher_logits) (e.g.
    losses.DistillationLoss). It is not checkpointed: resume with the same teacher.
    autocast: run the forward passes of training (the model's and the teacher's) under
    torch.autocast with this dtype (torch.bfloat16: on an Intel Xeon with AMX, with channels_last,
    a step of the default model took 0.41-0.46x fp32's time, benchmarks/train_step.py); weights,
    optimizer state, the weight average, the loss and val stay fp32. channels_last: train in that
    memory layout (0.86-0.90x fp32's step time there, on its own); the model, its average and the
    teacher are handed back in the default layout.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(train_set) == 0:
        raise ValueError("train_set is empty")
    if num_classes is None:
        num_classes = getattr(train_set, "num_classes", None)
        if num_classes is None and val_set is not None:
            raise ValueError("num_classes is needed for val mIoU (train_set has no num_classes)")
    say = log or (lambda _msg: None)
    device = torch.device(device)
    if autocast is not None and autocast not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast must be torch.bfloat16 or torch.float16, got {autocast}")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device)
    if channels_last:  # (without it, the model's layout is left as given)
        model.to(memory_format=layout)
    loss_fn = loss_fn or CrossEntropyLoss(ignore_index=ignore_index)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    if teacher is not None:
        # its forward runs under no_grad, so its parameters are left as given
        teacher.to(device).eval()
        if channels_last:
            teacher.to(memory_format=layout)

    # drop_last keeps batch statistics sane (BatchNorm with a batch of one) when there is enough data
    drop_last = len(train_set) > batch_size
    iters_per_epoch = len(train_set) // batch_size if drop_last else 1
    total_iters = epochs * iters_per_epoch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, lr, weight_decay, momentum)

    def lr_factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        return max(0.0, 1.0 - it / total_iters) ** poly_power

    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = WeightAverage(model, ema_decay) if ema_decay is not None else None

    start_epoch, best_miou, history = 0, float("-inf"), []
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    ckpt_path = ckpt_dir / CHECKPOINT if ckpt_dir is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location=device)
        if state.get("total_iters") != total_iters:
            raise ValueError(f"{ckpt_path} was written by a run of {state.get('total_iters')} iterations, "
                             f"this one has {total_iters}: same epochs, data and batch size are needed to "
                             "resume (or pass resume=False / another checkpoint_dir)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_miou, history = state["epoch"], state["best_miou"], list(state["history"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"{ckpt_path} holds no weight average: it was written without ema_decay")
            ema.model.load_state_dict(state["ema"])
        say(f"resumed from {ckpt_path} after epoch {start_epoch}/{epochs}")

    for epoch in range(start_epoch, epochs):
        generator = _seed_epoch(seed, epoch)
        loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                             drop_last=drop_last, num_workers=num_workers,
                                             generator=generator, pin_memory=device.type == "cuda")
        model.train()
        started, loss_sum, steps = time.perf_counter(), 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for images, labels in bar:
            images = images.to(device, non_blocking=True, memory_format=layout)
            labels = labels.to(device, non_blocking=True)
            logits = _forward(model, images, labels.shape[-2:], autocast)
            if teacher is None:
                loss = loss_fn(logits, labels)
            else:
                with torch.no_grad():
                    taught = _forward(teacher, images, labels.shape[-2:], autocast)
                loss = loss_fn(logits, labels, taught)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            scheduler.step()
            if ema is not None:
                ema.update(model, epoch * iters_per_epoch + steps)
            loss_sum += loss.item()
            steps += 1
            bar.set_postfix(loss=f"{loss_sum / steps:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        bar.close()

        record = {"epoch": epoch + 1, "loss": loss_sum / max(steps, 1),
                  "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        is_last = epoch + 1 == epochs
        if val_set is not None and ((epoch + 1) % val_every == 0 or is_last):
            scored = ema.model if ema is not None else model
            assert num_classes is not None  # checked before the first epoch when there is a val_set
            scores = evaluate(scored, val_set, num_classes, device=device, ignore_index=ignore_index,
                              num_workers=num_workers, progress=progress)
            record["miou"] = scores["miou"]
            if ckpt_dir is not None and not math.isnan(scores["miou"]) and scores["miou"] > best_miou:
                save_atomic({"model": scored.state_dict(), "epoch": epoch + 1, "miou": scores["miou"],
                             "iou": scores["iou"]}, ckpt_dir / BEST)
            if not math.isnan(scores["miou"]):
                best_miou = max(best_miou, scores["miou"])
        history.append(record)
        say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

        if ckpt_path is not None:
            save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                         "best_miou": best_miou, "history": history, "total_iters": total_iters,
                         "seed": seed, **({"ema": ema.model.state_dict()} if ema is not None else {})},
                        ckpt_path)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)

    if channels_last:  # hand back what was given: exporters (safetensors) want contiguous weights
        for module in (model, ema.model if ema is not None else None, teacher):
            if module is not None:
                module.to(memory_format=torch.contiguous_format)
    return TrainResult(epochs_done=max(start_epoch, epochs),
                       best_miou=best_miou if best_miou > float("-inf") else float("nan"),
                       history=history, checkpoint=ckpt_path, ema=ema.model if ema is not None else None)
