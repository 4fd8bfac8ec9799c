"""Frame time of one model file against another through the Segmenter: the same real CamVid frames,
interleaved in one run (medians), the CPU's features printed with the ratio. For a candidate default
model against the one it replaces (MODEL_CARD.md, Speed):

    git show HEAD~1:fastseg/weights/camvid_unet_resnet18.safetensors > /tmp/before.safetensors
    .venv/bin/python benchmarks/model_frame_time.py /tmp/before.safetensors \
        fastseg/weights/camvid_unet_resnet18.safetensors --camvid ../shared/data/camvid
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastseg import Segmenter
from fastseg.bench.cpu_engines import cpu_features
from fastseg.bench.timing import SETTLE, interleaved_medians
from fastseg.data import get_dataset


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reference", type=Path, help="the model file timed as the reference")
    p.add_argument("candidate", type=Path, help="the model file compared with it")
    p.add_argument("--camvid", type=Path, default=Path("../shared/data/camvid"))
    p.add_argument("--frames", type=int, default=8, help="CamVid val frames, cycled through the rounds")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    val = get_dataset("camvid", str(args.camvid), "val")
    frames = [val.read_image(i) for i in range(0, len(val), max(1, len(val) // args.frames))][:args.frames]
    segmenters = {"reference": Segmenter(str(args.reference)), "candidate": Segmenter(str(args.candidate))}
    turn = {name: 0 for name in segmenters}

    def call(name):
        def run():
            segmenters[name].predict(frames[turn[name] % len(frames)])
            turn[name] += 1
        return run

    medians = interleaved_medians({name: call(name) for name in segmenters}, args.rounds, warmup=3,
                                  settle=SETTLE)
    h, w = frames[0].shape[:2]
    print(f"{w}x{h} CamVid val frames, uint8 in, labels out, {args.threads} threads, cpu: {cpu_features()}; "
          f"runtime {segmenters['candidate'].runtime.name}")
    for name, seconds in medians.items():
        print(f"  {name}: {getattr(args, name)}  median {seconds * 1e3:.1f} ms")
    print(f"candidate / reference frame time: {medians['candidate'] / medians['reference']:.3f}x")


if __name__ == "__main__":
    main()
