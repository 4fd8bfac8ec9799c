"""Ray, the optional dependency: importing it with a message that says how to install it, and the
cluster a command runs on (an address given, or a local instance started for the command).

    with cluster(address=None, num_cpus=2):   # a local instance, shut down at the end
        ...ray.data...
    with cluster("auto"):                     # the cluster this machine belongs to (ray start)
    with cluster("ray://head:10001"):         # a remote cluster through Ray Client

When Ray is already initialised in this process (a notebook, a test), that instance is used and left
running.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

INSTALL = 'pip install "fastseg-engine[ray]"'


class RayMissing(RuntimeError):
    """Ray (with Ray Data) is not installed."""


def import_ray():
    """The `ray` module with `ray.data` loaded; RayMissing says how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the data extra: pyarrow, pandas)
    except ImportError as exc:
        raise RayMissing(f"--ray needs Ray with Ray Data: {INSTALL} (or pip install 'ray[data]'); "
                         f"{exc}") from None
    return ray


@contextlib.contextmanager
def cluster(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> Iterator:
    """Connect to `address`, or start a local instance with num_cpus / num_gpus (None: the machine's);
    yields the ray module. An instance this call started is shut down at the end, so no raylet is
    left running after a command."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                     "logging_level": "warning"}
    if address is None:
        options.update(num_cpus=num_cpus, num_gpus=num_gpus)
    ray.init(address=address, **options)
    quiet(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def local_cpus(args) -> int:
    """CPUs of a local instance: the machine's, or more when the workers ask for more."""
    from .torchrun import available_cores

    return max(available_cores(), math.ceil(args.workers * args.cpus_per_worker))


def local_gpus(args) -> int | None:
    """GPUs of a local instance: what the workers ask for (None: Ray counts the machine's)."""
    return math.ceil(args.workers * args.gpus_per_worker) or None


def quiet(ray) -> None:
    """No Ray Data progress bars or per-operator log lines: the commands print their own progress."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.verbose_stats_logs = False
