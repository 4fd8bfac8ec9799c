"""The Segmenter's fp32 runtimes raced on this CPU, one model family at a time: what `runtime="auto"`
(fastseg/segmenter/choice.py) should pick here, and what it does pick.

Each model runs as `Segmenter(model, runtime=R)` for every CPU runtime installed ("torch",
"onnxruntime", "openvino"), a uint8 frame in and labels out, timed interleaved with a pause after
each call (medians), on random weights (the speed of an fp32 network does not depend on them). The
table and `benchmarks/results/runtime_race.json` (one entry per CPU, keyed by its model name and
features) say, per model, each runtime's median, the fastest, the one "auto" picks and how much
slower that is than the fastest. Pause any training on the machine while it runs.

    .venv/bin/python benchmarks/runtime_race.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastseg import Segmenter
from fastseg.bench import results as bench_results
from fastseg.bench.cpu_engines import cpu_features
from fastseg.bench.measure import smooth_image
from fastseg.bench.timing import SETTLE, interleaved_medians
from fastseg.segmenter import openvino_runtime

# (zoo name or None for the packaged model, classes, frame [H, W], rounds)
MODELS = (
    (None, None, (360, 480), 11),
    ("unet_resnet18", 11, (360, 480), 9),
    ("lraspp_mobilenet_v3_large", 21, (512, 1024), 7),
    ("segformer_b0", 19, (512, 1024), 5),
    ("deeplabv3_resnet50", 21, (360, 480), 5),
)
RESULTS = Path(__file__).parent / "results" / "runtime_race.json"


def race(name: str | None, classes: int | None, hw: tuple[int, int], rounds: int) -> dict:
    runtimes = ["torch", "onnxruntime"] + (["openvino"] if openvino_runtime.available() else [])
    kwargs = {} if name is None else {"num_classes": classes}
    segs = {rt: Segmenter(name, runtime=rt, **kwargs) for rt in runtimes}
    auto = Segmenter(name, **kwargs).runtime.name
    image = smooth_image(*hw, seed=0)
    medians = interleaved_medians({rt: (lambda s=s: s.predict(image)) for rt, s in segs.items()}, rounds,
                                  warmup=2, settle=SETTLE)
    ms = {rt: 1e3 * s for rt, s in medians.items()}
    fastest = min(ms, key=ms.get)
    return {"model": name or "default", "frame": f"{hw[1]}x{hw[0]}", "ms": ms, "fastest": fastest,
            "auto": auto, "auto_over_fastest": ms[auto] / ms[fastest]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS, help="results file (entries of other CPUs are kept)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = f"{bench_results.cpu()['model']}, {cpu_features()}"
    print(f"fp32 runtimes, uint8 frame in, labels out, {args.threads} threads, cpu: {cpu}")
    rows = []
    for model in MODELS:
        row = race(*model)
        rows.append(row)
        times = ", ".join(f"{rt} {v:.1f} ms" for rt, v in row["ms"].items())
        print(f"  {row['model']} {row['frame']}: {times}; fastest {row['fastest']}, auto picks {row['auto']} "
              f"({row['auto_over_fastest']:.2f}x the fastest's time)", flush=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[cpu] = {"threads": args.threads, "torch": torch.__version__, **bench_results.git_commit(), "rows": rows}
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
