"""The one backend choice of every op: "reference" (plain PyTorch, the op's naive.py), "native" (CPU
tensors: fastseg's C++ extension, or torch's own CPU kernels where the op says so; CUDA tensors too
for ops with CUDA C++ kernels compiled ahead of time into the extension), "triton" (CUDA tensors;
CPU tensors too under TRITON_INTERPRET=1). "auto" picks by device: on CUDA, triton, or the CUDA C++
kernels where Triton is missing (Jetson's PyTorch builds often have none).

Each op declares once what it has (`Op`); `resolve` turns a backend request into the backend that
runs, or a clear error naming the op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .. import _native
from . import _triton_support

BACKENDS = ("auto", "reference", "triton", "native")


@dataclass(frozen=True)
class Op:
    name: str
    triton: bool = True                    # has a Triton kernel
    native_needs_extension: bool = True    # False: "native" runs on torch's CPU kernels when fastseg._C is absent
    native_cuda: bool = False              # "native" also takes CUDA tensors (csrc/cuda/, when _C has CUDA)


def triton_interpreted() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1): CPU tensors may use triton then."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> bool:
    """True when the triton package is installed and at least _triton_support.TRITON_MIN."""
    return _triton_support.triton_problem() is None


def resolve(op: Op, backend: str, device: torch.device, *, native_refuses: str | None = None,
            triton_refuses: str | None = None) -> str:
    """The backend to run `op` on tensors living on `device`.

    native_refuses / triton_refuses: why that kernel cannot take these particular arguments (None when
    it can): "auto" then falls back to the reference, and asking for that backend by name raises
    ValueError with the reason. On CUDA, "auto" running the reference because Triton is missing or
    too old says so once per op (a RuntimeWarning, _triton_support.warn_fallback).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op.name}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and op.triton and triton_refuses is None and triton_available():
            return "triton"
        if device.type == "cuda" and op.native_cuda and native_refuses is None and _native.has_cuda():
            return "native"
        if device.type == "cpu" and native_refuses is None and (
                _native.available() or not op.native_needs_extension):
            return "native"
        if device.type == "cuda" and op.triton and triton_refuses is None:
            _triton_support.warn_fallback(op.name)
        return "reference"
    if backend == "native":
        if device.type == "cuda" and op.native_cuda:
            if not _native.has_cuda():
                raise RuntimeError(f"{op.name}: backend='native' on CUDA tensors needs fastseg._C built with its "
                                   "CUDA kernels (nvcc at build time, FASTSEG_CUDA=on)")
        elif device.type != "cpu":
            raise ValueError(f"{op.name}: backend='native' runs on CPU tensors, got a {device.type} tensor")
        if native_refuses is not None:
            raise ValueError(f"{op.name}: {native_refuses}")
        if op.native_needs_extension:
            _native.ext()  # raises a clear error when the extension is missing
    if backend == "triton":
        if not op.triton:
            raise ValueError(f"{op.name}: has no triton backend (it has 'reference' and 'native')")
        if not triton_available():
            raise RuntimeError(f"{op.name}: backend='triton' {_triton_support.triton_problem() or 'cannot run here'}")
        if device.type != "cuda" and not triton_interpreted():
            raise ValueError(
                f"{op.name}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), "
                f"got a {device.type} tensor"
            )
        if triton_refuses is not None:
            raise ValueError(f"{op.name}: {triton_refuses}")
    return backend


def plain_inference(*tensors: torch.Tensor) -> bool:
    """True when a CPU fast path that bypasses torch's own ops may run: no autograd graph is wanted
    for these tensors, and nothing is tracing, exporting or compiling the call (those must see the
    plain torch ops)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())
