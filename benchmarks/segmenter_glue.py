"""What the Segmenter costs on top of its network: the whole `predict` against the runtime alone on
the frame already preprocessed, interleaved in one run (medians), with the stages inside `predict`
(its own per-stage timings) and the preprocessing and fused tail timed alone. For a runtime that
takes the uint8 frame itself (OpenVINO), also its network on that frame: the part of its cost above
the network alone is preprocessing run inside the engine, and is counted with the glue.

    .venv/bin/python benchmarks/segmenter_glue.py --model default --precision fp32,bf16

--model default: the packaged CamVid model on 480x360 frames; lraspp: LR-ASPP MobileNetV3-Large
(random weights, 21 classes) on 512x1024 frames. The `cpu_engines_*` bench cases carry the same
"network alone" rows beside the peers; this script adds where the difference goes.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

from fastseg import Segmenter, ops
from fastseg.bench.cpu_engines import cpu_features
from fastseg.bench.measure import smooth_image
from fastseg.bench.timing import SETTLE, interleaved_medians

STAGES = ("preprocess", "model", "tail", "total")
UINT8 = "network alone on the uint8 frame"


def _model(name: str):
    if name == "default":
        from fastseg.models import load, pretrained

        return load(pretrained.get().path).float().eval(), (360, 480)
    from fastseg.bench.models import _lraspp, _torchvision
    from fastseg.models import from_torchvision

    return from_torchvision(_lraspp(_torchvision())), (512, 1024)


def candidates(seg: Segmenter, image, log: list) -> dict:
    """name -> function: the network alone, the whole predict (its stage timings kept in `log`),
    the preprocessing alone and the tail alone."""
    hw = image.shape[:2]
    with torch.inference_mode():
        x = seg.preprocess(torch.from_numpy(image[None]), hwc=True)
        with seg.runtime.kernel_threads():
            logits = seg.runtime(x)

    def network(x=x):
        with torch.inference_mode(), seg.runtime.kernel_threads():
            return seg.runtime(x)

    def preprocess():
        with torch.inference_mode(), seg.runtime.kernel_threads():
            return seg.preprocess(torch.from_numpy(image[None]), hwc=True)

    def tail():
        with torch.inference_mode(), seg.runtime.kernel_threads():
            return ops.upsample_argmax(logits, size=hw, align_corners=seg.align_corners)

    cands = {"network alone": network, "Segmenter.predict": lambda: log.append(seg.predict(image).timings),
             "preprocess alone": preprocess, "tail alone": tail}
    if seg.runtime.takes_uint8_hwc:  # the network with the engine's own normalisation in front
        cands[UINT8] = functools.partial(network, torch.from_numpy(image[None]))
    return cands


def paired_difference(a, b, rounds: int, settle: float) -> float:
    """Median over rounds of a's seconds minus b's, each round timed a, b, b, a with a pause after
    each call: a difference of two medians of the network would carry the network's own spread."""
    diffs = []
    for _ in range(rounds):
        seconds = []
        for fn in (a, b, b, a):
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
            time.sleep(settle)
        diffs.append((seconds[0] + seconds[3] - seconds[1] - seconds[2]) / 2)
    return statistics.median(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("default", "lraspp"), default="default")
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated (default: fp32,bf16)")
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    model, hw = _model(args.model)
    image = smooth_image(*hw, seed=0)
    cands, logs = {}, {}
    for precision in args.precision.split(","):
        seg = Segmenter(model, precision=precision)
        logs[precision] = []
        cands.update({f"{precision} {k}": fn for k, fn in candidates(seg, image, logs[precision]).items()})
        print(f"{precision}: {seg.runtime!r}")
    medians = interleaved_medians(cands, args.rounds, warmup=2, settle=SETTLE)
    print(f"{args.model} {hw[1]}x{hw[0]}, {torch.get_num_threads()} threads, cpu: {cpu_features()}, "
          f"{args.rounds} rounds")
    for name, seconds in medians.items():
        print(f"  {name:32s} {seconds * 1e3:8.2f} ms")
    for precision, log in logs.items():
        whole, alone = medians[f"{precision} Segmenter.predict"], medians[f"{precision} network alone"]
        inside = {k: statistics.median(t[k] for t in log) * 1e3 for k in STAGES}
        # per call, then the median: the network's own spread would swamp a difference of medians
        glue = statistics.median(t["total"] - t["model"] for t in log) * 1e3
        if f"{precision} {UINT8}" in cands:
            # predict's network stage ran on the uint8 frame: what normalising inside it costs is glue too
            inside_cost = paired_difference(cands[f"{precision} {UINT8}"], cands[f"{precision} network alone"],
                                            args.rounds, SETTLE) * 1e3
            print(f"{precision}: the network on the uint8 frame costs {inside_cost:+.2f} ms over the network alone "
                  f"(paired rounds; counted below)")
            glue += inside_cost
        # the same quantity measured directly: predict against the network alone, paired rounds
        direct = paired_difference(cands[f"{precision} Segmenter.predict"], cands[f"{precision} network alone"],
                                   args.rounds, SETTLE) * 1e3
        print(f"{precision}: predict - network alone, paired rounds: {direct:.2f} ms = "
              f"{100 * direct / (alone * 1e3):.1f} % of the network alone")
        print(f"{precision}: network alone / Segmenter {alone / whole:.3f}x; inside predict (ms): "
              + " ".join(f"{k} {inside[k]:.2f}" for k in STAGES)
              + f"; everything but the network {glue:.2f} ms = {100 * glue / (alone * 1e3):.1f} % of the network alone")


if __name__ == "__main__":
    main()
