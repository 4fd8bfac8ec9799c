"""Backend choice shared by every fused op: reference (PyTorch), triton (CUDA tensors), native (C++, CPU)."""
from __future__ import annotations

import os

import torch

from .. import _native

BACKENDS = ("auto", "reference", "triton", "native")


def triton_interpreted() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1): CPU tensors may use triton then."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(backend: str, device: torch.device, op: str) -> str:
    """The backend to run `op` on tensors living on `device`; a clear error if that cannot work."""
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cuda":
            return "triton" if triton_available() else "reference"
        if device.type == "cpu":
            return "native" if _native.available() else "reference"
        return "reference"
    if backend == "native" and device.type != "cpu":
        raise ValueError(f"{op}: backend='native' runs on CPU tensors, got a {device.type} tensor")
    if backend == "native":
        _native.ext()  # raises a clear error when the extension is missing
    if backend == "triton":
        if not triton_available():
            raise RuntimeError(f"{op}: backend='triton' needs the triton package")
        if device.type != "cuda" and not triton_interpreted():
            raise ValueError(
                f"{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), "
                f"got a {device.type} tensor"
            )
    return backend


def plain_inference(*tensors: torch.Tensor) -> bool:
    """True when a CPU fast path that bypasses torch's own ops may run: no autograd graph is wanted
    for these tensors, and nothing is tracing, exporting or compiling the call (those must see the
    plain torch ops)."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())
