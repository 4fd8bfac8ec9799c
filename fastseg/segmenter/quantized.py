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


# Ops whose output is >= 0 wherever their data input(s) are (pooling, bilinear or nearest resizing,
# concatenating, adding, reshaping, and quantizing / dequantizing with the zero point at 0)
_SIGN_KEEPING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Resize", "Concat", "Add",
                 "Identity", "Reshape", "Flatten", "Transpose", "Slice", "Squeeze", "Unsqueeze",
                 "QuantizeLinear", "DequantizeLinear"}
_DATA_INPUTS = {"Resize": 1, "Slice": 1, "Reshape": 1, "Squeeze": 1, "Unsqueeze": 1, "QuantizeLinear": 1,
                "DequantizeLinear": 1}  # how many leading inputs are data (the rest: sizes, scales, axes)


def non_negative_tensors(graph) -> set[str]:
    """The tensors of an ONNX graph that are >= 0 by construction: a Relu's outputs, and what the
    sign-keeping ops above make of them (a cubic Resize can overshoot, so it does not count)."""
    found: set[str] = set()
    for node in graph.node:  # ONNX nodes are in topological order
        if node.op_type == "Relu":
            found.update(node.output)
            continue
        if node.op_type not in _SIGN_KEEPING:
            continue
        if node.op_type == "Resize" and any(a.name == "mode" and a.s == b"cubic" for a in node.attribute):
            continue
        data = [name for name in node.input[:_DATA_INPUTS.get(node.op_type, len(node.input))] if name]
        if data and all(name in found for name in data):
            found.add(node.output[0])
    return found


def runtime_form(path: str) -> bytes:
    """The int8 graph at `path` in the form the engines run fastest, computing what the file does up
    to one rounding it leaves out and activations beyond their calibrated range. The file stays in
    the form every engine accepts (symmetric int8 QDQ: TensorRT reads no other); this form is made
    when a runtime loads it:

    - activations as uint8 instead of int8 (weights stay int8): OpenVINO misreads signed
      activations (most labels of a test model change), and the int8 convolutions of both engines
      (VNNI, AMX, and the multiply-add path of AVX2) take uint8 inputs, fastest with the zero point
      at 0. An activation that is >= 0 by construction (`non_negative_tensors`: a Relu's output,
      pooled, resized or concatenated) keeps its scale with the zero point at 0: its int8 values were
      all in [0, 127], so they are the same, except that a value above its calibrated range now
      saturates at twice that range instead of at it. The others move to zero point 128 with the same
      scale: the same values exactly (q_u8 = q_s8 + 128 maps [-128, 127] onto [0, 255]);
    - conv -> Q -> DQ -> Relu -> Q becomes conv -> Relu -> Q (`_quantize_after_relu_only`): one
      rounding less, and the form both engines fuse into one int8 convolution with uint8 output.

    On the default model, on an Intel Xeon with AMX-INT8, this form ran 1.5x as fast in OpenVINO as
    the file with zero point 128 everywhere and 1.9x as fast in ONNX Runtime as the file itself, with
    the same mIoU on CamVid val (MODEL_CARD.md, INT8)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    values = {t.name: t for t in proto.graph.initializer}
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    weights = {n.input[2] for n in qdq if n.input[0] in values}  # zero points of stored (weight) tensors
    non_negative = non_negative_tensors(proto.graph)
    quantizes: dict[str, list[str]] = {}  # activation zero point -> the tensors its QuantizeLinear nodes read
    for n in qdq:
        if n.op_type == "QuantizeLinear" and n.input[2] not in weights:
            quantizes.setdefault(n.input[2], []).append(n.input[0])
    for name in {n.input[2] for n in qdq} - weights:
        zero = values.get(name)
        if zero is None or zero.data_type != onnx.TensorProto.INT8:
            continue
        signed = numpy_helper.to_array(zero).astype(np.int16)
        at_zero = name in quantizes and all(t in non_negative for t in quantizes[name]) and not signed.any()
        unsigned = np.zeros_like(signed) if at_zero else signed + 128
        zero.CopyFrom(numpy_helper.from_array(unsigned.astype(np.uint8), name))
    _quantize_after_relu_only(proto.graph)
    used = {name for node in proto.graph.node for name in node.input}
    kept = [t for t in proto.graph.initializer if t.name in used]  # the dropped pairs' scales and zero points
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto.SerializeToString()


def _quantize_after_relu_only(graph) -> None:
    """Drop the quantize / dequantize pair between an op and the Relu after it when the Relu's output
    is quantized again (conv -> Q -> DQ -> Relu -> Q becomes conv -> Relu -> Q): one rounding less,
    and the form OpenVINO fuses into one int8 convolution with uint8 output."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    dropped = set()
    for relu in graph.node:
        if relu.op_type != "Relu" or relu.output[0] in outputs:
            continue
        readers = consumers.get(relu.output[0], [])
        if not readers or not all(c.op_type == "QuantizeLinear" for c in readers):
            continue
        dq = producer.get(relu.input[0])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in outputs:
            continue
        if len(consumers[dq.output[0]]) != 1 or len(consumers[q.output[0]]) != 1:
            continue  # the rounded values are read elsewhere too
        relu.input[0] = q.input[0]
        dropped.update((id(q), id(dq)))
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)


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
