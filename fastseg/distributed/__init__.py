"""Work over several processes or machines.

- `torchrun` (torchrun.py): `fastseg eval` sharded over a fixed set of processes started by torchrun,
  the confusion matrices all-reduced. `Workers`, `PeerFailed`, `available_cores` live there.
- Ray (ray_*.py, optional: `pip install fastseg-engine[ray]`): `fastseg predict / eval --ray`, and
  `predict_dataset`, a Ray Dataset of images in, the same rows with their labels out, run by a pool
  of actors that each hold one Segmenter. Ray is imported only when one of these runs.
"""
from __future__ import annotations

from .ray_dataset import predict_dataset
from .torchrun import PeerFailed, Workers, available_cores

__all__ = ["PeerFailed", "Workers", "available_cores", "predict_dataset"]
