"""The ONNX graph of a model's `forward_logits`, exported once and kept on disk.

Fusing and exporting take seconds, far longer than opening the graph, so the "onnxruntime" runtime
keeps each export in the cache folder under a key that hashes everything the graph depends on: the
weights, the module tree, the source files of its module classes and of fastseg's models, ops and
exporter (what fusing and exporting run), the export options, and the torch and fastseg versions.
A cache hit needs neither the fused model nor the exporter. A changed model is a new key, never a
stale graph. Entries are written atomically; an entry that fails to open is removed and rebuilt.
When the folder cannot be written the graph is exported in memory, as if there were no cache.

The folder is $FASTSEG_CACHE, else $XDG_CACHE_HOME/fastseg, else ~/.cache/fastseg; entries are
`onnx/logits-<key>.onnx` and may be deleted at any time.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from .._atomic import atomic_write

T = TypeVar("T")
FORMAT = 1              # bump when the way entries are made changes
EXAMPLE_SIZE = (64, 96)  # the size traced with; the graph takes any size (dynamic axes)


def cache_dir() -> Path:
    if os.environ.get("FASTSEG_CACHE"):
        return Path(os.environ["FASTSEG_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "fastseg"
    return Path.home() / ".cache" / "fastseg"


def entry_path(model: nn.Module) -> Path:
    """Where the logits graph of `model` is (or will be) cached."""
    return cache_dir() / "onnx" / f"logits-{graph_key(model)}.onnx"


def load_logits_graph(model: nn.Module, open_graph: Callable[[str | bytes], T]) -> T:
    """open_graph(path or bytes of the ONNX graph of `model.forward_logits`), from the cache when
    it holds the graph, else exported now (and cached)."""
    path = entry_path(model)
    if path.is_file():
        try:
            return open_graph(os.fspath(path))
        except Exception as exc:  # a damaged entry (truncated by a full disk, overwritten, ...)
            warnings.warn(f"fastseg: the cached ONNX graph {path} does not open ({exc}); rebuilding it",
                          RuntimeWarning, stacklevel=2)
            with contextlib.suppress(OSError):
                path.unlink()
    graph = _export(model)
    with contextlib.suppress(OSError):  # a read-only or missing cache folder: run without a cache
        with atomic_write(path) as f:
            f.write(graph)
    return open_graph(graph)


def graph_key(model: nn.Module) -> str:
    from .. import __version__
    from ..export import DEFAULT_OPSET

    h = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            h.update(str(part).encode())
            h.update(b"\0")

    add(FORMAT, __version__, torch.__version__, DEFAULT_OPSET, EXAMPLE_SIZE, repr(model))
    add(json.dumps(getattr(model, "config", None), sort_keys=True, default=str))
    code = {_source_file(type(m)) for m in model.modules()} | _graph_code()
    for source in sorted(code - {None}):
        add(source, _file_digest(source))
    for name, t in model.state_dict().items():
        add(name, t.dtype, tuple(t.shape))
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def _export(model: nn.Module) -> bytes:
    from ..export import export_logits_onnx

    buffer = io.BytesIO()
    export_logits_onnx(model, buffer, example_size=EXAMPLE_SIZE)
    return buffer.getvalue()


def _graph_code() -> set[str]:
    """fastseg's source files that fusing and exporting run: models/, ops/ (with the Triton kernels), export.py."""
    package = Path(__file__).resolve().parents[1]
    files = {package / "export.py"}
    for folder in ("models", "ops"):
        files.update((package / folder).rglob("*.py"))
    return {os.fspath(f) for f in files}


def _source_file(obj) -> str | None:
    with contextlib.suppress(TypeError, OSError):
        return inspect.getsourcefile(obj)
    return None


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"
