"""Device memory for fastseg._C's CUDA code, from torch's caching allocator.

fastseg._C links no torch (ARCHITECTURE.md, P3), so its CUDA code asks Python for its workspace:
`allocate(nbytes) -> address` and `release(address)` (csrc/cuda/workspace.h). Each block is a uint8
tensor made on the stream the work is queued on, so torch pools and counts fastseg's memory with its
own (`torch.cuda.memory_allocated`, `empty_cache`, its OOM handling) and reuses a released block in
that stream's order: the C++ side frees without waiting for the device, and a CUDA graph capture sees
no cudaMalloc / cudaFree.
"""
from __future__ import annotations

import contextlib

import torch


class TorchDeviceMemory:
    """Blocks handed to one native call; whatever the call did not give back goes with this object."""

    def __init__(self, device: torch.device, stream: torch.cuda.Stream | None = None):
        self.device = torch.device(device)
        self.stream = stream
        self._blocks: dict[int, torch.Tensor] = {}

    def allocate(self, nbytes: int) -> int:
        place = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with place:
            block = torch.empty(int(nbytes), dtype=torch.uint8, device=self.device)
        address = block.data_ptr()
        self._blocks[address] = block
        return address

    def release(self, address: int) -> None:
        del self._blocks[address]

    def held_bytes(self) -> int:
        """Bytes handed out and not yet released."""
        return sum(b.numel() for b in self._blocks.values())
