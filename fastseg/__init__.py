"""fastseg: a semantic-segmentation inference engine with fused CPU/GPU kernels.

    import fastseg
    labels = fastseg.ops.upsample_argmax(logits, size=(H, W))
    cm = fastseg.metrics.confusion_matrix(pred, target, num_classes)
"""
import importlib

import torch  # noqa: F401  (loaded before fastseg._C so one OpenMP runtime serves both)

__version__ = "0.1.0"

_LAZY = {"ops", "metrics", "crf", "models", "data", "training", "export"}


def __getattr__(name):
    # Submodules load on first use so `import fastseg` stays cheap (no triton, no model code).
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "Segmenter":
        from .segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'fastseg' has no attribute {name!r}")
