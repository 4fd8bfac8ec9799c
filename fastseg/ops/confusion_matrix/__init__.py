"""Confusion matrix of two integer label maps: the public function and its dispatch (the
specification is naive.py's `reference`).

    cm = confusion_matrix(pred, target, num_classes, ignore_index=255, backend="auto")

cm[t, p] counts the pixels whose ground truth (target) is t and whose prediction is p: rows are
ground truth, columns prediction, int64 [C, C]. A pixel whose target equals ignore_index is skipped
whole (its prediction is neither counted nor checked); ignore_index=None skips nothing. Any other
value outside [0, C), in pred or in target, raises ValueError naming the argument and the value.

pred and target: any integer dtype (not bool), any shape as long as both match, any strides
(non-contiguous views and read-only numpy arrays work). torch tensors, numpy arrays or DLPack
arrays (CuPy); the result is of pred's kind, on pred's device.

Backends: "reference" (torch.bincount), "native" (C++ on CPU tensors, CUDA C++ on CUDA tensors),
"triton" (CUDA tensors; CPU tensors too under TRITON_INTERPRET=1); "auto" picks by device (on CUDA,
triton, or native where Triton is missing).
"""
from __future__ import annotations

import operator

import torch

from ... import _arrays, _native
from .._dispatch import Op, resolve
from .naive import raise_out_of_range, reference

OP = Op("confusion_matrix", native_cuda=True)

# dtypes the native kernel reads as they are; other integer dtypes (uint16/32/64) are widened.
_NATIVE_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}
_INTEGER_DTYPES = _NATIVE_DTYPES | {
    getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name)}


def _as_int(value, name: str, allow_none: bool = False):
    """value as a Python int (numpy integers accepted), or a TypeError naming the argument."""
    if value is None and allow_none:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        kinds = "an int or None" if allow_none else "an int"
        raise TypeError(f"{OP.name}: {name} must be {kinds}, got {type(value).__name__}") from None


def _check(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> None:
    if num_classes < 1:
        raise ValueError(f"{OP.name}: num_classes must be at least 1, got {num_classes}")
    if ignore_index is not None and not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"{OP.name}: ignore_index must fit in int64, got {ignore_index}")
    for name, x in (("pred", pred), ("target", target)):
        if x.dtype not in _INTEGER_DTYPES:
            raise TypeError(f"{OP.name}: {name} must hold integer labels (uint8, int16, int32, int64, ...), "
                            f"got {x.dtype}")
    if pred.shape != target.shape:
        raise ValueError(f"{OP.name}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"{OP.name}: pred and target are empty (shape {tuple(pred.shape)}): no pixel to count")
    if pred.device != target.device:
        raise ValueError(f"{OP.name}: pred is on {pred.device} but target on {target.device}")


def _native_run(pred: torch.Tensor, target: torch.Tensor, C: int, ignore_index) -> torch.Tensor:
    if pred.dtype not in _NATIVE_DTYPES:
        pred = pred.to(torch.int64)
    if target.dtype not in _NATIVE_DTYPES:
        target = target.to(torch.int64)
    out = torch.zeros(C, C, dtype=torch.int64)
    bad_pred, bad_target = _native.ext().confusion_matrix(
        _native.buf(pred), _native.buf(target), C, ignore_index is not None,
        0 if ignore_index is None else ignore_index,
        _native.buf(out), _native.num_threads(), own_threads=_native.use_own_threads())
    if bad_pred or bad_target:
        raise_out_of_range(pred, target, C, ignore_index)
    return out


# The Triton kernel's pair index t * C + p is int32: C * C < 2^31.
TRITON_MAX_CLASSES = 46340


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255,
                     backend: str = "auto"):
    """[C, C] int64 confusion matrix, rows = ground truth (target), columns = prediction.

    See the module docstring for the full contract. The triton backend counts at most
    TRITON_MAX_CLASSES classes ("auto" takes another backend beyond). An out-of-range label raises
    from this call: on CUDA that is one read of two flags after the kernel (ConfusionMatrix.update,
    which accumulates, defers it to when its matrix is read and so never waits).
    """
    p, t, kind, num_classes, ignore_index = _arguments(pred, target, num_classes, ignore_index)
    out, flags = count(p, t, num_classes, ignore_index, backend)
    if flags is not None and bool(flags.any()):
        raise_out_of_range(p, t, num_classes, ignore_index)
    return _arrays.from_torch(out, kind)


def _arguments(pred, target, num_classes, ignore_index):
    num_classes = _as_int(num_classes, "num_classes")
    ignore_index = _as_int(ignore_index, "ignore_index", allow_none=True)
    p, kind = _arrays.to_torch(pred, "pred")
    t, _ = _arrays.to_torch(target, "target")
    _check(p, t, num_classes, ignore_index)
    return p, t, kind, num_classes, ignore_index


def count(p: torch.Tensor, t: torch.Tensor, num_classes: int, ignore_index: int | None,
          backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(counts int64 [C, C], flags) of validated torch label maps, without waiting for a GPU.

    flags is None when the counting already raised for an out-of-range label (the CPU backends);
    otherwise a 2-element integer tensor on the maps' device, non-zero at [0] when pred and at [1]
    when target held a value outside [0, C) at a counted pixel, to be read when convenient (the
    counts then leave those pixels out)."""
    too_many = (f"the Triton kernel counts at most {TRITON_MAX_CLASSES} classes, got {num_classes}"
                if num_classes > TRITON_MAX_CLASSES else None)
    which = resolve(OP, backend, p.device, triton_refuses=too_many)
    if which == "native" and p.device.type == "cuda":
        from .cuda_kernel import confusion_matrix_cuda

        return confusion_matrix_cuda(p, t, num_classes, ignore_index)
    if which == "native":
        return _native_run(p, t, num_classes, ignore_index), None
    if which == "triton":
        from .triton_kernel import confusion_matrix as triton_confusion_matrix

        return triton_confusion_matrix(p, t, num_classes, ignore_index)
    return reference(p, t, num_classes, ignore_index), None
