"""Whether this process can run fastseg's Triton kernels, and the one warning when CUDA work falls
back to the PyTorch reference because it cannot.

The floor is Triton 3.4, the oldest release tested (the kernels use nothing newer than its
language: relaxed atomics with `sem=`, `input_precision=` dots). torch >= 2.4 is allowed and its wheels
bring older Triton (torch 2.4 pins 3.0), so the floor is checked here at run time (the package's
`gpu` extra declares it too). A CUDA tensor whose op cannot use Triton runs the op's native CUDA
kernel in fastseg._C where the op has one, else the reference, with a warning once per op: that is
many times slower, and users should know why.
"""
from __future__ import annotations

import functools
import re
import threading
import warnings

TRITON_MIN = (3, 4)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as "3.4.0" or "3.5.0+git1a2b3c"."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


@functools.cache
def triton_problem() -> str | None:
    """Why fastseg's Triton kernels cannot run in this process (None when they can)."""
    try:
        import triton
    except ImportError:
        return "needs the triton package, which is not installed"
    version = getattr(triton, "__version__", "0")
    if version_tuple(version) < TRITON_MIN:
        floor = ".".join(map(str, TRITON_MIN))
        return f"needs triton >= {floor} (the oldest release tested with fastseg), found {version}"
    return None


def warn_fallback(op_name: str) -> None:
    """Warn, once per op and process, that CUDA tensors run `op_name`'s PyTorch reference because its
    Triton kernel cannot run here."""
    with _warned_lock:
        if op_name in _warned:
            return
        _warned.add(op_name)
    problem = triton_problem() or "cannot run in this process"
    warnings.warn(f"{op_name}: the Triton kernel {problem}; CUDA tensors run the PyTorch reference "
                  "instead, which is much slower (pip install 'triton>=3.4', or fastseg-engine[gpu])",
                  RuntimeWarning, stacklevel=3)
