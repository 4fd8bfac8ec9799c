"""`fastseg quantize`: a model as a symmetric int8 QDQ ONNX graph, calibrated on real frames.

    fastseg quantize [MODEL] --calib FRAMES_DIR --output model.int8.onnx [--frames 64] [--no-reduce-range]
    fastseg predict photos/ --model model.int8.onnx           # or Segmenter("model.int8.onnx")

Weights int8 per output channel, activations int8 per tensor, both symmetric; activation ranges from
the frames in FRAMES_DIR (images of the model's own dataset, at the size it will run at).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._model import add_model_arguments, choose_model


def add_arguments(parser) -> None:
    add_model_arguments(parser, positional=True)
    parser.add_argument("--calib", required=True, type=Path,
                        help="a folder of real frames of the model's dataset (png / jpg), all of one size")
    parser.add_argument("--output", "-o", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument("--frames", type=int, default=64, help="calibration frames, spread over the folder")
    parser.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                        help="7-bit weights (default), safe on x86 CPUs without VNNI, whose 16-bit sums "
                             "saturate with 8-bit ones; --no-reduce-range: 8-bit weights, for VNNI / AMX only")


def run(args) -> int:
    from ..quantize import QuantizationError, calibration_frames, quantize

    if args.frames < 1:
        print("fastseg quantize: --frames must be >= 1", file=sys.stderr)
        return 2
    if not str(args.output).endswith(".onnx"):
        print(f"fastseg quantize: --output {args.output}: the file must end in .onnx", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        chosen = choose_model(args.model, args.num_classes, args.dataset)
        print(chosen.summary())
        frames = calibration_frames(args.calib, args.frames)
        if len({f.shape for f in frames}) > 1:
            raise QuantizationError(f"--calib {args.calib}: frames of several sizes; use frames of one size")
        quantize(chosen.model, frames, args.output, reduce_range=args.reduce_range, source=chosen.source)
    except (QuantizationError, ValueError, FileNotFoundError, TypeError) as exc:
        print(f"fastseg quantize: {exc}", file=sys.stderr)
        return 2
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB): int8 QDQ graph (weights per channel, activations from "
          f"{len(frames)} frames of {args.calib}), {time.perf_counter() - started:.0f} s; run it with "
          f"fastseg.Segmenter({str(args.output)!r}) or fastseg predict --model {args.output}")
    return 0
