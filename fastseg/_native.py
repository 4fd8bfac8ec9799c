"""Access to the compiled extension `fastseg._C` and the raw-buffer convention it uses.

`fastseg._C` is torch-free: it takes (address, shape, strides-in-elements, DType) tuples, the DType
being a member of the extension's own enum `fastseg._C.DType`. Python keeps the tensors alive for
the duration of the call; the extension releases the GIL while it computes.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings

import torch

from . import _target


class WrongCPU(ImportError):
    """fastseg._C was compiled for instructions this CPU does not have."""


def _load():
    """fastseg._C, or None and the reason. The CPU check comes first: loading a _C built for
    instructions this CPU lacks would end the process with SIGILL (fastseg/_target.py)."""
    try:
        from . import _cpu
    except ImportError as exc:
        return None, exc
    target = _target.built_target(_cpu)
    missing = _target.missing_features(target, _cpu)
    if missing:
        return None, WrongCPU(_target.refusal(target, missing))
    try:  # torch is imported first: its bundled libgomp is then the one OpenMP runtime in this process
        from . import _C
    except ImportError as exc:
        return None, exc
    return _C, None


_C, _IMPORT_ERROR = _load()
if isinstance(_IMPORT_ERROR, WrongCPU):
    # said once at import: every native op then refuses with this message, and "auto" backends
    # run their references
    warnings.warn(str(_IMPORT_ERROR), RuntimeWarning, stacklevel=2)


def available() -> bool:
    return _C is not None


def ext():
    """The extension module, or a clear error saying how to build it."""
    if isinstance(_IMPORT_ERROR, WrongCPU):
        raise RuntimeError(str(_IMPORT_ERROR))
    if _C is None:
        raise RuntimeError(
            "fastseg._C (the native extension) is not built; reinstall with "
            f"`pip install --no-build-isolation -e .` (cause: {_IMPORT_ERROR})"
        )
    return _C


def has_cuda() -> bool:
    return _C is not None and bool(_C.has_cuda)


def num_threads() -> int:
    """Native CPU kernels use as many threads as torch does: one thread budget for the process."""
    return max(1, torch.get_num_threads())


_OWN_THREADS = contextvars.ContextVar("fastseg_native_own_threads", default=False)


@contextlib.contextmanager
def own_threads():
    """Native kernels called inside run on threads that exit when the call returns instead of on
    OpenMP's pool, whose workers spin for milliseconds after each region. For work between the runs
    of another thread pool (ONNX Runtime), which those spinning workers would slow (csrc/common/threads.h)."""
    token = _OWN_THREADS.set(True)
    try:
        yield
    finally:
        _OWN_THREADS.reset(token)


def use_own_threads() -> bool:
    return _OWN_THREADS.get()


_DTYPES: dict = {}


def dtype_of(dtype: torch.dtype):
    """The fastseg._C.DType member of a torch dtype (same name), or a TypeError naming it."""
    member = _DTYPES.get(dtype)
    if member is None:
        member = getattr(ext().DType, str(dtype).removeprefix("torch."), None)
        if member is None:
            raise TypeError(f"fastseg._C takes no {dtype} buffers")
        _DTYPES[dtype] = member
    return member


def buf(t: torch.Tensor) -> tuple:
    """The (address, shape, strides, DType) descriptor that fastseg._C reads a tensor through."""
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), dtype_of(t.dtype))
