"""Access to the compiled extension `fastseg._C` and the raw-buffer convention it uses.

`fastseg._C` is torch-free: it takes (address, shape, strides-in-elements) tuples. Python keeps the
tensors alive for the duration of the call; the extension releases the GIL while it computes.
"""
from __future__ import annotations

import contextlib
import contextvars

import torch

try:  # torch first: its bundled libgomp is then the one OpenMP runtime in this process
    from . import _C
except ImportError as exc:  # pragma: no cover - only on a broken install
    _C = None
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None


def available() -> bool:
    return _C is not None


def ext():
    """The extension module, or a clear error saying how to build it."""
    if _C is None:
        raise RuntimeError(
            "fastseg._C (the native extension) is not built; reinstall with "
            "`pip install --no-build-isolation -e .` (cause: %s)" % _IMPORT_ERROR
        )
    return _C


def has_cuda() -> bool:
    return _C is not None and bool(_C.has_cuda)


def num_threads() -> int:
    """Native CPU kernels use as many threads as torch does (DESIGN.md, principle 6)."""
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


def buf(t: torch.Tensor) -> tuple:
    """The (address, shape, strides) triple that fastseg._C reads a tensor through."""
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
