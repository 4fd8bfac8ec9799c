"""The CUDA CRF's memory: taken from the caller's allocator (torch's caching allocator, through
fastseg._device_memory) and given back on every path, errors included (csrc/cuda/workspace.h).

Without a GPU the CUDA code still runs up to its first CUDA call, which fails for want of a driver:
enough to see that what it took before failing is given back, and that an allocator failing at any
point leaves nothing held either.
"""
from __future__ import annotations

import pytest
import torch

from fastseg import _native
from fastseg._device_memory import TorchDeviceMemory

pytestmark = pytest.mark.skipif(not _native.has_cuda(), reason="fastseg._C was built without its CUDA code")
no_gpu_only = pytest.mark.skipif(
    torch.cuda.is_available(),
    reason="the CUDA calls would run here on host pointers; tests/test_cuda_native_ops.py runs the CRF on the GPU")


class Refused(Exception):
    pass


def _run(allocate, release):
    ext = _native.ext()
    probs = torch.rand(1, 3, 8, 9)
    out = torch.empty_like(probs)
    terms = [ext.CrfTerm(use_xy=True, sx=3.0, sy=3.0, compat=3.0)]
    ext.densecrf(_native.buf(probs), False, terms, 2, _native.buf(out), None, ext.Rounding.half_even,
                 cuda_stream=0, device_allocate=allocate, device_release=release)


@no_gpu_only
def test_memory_comes_from_the_allocator_and_goes_back_when_cuda_fails():
    memory = TorchDeviceMemory(torch.device("cpu"))
    sizes = []

    def allocate(nbytes):
        sizes.append(nbytes)
        return memory.allocate(nbytes)

    with pytest.raises(RuntimeError, match=r"densecrf \(CUDA\)"):
        _run(allocate, memory.release)
    assert sizes, "nothing was taken from the allocator"
    assert memory.held_bytes() == 0


@no_gpu_only
@pytest.mark.parametrize("fail_at", [0, 1, 2, 3])
def test_an_allocator_failure_leaves_nothing_held(fail_at):
    memory = TorchDeviceMemory(torch.device("cpu"))
    taken = []

    def allocate(nbytes):
        if len(taken) == fail_at:
            raise Refused(f"allocation {fail_at}")
        taken.append(nbytes)
        return memory.allocate(nbytes)

    with pytest.raises(Refused):
        _run(allocate, memory.release)
    assert len(taken) == fail_at
    assert memory.held_bytes() == 0


def test_a_stream_without_an_allocator_is_refused():
    with pytest.raises(ValueError, match="device_allocate and device_release"):
        _run(None, None)


def test_torch_device_memory_keeps_blocks_alive_until_released():
    memory = TorchDeviceMemory(torch.device("cpu"))
    a = memory.allocate(100)
    b = memory.allocate(28)
    assert a != b and memory.held_bytes() == 128
    memory.release(a)
    assert memory.held_bytes() == 28
    with pytest.raises(KeyError):
        memory.release(a)
