"""Record, on this GPU, the convolutions that fastseg's Triton kernels run faster than cuDNN: the table
`backend="auto"` reads on CUDA (fastseg/ops/_conv_table.py says where and in what format).

    python benchmarks/gpu/conv_table.py [--out PATH] [--models NAME,NAME] [--sizes HxW,HxW]
                                        [--precisions fp16,fp32] [--reps N] [--margin RATIO] [--tiles]

    --out         the table to update (default: $FASTSEG_CONV_TABLE, else fastseg/ops/conv_table.json,
                  the packaged table); only this GPU's entry is replaced, other GPUs' are kept
    --models      Segmenter models whose convolutions are measured
                  (default deeplabv3_resnet50,deeplabv3plus_resnet50,fcn_resnet50: the dilated ResNets
                  and the ASPP, the only layers the Triton convolutions take)
    --sizes       frame sizes, HxW (default 360x480,1024x2048)
    --precisions  Segmenter precisions (default fp16,fp32; fp32 as torch.backends.cudnn.allow_tf32 says)
    --reps        timed runs per side and shape, interleaved (default 15)
    --margin      Triton must be this many times faster than cuDNN to be listed (default 1.05)
    --tiles       also time the Triton side under each tile configuration and under the rule that
                  picks one (fastseg/ops/atrous_conv/tiles.py); `make gpu-check` passes it

Every shape is the one the Segmenter really runs (its padding, layout and batch of one frame): the
recorder runs one frame through `fastseg.Segmenter(model, device="cuda", precision=...)` while
`_conv_table.recording()` collects what `auto` asks the table, then times both backends of each
case on a fresh input, interleaved, and keeps the median of each (ARCHITECTURE.md, P2). cuDNN runs
with `torch.backends.cudnn.benchmark = True`, as a real-time loop would.

Needs a CUDA device and Triton >= 3.4 and installs nothing. Without them it says why and exits 2.
Prints one line per shape: the key, both medians and the verdict; then the Triton side under each tile
configuration of fastseg/ops/atrous_conv/tiles.py and under its rule (--tiles), flagged where the rule's pick is
more than RULE_SLACK slower than the best (those timings are kept in the table's "tiles").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

RULE_SLACK = 1.10  # the tile rule may cost this much over the best configuration before it is flagged


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--models", default="deeplabv3_resnet50,deeplabv3plus_resnet50,fcn_resnet50")
    parser.add_argument("--sizes", default="360x480,1024x2048")
    parser.add_argument("--precisions", default="fp16,fp32")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--margin", type=float, default=1.05)
    parser.add_argument("--tiles", action="store_true")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    args.precisions = [p for p in args.precisions.split(",") if p]
    return args


def missing_gpu() -> str | None:
    """Why this machine cannot record a table (None when it can)."""
    import torch

    from fastseg.ops._dispatch import triton_interpreted
    from fastseg.ops._triton_support import triton_problem

    if not torch.cuda.is_available():
        return "no CUDA device on this machine"
    if triton_interpreted():
        return "TRITON_INTERPRET is set: the Triton kernels would run in the CPU interpreter"
    problem = triton_problem()
    return None if problem is None else f"the Triton kernels {problem}"


def time_sides(case, sides: dict, reps: int) -> dict[str, float]:
    """Median milliseconds of each side (a name -> function of a fresh input), interleaved."""
    import torch

    x = torch.randn(case.x_shape, device="cuda").to(case.dtype)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runs: dict[str, list[float]] = {side: [] for side in sides}
    with torch.no_grad():
        for run in sides.values():  # compile the kernel, let cuDNN pick its algorithm
            for _ in range(2):
                run(x)
        for _ in range(reps):
            for side, run in sides.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run(x)
                end.record()
                end.synchronize()
                runs[side].append(start.elapsed_time(end))
    return {side: statistics.median(times) for side, times in runs.items()}


def time_case(case, reps: int) -> dict[str, float]:
    """Median milliseconds of case.run on a fresh input, "triton" and "reference" (cuDNN) interleaved."""
    return time_sides(case, {side: (lambda x, b=backend: case.run(x, b))
                             for side, backend in {"triton": "triton", "cudnn": "reference"}.items()}, reps)


def time_tiles(case, reps: int) -> dict[str, float]:
    """The Triton side under each GPU tile configuration (fastseg/ops/atrous_conv/tiles.py, forced) and
    under the rule ("rule"): where the rule's time is well above the best, the rule needs changing."""
    from fastseg.ops.atrous_conv import tiles

    def forced(name):
        def run(x):
            with tiles.forced(name):
                case.run(x, "triton")
        return run

    sides = {name: forced(name) for name in tiles.GPU_TILES}
    sides["rule"] = lambda x: case.run(x, "triton")
    return time_sides(case, sides, reps)


def collect_cases(models: list[str], sizes: list[tuple[int, int]], precisions: list[str]) -> dict:
    """Every convolution the Segmenter's `auto` asks the table about, by key."""
    import numpy as np
    import torch

    import fastseg
    from fastseg.ops import _conv_table

    cases: dict = {}
    for name in models:
        for precision in precisions:
            seg = fastseg.Segmenter(name, device="cuda", precision=precision, num_classes=21)
            for h, w in sizes:
                frame = np.zeros((h, w, 3), dtype=np.uint8)
                with _conv_table.recording() as asked, torch.no_grad():
                    seg.predict(frame)
                cases.update(asked)
            del seg
            torch.cuda.empty_cache()
    return cases


def gpu_entry(timings: dict[str, dict[str, float]], margin: float, tile_timings: dict | None = None) -> dict:
    """This GPU's entry of the table: the keys where Triton wins by `margin`, every timing, and each
    tile configuration's time next to the rule's."""
    import torch
    import triton

    wins = sorted(key for key, t in timings.items() if t["cudnn"] >= margin * t["triton"])
    return {"triton_wins": wins,
            "timings": {key: {"triton_ms": t["triton"], "cudnn_ms": t["cudnn"]} for key, t in sorted(timings.items())},
            "tiles": tile_timings or {}, "margin": margin, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_table(path: Path, device_name: str, entry: dict) -> None:
    """Replace this GPU's entry of the table at `path`, keeping the others, atomically."""
    from fastseg import _atomic
    from fastseg.ops import _conv_table

    table = _conv_table.read_table(path)
    table["gpus"][device_name] = entry
    _atomic.write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = missing_gpu()
    if why is not None:
        print(f"conv_table: {why}; no table recorded", file=sys.stderr)
        return 2
    import torch

    from fastseg.ops import _conv_table

    torch.backends.cudnn.benchmark = True
    out = args.out or _conv_table.table_path()
    cases = collect_cases(args.models, args.sizes, args.precisions)
    timings, tile_timings = {}, {}
    for key, case in cases.items():
        timings[key] = time_case(case, args.reps)
        t = timings[key]
        verdict = "triton" if t["cudnn"] >= args.margin * t["triton"] else "cudnn"
        print(f"{key}: triton {t['triton']:.3f} ms, cudnn {t['cudnn']:.3f} ms -> {verdict}", flush=True)
        if not args.tiles:
            continue
        tile_timings[key] = time_tiles(case, args.reps)
        best = min((name for name in tile_timings[key] if name != "rule"), key=tile_timings[key].get)
        ratio = tile_timings[key]["rule"] / tile_timings[key][best]
        print(f"  tiles: rule {tile_timings[key]['rule']:.3f} ms, best {best} {tile_timings[key][best]:.3f} ms"
              + (f" -> RULE SLOWER BY {ratio:.2f}x" if ratio > RULE_SLACK else ""), flush=True)
    device_name = torch.cuda.get_device_name()
    entry = gpu_entry(timings, args.margin, tile_timings)
    write_table(out, device_name, entry)
    _conv_table.reload()
    print(f"conv_table: {len(entry['triton_wins'])} of {len(cases)} shapes to Triton on {device_name}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
