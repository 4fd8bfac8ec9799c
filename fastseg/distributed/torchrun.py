"""Work split over processes started by torchrun: one process per rank, each with its own share.

    ctx = Workers.from_env(device="cpu")   # torchrun's variables, or a single process without them
    mine = ctx.shard(range(len(dataset)))  # rank::world_size
    ... each rank does its share ...
    meter.all_reduce()                     # ConfusionMatrix sums over the ranks (collective)
    ctx.sum(tensor)                        # any other per-rank counts
    if ctx.is_main: print / write
    ctx.close()

Processes on one machine share its cores: each rank sets torch's thread count to cores / local world
size, so that N ranks do not run N x cores OpenMP threads against each other. Backend: gloo for the
CPU, NCCL for CUDA (each rank on cuda:LOCAL_RANK).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch


class PeerFailed(RuntimeError):
    """Another rank failed in a block run `together`."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class Workers:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialised: bool = False  # this object started torch.distributed (and close() ends it)

    @classmethod
    def from_env(cls, device="cpu", threads: int | None = None, timeout_s: float = 1800) -> Workers:
        """Join the process group that torchrun's environment describes (single process without it)
        and set torch's thread count: `threads`, else cores / local world size under torchrun."""
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local_rank = _env_int("LOCAL_RANK", 0)
        local_world = _env_int("LOCAL_WORLD_SIZE", world)
        if not 0 <= rank < world:
            raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and world > 1:
            device = torch.device("cuda", local_rank)  # one GPU per local rank
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        elif world > 1:
            torch.set_num_threads(max(1, available_cores() // max(1, local_world)))
        ctx = cls(rank, world, local_rank, local_world, device)
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                backend = "nccl" if device.type == "cuda" else "gloo"
                # MASTER_ADDR / MASTER_PORT come from torchrun (env:// rendezvous)
                dist.init_process_group(backend, rank=rank, world_size=world,
                                        timeout=timedelta(seconds=timeout_s))
                ctx.initialised = True
        return ctx

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items) -> list:
        """This rank's share: every world_size-th item from its rank (sizes differ by at most one)."""
        return list(items)[self.rank::self.world_size]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over the ranks (a collective: every rank calls it); itself alone."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        t = values.to(self.device) if dist.get_backend() == "nccl" else values.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.to(values.device)

    @contextlib.contextmanager
    def together(self, what: str):
        """A block every rank runs; when it raises on any rank, it raises on every rank (there as
        PeerFailed), so that no rank is left waiting for the others in a later collective."""
        try:
            yield
        except BaseException:
            self.sum(torch.ones(1))
            raise
        if self.sum(torch.zeros(1)).item() > 0:
            raise PeerFailed(f"{what} failed in another process (see its error above)")

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False
