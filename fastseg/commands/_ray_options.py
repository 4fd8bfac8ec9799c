"""--ray [ADDRESS], --workers, --cpus-per-worker, --gpus-per-worker: `fastseg predict` and `fastseg eval`
run by a pool of Ray actors (fastseg/distributed/ray_*.py) instead of this process."""
from __future__ import annotations

import argparse
import os

LOCAL = "local"  # --ray without an address: a Ray instance started on this machine for the command


def add_ray_arguments(parser) -> None:
    group = parser.add_argument_group("Ray (pip install fastseg-engine[ray])")
    group.add_argument("--ray", nargs="?", const=LOCAL, default=None, type=_address, metavar="ADDRESS",
                       help="run on a Ray cluster with Ray Data: ADDRESS is auto (the cluster this machine "
                            "joined), HOST:PORT or ray://HOST:PORT; without one, a local instance started "
                            "for this command (default: no Ray)")
    group.add_argument("--workers", type=_positive_int, default=1,
                       help="Ray actors, each holding one Segmenter")
    group.add_argument("--cpus-per-worker", type=_positive_float, default=1.0,
                       help="CPUs Ray reserves for each worker (its torch threads unless --threads)")
    group.add_argument("--gpus-per-worker", type=_non_negative_float, default=0.0,
                       help="GPUs Ray reserves for each worker (with --device cuda)")


def ray_misuse(args) -> str | None:
    """Why the Ray options cannot be taken as given (None when they can): without --ray they would
    be ignored, and a user asking for 4 workers must not get one process silently."""
    given = (getattr(args, "workers", 1), getattr(args, "cpus_per_worker", 1), getattr(args, "gpus_per_worker", 0))
    if getattr(args, "ray", None) is None and given != (1, 1, 0):
        return "--workers, --cpus-per-worker and --gpus-per-worker need --ray"
    return None


def ray_address(value: str) -> str | None:
    """ray.init's address for --ray's value: None starts a local instance."""
    return None if value == LOCAL else value


def _address(text: str) -> str:
    # --ray takes an optional value, so an INPUT written right after it would be read as the address
    if text in (LOCAL, "auto") or text.startswith("ray://") or (":" in text and not os.path.exists(text)):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT); "
                                     "write --ray after the inputs, or --ray=ADDRESS")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value
