"""An int8 graph written by `fastseg quantize` (`fastseg.quantize`), as the Segmenter's model.

The Segmenter needs of a model only its normalisation (mean, std), output stride, align_corners and
class count around the network; a quantized file carries them as ONNX metadata, so a
`QuantizedGraph` stands in for the model and the runtimes run its graph. A quantized graph always
runs in int8; precision="int8" with a model as trained finds its graph (the packaged model's file
beside its weights) or says how to make one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

SUFFIX = ".int8.onnx"


class QuantizedGraph(nn.Module):
    """A fastseg int8 ONNX file: the metadata the pipeline reads, and the graph's path."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.path = os.fspath(path)
        meta = read_metadata(self.path)
        self.mean, self.std = tuple(meta["mean"]), tuple(meta["std"])
        self.output_stride = int(meta["output_stride"])
        self.align_corners = bool(meta["align_corners"])
        self.num_classes = int(meta["num_classes"])
        self.config = meta.get("config")
        self.source = meta.get("source", "")
        self.source_sha256 = meta.get("source_sha256")
        self.reduce_range = bool(meta.get("reduce_range", False))  # 7-bit weights (files before it: no)

    def forward_logits(self, x):
        raise TypeError(f"{self.path} is an ONNX graph: it runs in the onnxruntime or openvino runtime")

    def extra_repr(self) -> str:
        return f"path={self.path!r}, classes={self.num_classes}"


def is_quantized_file(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(".onnx") and os.path.isfile(path)


def read_metadata(path: str) -> dict:
    """The fastseg entry of an ONNX file's metadata; ValueError naming the file when it has none."""
    import onnx

    from ..quantize import METADATA_KEY

    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable ONNX file ({exc})") from exc
    entries = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise ValueError(f"{path}: an ONNX file without fastseg's metadata; write int8 graphs with "
                         f"`fastseg quantize MODEL --calib DIR --output FILE`")
    meta = json.loads(entries[METADATA_KEY])
    missing = [k for k in ("mean", "std", "output_stride", "align_corners", "num_classes") if k not in meta]
    if missing:
        raise ValueError(f"{path}: fastseg metadata lacks {', '.join(missing)}")
    return meta


def unsigned_activations(path: str) -> bytes:
    """The int8 graph at `path` with its activations stored as uint8 around zero point 128 instead of
    int8 around 0: the same scales, so every dequantized value is identical (q_u8 = q_s8 + 128, and
    the ranges [-128, 127] and [0, 255] map onto each other). Weights stay int8. OpenVINO needs this
    form: it misreads signed activations (most labels of a test model change), and runs this one
    with the labels ONNX Runtime gives for the original."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    values = {t.name: t for t in proto.graph.initializer}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    weights = {n.input[2] for n in qdq if n.input[0] in values}  # zero points of stored (weight) tensors
    for name in {n.input[2] for n in qdq} - weights:
        zero = values.get(name)
        if zero is None or zero.data_type != onnx.TensorProto.INT8:
            continue
        shifted = numpy_helper.to_array(zero).astype(np.int16) + 128
        zero.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    return proto.SerializeToString()


def packaged_int8_path(weights: str | os.PathLike) -> Path:
    """Where a packaged model's int8 graph lives: beside its weights, same stem."""
    p = Path(weights)
    return p.with_name(p.name.removesuffix(p.suffix) + SUFFIX)


def int8_model(model: nn.Module, packaged_weights: str | os.PathLike | None) -> QuantizedGraph:
    """The int8 graph to run for precision="int8": the model itself when it is one, the packaged
    model's shipped graph, else ValueError saying how to make one."""
    if isinstance(model, QuantizedGraph):
        return model
    if packaged_weights is not None and packaged_int8_path(packaged_weights).is_file():
        from ..quantize import source_digest

        graph = QuantizedGraph(packaged_int8_path(packaged_weights))
        if graph.source_sha256 != source_digest(packaged_weights):  # weights retrained, graph not remade
            raise ValueError(f"precision: the packaged int8 graph {graph.path} was made from other weights than "
                             f"{packaged_weights}; remake it with `fastseg quantize --calib FRAMES_DIR --output "
                             f"{graph.path}`")
        return graph
    raise ValueError(f"precision: int8 runs a quantized graph, and {type(model).__name__} has none; write one with "
                     f"`fastseg quantize MODEL --calib FRAMES_DIR --output model{SUFFIX}` (fastseg.quantize) "
                     f"and pass that file as the model")
