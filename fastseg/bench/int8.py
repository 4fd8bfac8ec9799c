"""INT8 on the CPU: the packaged model quantized by fastseg against the INT8 paths of ONNX Runtime
and OpenVINO, on real CamVid frames (`fastseg bench --only int8_camvid --camvid DIR`).

All three are calibrated on the same CamVid train frames and run one uint8 480x360 val frame to
labels. fastseg: `fastseg.quantize` (symmetric int8 QDQ, per-channel weights) in the Segmenter (its
int8 runtime, OpenVINO when installed, on the graph's runtime form; fastseg's fused tail). ONNX
Runtime INT8: the whole pipeline graph (`export_onnx`, argmax inside) through
`onnxruntime.quantization.quantize_static` as a user would call it (QDQ, per-channel weights, its
default activation type). OpenVINO INT8: the same graph
through NNCF's post-training quantization (`nncf.quantize`), compiled with OpenVINO's defaults for
the CPU (its own choice of precision for what stays in floating point). Timed interleaved with the
fp32 Segmenter; the figures give each one's mIoU over CamVid val and its labels against fp32.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data import CamVid
from ..metrics import ConfusionMatrix
from .cpu_engines import cpu_features
from .measure import Agreement, Figure, Reference, measure
from .timing import SETTLE

CALIBRATION_FRAMES = 16
INT8_EQUAL = 0.97      # labels equal to fp32, fraction of pixels


def _peers(model, graph: bytes, calib: list[np.ndarray], folder: str) -> dict:
    """name -> labels function of a uint8 HWC frame, for the peers that are installed."""
    peers: dict = {}
    threads = torch.get_num_threads()
    fp32 = os.path.join(folder, "labels.onnx")
    Path(fp32).write_bytes(graph)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    except ImportError:
        print("bench: onnxruntime is not installed: no ONNX Runtime INT8 row", file=sys.stderr)
    else:
        class Frames(CalibrationDataReader):
            def __init__(self):
                self.frames = iter(calib)

            def get_next(self):
                frame = next(self.frames, None)
                return None if frame is None else {"image": frame[None]}

        int8 = os.path.join(folder, "labels.int8.onnx")
        quantize_static(fp32, int8, Frames(), quant_format=QuantFormat.QDQ, per_channel=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(int8, options, providers=["CPUExecutionProvider"])
        peers["onnxruntime int8 (quantize_static, argmax in graph)"] = \
            lambda frame: session.run(None, {"image": frame[None]})[0][0]
    try:
        import nncf
        import openvino as ov
    except ImportError:
        print("bench: openvino / nncf is not installed: no OpenVINO INT8 row", file=sys.stderr)
        return peers
    core = ov.Core()
    net = core.read_model(fp32)
    net.reshape({net.inputs[0].any_name: [1, *calib[0].shape]})
    quantized = nncf.quantize(net, nncf.Dataset(calib, lambda frame: frame[None]))
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                     "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    peers["openvino int8 (NNCF, argmax in graph)"] = lambda frame: request.infer({0: frame[None]})[0][0].copy()
    return peers


def _miou(fn, val: CamVid) -> float:
    meter = ConfusionMatrix(val.num_classes, val.ignore_index)
    for i in range(len(val)):
        image, labels = val[i]
        meter.update(np.asarray(fn(image)), labels)
    return float(meter.compute().miou)


def int8_camvid(quick: bool, camvid: Path) -> list:
    """The packaged model in int8: speed against the fp32 Segmenter and the peers' INT8, mIoU of each."""
    from .. import Segmenter
    from ..export import export_onnx
    from ..models import pretrained
    from ..quantize import calibration_frames, quantize

    model = pretrained.load()
    calib = calibration_frames(Path(camvid) / "train", CALIBRATION_FRAMES)
    val = CamVid(camvid, "val")
    frame = val[0][0]
    with tempfile.TemporaryDirectory() as folder:
        int8_path = quantize(model, calib, os.path.join(folder, "camvid.int8.onnx"), source="camvid")
        ours = Segmenter(int8_path)
        fp32 = Segmenter()
        buffer = io.BytesIO()
        export_onnx(model, buffer)
        peers = _peers(model, buffer.getvalue(), calib, folder)
        want = fp32.predict(frame).labels
        ours_fn = {"fastseg int8": lambda: ours.predict(frame)}
        references = {"fastseg fp32 (Segmenter default)": Reference(
            lambda: fp32.predict(frame), Agreement.labels(ours.predict(frame).labels, want, INT8_EQUAL))}
        for name, fn in peers.items():
            references[name] = Reference(lambda fn=fn: fn(frame),
                                         Agreement.labels(ours.predict(frame).labels, fn(frame), INT8_EQUAL))
        shape = f"480x360 uint8 -> labels, {torch.get_num_threads()} threads, cpu: {cpu_features()}"
        rows: list = measure("INT8: default model", shape, ours_fn, references, rounds=5 if quick else 21,
                             settle=SETTLE)
        if quick:
            return rows
        scored = {"fastseg fp32": lambda image: fp32.predict(image).labels,
                  "fastseg int8": lambda image: ours.predict(image).labels, **peers}
        mious = {name: _miou(fn, val) for name, fn in scored.items()}
    base = mious["fastseg fp32"]
    text = "; ".join(f"{name} {100 * v:.2f} % ({100 * (v - base):+.2f})" for name, v in mious.items())
    ok = abs(mious["fastseg int8"] - base) <= 0.01
    rows.append(Figure("INT8: default model", f"CamVid val, {len(val)} frames, cpu: {cpu_features()}",
                       f"mIoU {text}", ok, {k: float(v) for k, v in mious.items()}))
    return rows

