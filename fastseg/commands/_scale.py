"""--scale / --size, shared by the commands that run the Segmenter (fastseg.segmenter.scale)."""
from __future__ import annotations

import argparse


def add_scale_arguments(parser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scale", type=float, default=None,
                       help="run the network on each image resized by this factor; 1: at its own size "
                            "(default: resized towards the model's training size when the model knows it, "
                            "as the packaged one does; else 1)")
    group.add_argument("--size", type=_size, default=None, metavar="S|HxW",
                       help="run the network on each image resized to a short side of S pixels, or to "
                            "exactly HxW (default: as --scale says); labels are always at the image's size")


def scale_options(args) -> dict:
    """The Segmenter's keyword arguments for --scale / --size."""
    return {"scale": args.scale, "size": args.size}


def _size(text: str):
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected S (the short side) or HxW, positive integers, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])
