"""Static post-training INT8 quantization: a fastseg model as a symmetric int8 QDQ ONNX graph.

    fastseg.quantize.quantize(model, frames, "model.int8.onnx")     # frames: uint8 HWC images
    seg = fastseg.Segmenter("model.int8.onnx")                        # runs int8, fused tail after it

The graph is the model's `forward_logits` (fused: batch-norm folded), the same graph the fp32 ONNX
runtimes run, with QuantizeLinear / DequantizeLinear pairs around every convolution and matrix
multiply (QDQ: the form ONNX Runtime, OpenVINO and TensorRT all read):

- weights: int8, symmetric, one scale per output channel;
- activations: int8, symmetric, one scale per tensor, from the largest magnitude each tensor takes
  on the calibration frames (real frames of the model's dataset, normalised as the Segmenter does);
- the logits leave the graph in fp32, so fastseg's fused upsample + argmax after it is unchanged.

`reduce_range` (the default) stores weights in 7 bits: x86 CPUs without VNNI multiply uint8 by int8
with 16-bit saturating adds (vpmaddubsw), where two full-range products can overflow; 7-bit weights
cannot. A graph runs wherever it is copied to, so it is made safe for every CPU unless told otherwise:
on the previous default model 7-bit weights gave the same mIoU and speed as 8-bit ones on a VNNI CPU,
while 8-bit ones run in ONNX Runtime on an AVX2-only CPU lost 1.6 mIoU points (MODEL_CARD.md, INT8).

The file carries what the Segmenter needs besides the graph (mean, std, output stride,
align_corners, classes) as ONNX metadata (`fastseg.segmenter.quantized` reads it).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._atomic import atomic_write

__all__ = ["QuantizationError", "quantize", "calibration_frames", "METADATA_KEY", "IMAGE_SUFFIXES"]

METADATA_KEY = "fastseg"          # the ONNX metadata entry holding the JSON below
QUANTIZED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # what int8 pays for
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class QuantizationError(ValueError):
    """The model cannot be quantized: why, in one sentence."""


def calibration_frames(folder: str | os.PathLike, limit: int = 64) -> list[np.ndarray]:
    """Up to `limit` images of `folder` (sorted by name, spread evenly over the folder), uint8 HWC RGB."""
    from PIL import Image

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizationError(f"calibration folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    step = max(1, len(files) // max(1, limit))
    return [np.asarray(Image.open(p).convert("RGB")) for p in files[::step][:limit]]


def quantize(model: nn.Module, frames: Iterable[np.ndarray], output: str | os.PathLike, *,
             reduce_range: bool = True, source: str | os.PathLike = "") -> Path:
    """Write `model` as an int8 QDQ ONNX graph to `output` (atomically), its activations calibrated
    on `frames` (uint8 HWC images). QuantizationError when the model has nothing to quantize or
    cannot be exported; the frames must be of one size (the model's input size).
    source: the model's file, when it has one: its name and digest are recorded, so a graph made
    from other weights is recognised (`source_digest`)."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise QuantizationError("quantization needs onnxruntime (pip install fastseg-engine[onnx])") from exc
    from .export import export_logits_onnx

    frames = list(frames)
    if not frames:
        raise QuantizationError("no calibration frames")
    if not hasattr(model, "forward_logits"):
        raise QuantizationError(f"{type(model).__name__} is not a fastseg model (no forward_logits)")
    mean = np.asarray(model.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(model.std, dtype=np.float32).reshape(1, 3, 1, 1)

    class Frames(CalibrationDataReader):
        def __init__(self):
            self._frames: Iterator[np.ndarray] = iter(frames)

        def get_next(self):
            frame = next(self._frames, None)
            if frame is None:
                return None
            x = frame.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
            return {"image": np.ascontiguousarray((x - mean) / std)}

    with tempfile.TemporaryDirectory() as folder:
        fp32 = os.path.join(folder, "logits.onnx")
        try:
            export_logits_onnx(model, fp32)
        except Exception as exc:  # an op the exporter cannot trace
            raise QuantizationError(f"{type(model).__name__} cannot be exported to ONNX, so it cannot be "
                                    f"quantized: {exc}") from exc
        _require_quantizable(fp32, type(model).__name__)
        int8 = os.path.join(folder, "logits.int8.onnx")
        quantize_static(fp32, int8, Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        return _write_with_metadata(int8, output, _metadata(model, source, reduce_range))


def _require_quantizable(path: str, name: str) -> None:
    import onnx

    ops = {node.op_type for node in onnx.load(path).graph.node}
    if not ops & QUANTIZED_OPS:
        raise QuantizationError(f"{name} has no convolution or matrix multiply (its graph holds "
                                f"{', '.join(sorted(ops)) or 'no operators'}): int8 would quantize nothing")


def source_digest(path: str | os.PathLike) -> str:
    """sha256 of a model file, as recorded in the int8 graphs made from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _metadata(model: nn.Module, source: str | os.PathLike, reduce_range: bool = False) -> dict:
    net: Any = model  # a fastseg model: forward_logits, mean, std (not typed on nn.Module)
    with torch.no_grad():
        classes = int(net.forward_logits(torch.zeros((1, 3, 64, 64))).shape[1])
    is_file = bool(source) and os.path.isfile(source)
    return {"format": 1, "precision": "int8", "source": os.path.basename(os.fspath(source)),
            "source_sha256": source_digest(source) if is_file else None, "mean": [float(v) for v in net.mean],
            "std": [float(v) for v in net.std], "output_stride": int(getattr(net, "output_stride", 1)),
            "align_corners": bool(getattr(net, "align_corners", False)), "num_classes": classes,
            "config": getattr(net, "config", None), "reduce_range": bool(reduce_range)}


def _write_with_metadata(graph: str, output: str | os.PathLike, metadata: dict) -> Path:
    import onnx

    proto = onnx.load(graph)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=str)
    with atomic_write(output) as f:
        f.write(proto.SerializeToString())
    return Path(output)
