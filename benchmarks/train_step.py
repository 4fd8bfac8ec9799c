"""A training step of the default model in fp32 and under `--bf16` (bf16 autocast, channels_last),
raced on this CPU: what `tools/train_default_model.py --bf16` saves here.

A step is what the training loop does per batch: forward (logits upsampled to the crop in fp32),
class-weighted cross-entropy, backward, AdamW. Batch 8 of 288x384 crops (the recipe's), random data
(a step's time does not depend on the values), each precision with its own model and optimizer,
timed interleaved (medians). Results go to `benchmarks/results/train_step.json`, one entry per CPU
and thread count. Pause any training on the machine while it runs.

    .venv/bin/python benchmarks/train_step.py --threads 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastseg.bench import results as bench_results
from fastseg.bench.cpu_engines import cpu_features
from fastseg.bench.timing import interleaved_medians
from fastseg.models import pretrained
from fastseg.training.loop import _forward
from fastseg.training.losses import CrossEntropyLoss

RESULTS = Path(__file__).parent / "results" / "train_step.json"


def step_fn(autocast: torch.dtype | None, channels_last: bool, batch: int, crop: tuple[int, int]):
    # the packaged model is the recipe's architecture (its weights do not change a step's time)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = pretrained.load().train().to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = CrossEntropyLoss()
    images = torch.randn(batch, 3, *crop).contiguous(memory_format=layout)
    labels = torch.randint(0, 11, (batch, *crop))

    def step():
        loss = loss_fn(_forward(model, images, crop, autocast), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS, help="results file (entries of other CPUs are kept)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = f"{bench_results.cpu()['model']}, {cpu_features()}"
    batch, crop = 8, (288, 384)
    candidates = {"fp32": step_fn(None, False, batch, crop),
                  "fp32 channels_last": step_fn(None, True, batch, crop),
                  "bf16 (--bf16: autocast, channels_last)": step_fn(torch.bfloat16, True, batch, crop)}
    ms = {k: 1e3 * v for k, v in interleaved_medians(candidates, args.rounds, warmup=2).items()}
    base = ms["fp32"]
    for name, t in ms.items():
        print(f"  {name}: {t:.0f} ms per step, {t / base:.2f}x fp32's time")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{cpu}, {args.threads} threads"] = {
        "threads": args.threads, "batch": batch, "crop": list(crop), "rounds": args.rounds,
        "torch": torch.__version__, **bench_results.git_commit(), "ms": ms,
        "over_fp32": {k: v / base for k, v in ms.items()}}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"cpu: {cpu}\nwrote {args.out}")


if __name__ == "__main__":
    main()
