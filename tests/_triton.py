"""What the Triton tests share: when they can run, and the ahead-of-time compile of a kernel.

Triton decides at import whether its kernels are interpreted (TRITON_INTERPRET=1), for the whole
process. The root conftest.py turns the interpreter on where there is no GPU. Tests of Triton kernels
on CPU tensors therefore run only where the interpreter is on (marker `interpreter`, added by
tests/conftest.py to every test parametrised with backend="triton"); tests on CUDA tensors (marker
`gpu`) only where a GPU is present and the interpreter is off. On a GPU machine both halves run, in
two invocations: `pytest tests` (GPU tests) and `TRITON_INTERPRET=1 pytest tests` (interpreter tests).
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastseg.ops._dispatch import triton_interpreted
from fastseg.ops._triton_support import triton_problem

INTERPRETER_OFF = ("runs Triton kernels on CPU tensors, which needs TRITON_INTERPRET=1; it is off in this "
                   "process (a GPU machine: the `gpu` tests run the kernels on CUDA; run "
                   "`TRITON_INTERPRET=1 pytest` for these)")


def gpu_skip_reason() -> str | None:
    """Why the GPU tests cannot run in this process (None when they can)."""
    if not torch.cuda.is_available():
        return "needs a CUDA device, and this machine has none"
    if triton_interpreted():
        return "TRITON_INTERPRET is on in this process: Triton kernels would run in the CPU interpreter"
    problem = triton_problem()
    return None if problem is None else f"the Triton kernels {problem}"


requires_gpu = pytest.mark.skipif(gpu_skip_reason() is not None, reason=gpu_skip_reason() or "")


def compile_shipped_config(kernel: str, dtype: torch.dtype, arch: int, precision: str, tiles: str | None = None,
                           **constants) -> str:
    """Lower the conv `kernel` ("module:function") for sm_<arch> with the GPU tile configuration that
    ships (launch_config's "gpu" for a large map with 256 channels in and out, or the named
    configuration of fastseg/ops/atrous_conv/tiles.py for those channels) through
    tests/compile_for_gpu.py, in a process of its own with the interpreter off; returns the dot
    instruction it printed ("mma" for tensor cores, "fma" otherwise)."""
    from fastseg.ops.atrous_conv.tiles import gpu_tiles, launch_config

    cfg = gpu_tiles(tiles, dtype, 256, 256) if tiles else launch_config(dtype, 1 << 20, 256, 256, "gpu")
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    module, name = kernel.split(":")
    takes = getattr(importlib.import_module(module), name).arg_names
    full = {k: 1 for k in ("CIN_FULL", "TAP_BITS") if k in takes}  # 256 channels, a 3x3 kernel
    args = [f"{k}={v}" for k, v in {**full, **constants, **cfg, "UPCAST": 0, "PRECISION": precision}.items()]
    script = Path(__file__).with_name("compile_for_gpu.py")
    result = subprocess.run([sys.executable, str(script), kernel, names[dtype], str(arch), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[0]


def record_launches(monkeypatch, run: bool = True) -> list[tuple[str, tuple[int, ...], dict]]:
    """Every launch through fastseg.ops._launch from now on, as (kernel name, grid, meta-parameters);
    run=False records without running the kernel (grids of outputs too large to compute here)."""
    from fastseg.ops import _launch

    launches: list[tuple[str, tuple[int, ...], dict]] = []
    real = _launch._run

    def spy(kernel, grid, args, meta):
        launches.append((kernel.__name__, grid, dict(meta)))
        if run:
            real(kernel, grid, args, meta)

    monkeypatch.setattr(_launch, "_run", spy)
    return launches
