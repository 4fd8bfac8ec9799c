"""INT8: `fastseg quantize` writes a symmetric int8 QDQ graph, the Segmenter loads and runs it (the
runtime chosen, the fused tail after it), errors say what is wrong; on real CamVid frames the default
model's int8 graph keeps its mIoU and its labels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

import fastseg
from fastseg.models import base as model_base
from fastseg.quantize import METADATA_KEY, QuantizationError, quantize
from fastseg.segmenter import openvino_runtime
from fastseg.segmenter.quantized import QuantizedGraph

from _cli import NUM_CLASSES, fastseg_cli, write_image
from _images import agreement, image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for i in range(6):
        write_image(folder / f"{i:02d}.png", 48, 64, seed=10 + i)
    return folder


@pytest.fixture(scope="module")
def int8_file(model_file, calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "small.int8.onnx"
    assert fastseg_cli("quantize", model_file, "--calib", calib, "--output", out) == 0
    return out


def _initializers(proto) -> dict:
    return {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_command_writes_symmetric_per_channel_qdq(int8_file):
    proto = onnx.load(int8_file)
    ops = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
    values = _initializers(proto)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in proto.graph.node for o in n.output}
    for conv in convs:
        weight = producers[conv.input[1]]  # DequantizeLinear(int8 weight, per-channel scale, zero point 0)
        assert weight.op_type == "DequantizeLinear"
        w, scale, zero = (values[name] for name in weight.input[:3])
        assert w.dtype == np.int8 and scale.shape == (w.shape[0],) and not zero.any()
        # 7 bits by default: no two products can saturate a 16-bit sum on a CPU without VNNI
        assert -64 <= w.min() and w.max() <= 64 and np.abs(w).max() >= 60
        activation = producers[conv.input[0]]
        assert activation.op_type == "DequantizeLinear"
        assert values[activation.input[2]].dtype == np.int8 and not values[activation.input[2]].any()
    meta = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert meta["num_classes"] == NUM_CLASSES and meta["precision"] == "int8" and len(meta["mean"]) == 3
    assert meta["reduce_range"] is True


def test_no_reduce_range_writes_eight_bit_weights(model_file, calib, tmp_path):
    out = tmp_path / "eight.int8.onnx"
    assert fastseg_cli("quantize", model_file, "--calib", calib, "--output", out, "--no-reduce-range") == 0
    proto = onnx.load(out)
    weights = [w for name, w in _initializers(proto).items() if w.dtype == np.int8 and w.ndim == 4]
    assert weights and max(int(np.abs(w).max()) for w in weights) >= 120
    assert json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])["reduce_range"] is False


@pytest.mark.parametrize("runtime", ["auto", "onnxruntime", "openvino"])
def test_segmenter_loads_and_runs_the_int8_graph(int8_file, model_file, runtime):
    if runtime == "openvino" and not openvino_runtime.available():
        pytest.skip("openvino is not installed")
    seg = fastseg.Segmenter(int8_file, runtime=runtime)
    assert isinstance(seg.model, QuantizedGraph) and seg.precision == "int8"
    if runtime == "auto":  # OpenVINO when installed (segmenter/choice.py)
        assert seg.runtime.name == ("openvino" if openvino_runtime.available() else "onnxruntime")
    frames = image(48, 64, seed=30, n=2)
    fp32 = fastseg.Segmenter(model_file, runtime="torch").predict(frames).labels
    result = seg.predict(frames, return_confidence=True)
    assert result.labels.shape == fp32.shape and result.labels.dtype == np.uint8
    # random weights: small margins, yet int8 keeps most labels
    assert agreement(result.labels, fp32) >= 0.9


def test_runtime_form_is_unsigned_and_quantizes_after_relu_only(int8_file):
    """The form the runtimes load (`quantized.runtime_form`): every activation uint8 (zero point 0
    where it cannot be negative, 128 elsewhere), weights still int8, no rounding left between a
    convolution and its Relu, and nothing left over."""
    from fastseg.segmenter.quantized import non_negative_tensors, runtime_form

    original = onnx.load(int8_file)
    form = onnx.load_from_string(runtime_form(str(int8_file)))
    values, before = _initializers(form), _initializers(original)
    non_negative = non_negative_tensors(form.graph)
    producers = {o: n for n in form.graph.node for o in n.output}
    quantized = [n for n in form.graph.node if n.op_type == "QuantizeLinear"]
    assert quantized
    for q in quantized:  # activations only: weights are stored quantized
        zero = values[q.input[2]]
        assert zero.dtype == np.uint8
        assert not zero.any() if q.input[0] in non_negative else (zero == 128).all()
        assert before[q.input[2]].dtype == np.int8 and (values[q.input[1]] == before[q.input[1]]).all()
    assert any(q.input[0] in non_negative for q in quantized) and any(q.input[0] not in non_negative for q in quantized)
    for relu in (n for n in form.graph.node if n.op_type == "Relu"):
        assert producers[relu.input[0]].op_type != "DequantizeLinear"  # conv -> Relu -> Q
    assert sum(n.op_type == "Relu" for n in form.graph.node) == sum(n.op_type == "Relu" for n in original.graph.node)
    signed = [w for w in values.values() if w.dtype == np.int8]  # the weights and their zero points only
    assert any(w.ndim == 4 for w in signed) and all(w.ndim == 4 or not w.any() for w in signed)
    used = {name for n in form.graph.node for name in n.input}
    assert {t.name for t in form.graph.initializer} <= used


def test_runtime_form_computes_what_the_file_does(int8_file, calib, model_file):
    """On the frames the graph was calibrated on (no activation beyond its range), the form's logits
    are the file's up to the one rounding it drops, and its labels agree with the file's and fp32's."""
    import onnxruntime as ort

    from fastseg.quantize import calibration_frames
    from fastseg.segmenter.quantized import runtime_form

    net = fastseg.models.load(str(model_file)).eval()
    mean, std = np.array(net.mean).reshape(1, 3, 1, 1), np.array(net.std).reshape(1, 3, 1, 1)
    frames = np.stack(calibration_frames(calib)).transpose(0, 3, 1, 2) / 255.0
    x = ((frames - mean) / std).astype(np.float32)
    run = {name: ort.InferenceSession(g, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
           for name, g in (("file", str(int8_file)), ("form", runtime_form(str(int8_file))))}
    import torch

    with torch.no_grad():
        fp32 = net.forward_logits(torch.from_numpy(x)).numpy()
    spread = np.abs(fp32).max()
    assert np.abs(run["form"] - run["file"]).max() <= 0.1 * spread
    assert np.abs(run["form"] - fp32).mean() <= 1.2 * np.abs(run["file"] - fp32).mean()
    assert (run["form"].argmax(1) == run["file"].argmax(1)).mean() >= 0.97


def test_non_negative_tensors_follow_the_ops():
    """Relu makes a tensor >= 0; pooling, linear resizing, concatenation and addition keep it so
    only when every data input is; a cubic resize or a convolution does not."""
    from onnx import helper

    from fastseg.segmenter.quantized import non_negative_tensors

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2]),
             helper.make_node("Resize", ["p", "", "scales"], ["up"], mode="linear"),
             helper.make_node("Resize", ["p", "", "scales"], ["cubic"], mode="cubic"),
             helper.make_node("Concat", ["r", "up"], ["both"], axis=1),
             helper.make_node("Concat", ["r", "x"], ["mixed"], axis=1),
             helper.make_node("Add", ["r", "up"], ["sum"]), helper.make_node("Add", ["r", "x"], ["signed_sum"]),
             helper.make_node("Conv", ["r", "w"], ["c"])]
    graph = helper.make_graph(nodes, "g", [], [])
    assert non_negative_tensors(graph) == {"r", "p", "up", "both", "sum"}


def test_int8_errors(model_file, int8_file, calib, tmp_path, capsys):
    with pytest.raises(ValueError, match="fastseg quantize"):
        fastseg.Segmenter(model_file, precision="int8")  # a model as trained has no int8 graph
    with pytest.raises(ValueError, match="int8"):
        fastseg.Segmenter(int8_file, precision="bf16")
    with pytest.raises(ValueError, match="runtime"):
        fastseg.Segmenter(int8_file, runtime="torch")
    foreign = tmp_path / "foreign.onnx"  # an ONNX file that fastseg did not write
    proto = onnx.load(int8_file)
    del proto.metadata_props[:]
    foreign.write_bytes(proto.SerializeToString())
    with pytest.raises(ValueError, match="without fastseg's metadata"):
        fastseg.Segmenter(foreign)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fastseg_cli("quantize", model_file, "--calib", empty, "--output", tmp_path / "x.onnx") == 2
    assert "holds no images" in capsys.readouterr().err
    assert fastseg_cli("quantize", model_file, "--calib", calib, "--output", tmp_path / "x.bin") == 2
    assert not (tmp_path / "x.bin").exists()


class NoWeights(model_base.SegmentationModel):
    output_stride = 4

    def forward_logits(self, x):
        return nn.functional.avg_pool2d(x, 4)


def test_a_model_without_weights_cannot_be_quantized(tmp_path):
    with pytest.raises(QuantizationError, match="no convolution or matrix multiply"):
        quantize(NoWeights().eval(), [image(32, 32)], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_predict_command_runs_int8(int8_file, tmp_path):
    write_image(tmp_path / "in" / "a.png", 48, 64, seed=40)
    out = tmp_path / "out"
    assert fastseg_cli("predict", tmp_path / "in", "--out", out, "--model", int8_file, "--precision", "int8",
                       "--save", "labels") == 0
    assert (out / "labels" / "a.png").is_file()


def test_packaged_int8_graph_belongs_to_the_packaged_weights(tmp_path):
    from fastseg.models import pretrained
    from fastseg.quantize import source_digest
    from fastseg.segmenter.quantized import int8_model, packaged_int8_path

    weights = pretrained.get().path
    seg = fastseg.Segmenter(precision="int8")
    assert isinstance(seg.model, QuantizedGraph) and seg.model.path == str(packaged_int8_path(weights))
    assert seg.model.source_sha256 == source_digest(weights)  # remade whenever the weights change
    # weights retrained, their int8 graph not remade: refused with the command that remakes it
    other = tmp_path / weights.name
    other.write_bytes(weights.read_bytes() + b" ")
    packaged_int8_path(other).write_bytes(packaged_int8_path(weights).read_bytes())
    with pytest.raises(ValueError, match="other weights.*fastseg quantize"):
        int8_model(fastseg.models.pretrained.load(), other)


def test_predict_runs_the_packaged_int8_graph(tmp_path):
    write_image(tmp_path / "in" / "a.png", 60, 80, seed=41)
    assert fastseg_cli("predict", tmp_path / "in", "--out", tmp_path / "out", "--precision", "int8",
                       "--save", "labels") == 0
    assert (tmp_path / "out" / "labels" / "a.png").is_file()


# ----------------------------------------------------------------------------- real frames
@pytest.mark.camvid
def test_eval_command_runs_int8(camvid_root, tmp_path):
    out = tmp_path / "eval"
    assert fastseg_cli("eval", "--dataset", "camvid", "--root", camvid_root, "--precision", "int8", "--limit", 2,
                       "--out", out, "--no-progress") == 0
    report = json.loads((out / "results.json").read_text())
    assert report["precision"] == "int8" and report["frames"] == 2


@pytest.mark.camvid
def test_default_model_int8_keeps_miou_and_labels(camvid_root, tmp_path):
    """On every CamVid val frame: mIoU within 1 point of fp32, >= 97 % of labels equal, for the
    packaged int8 graph in the runtime "auto" picks, and for a graph quantized now from CamVid train
    frames in ONNX Runtime."""
    from fastseg.evaluation import evaluate
    from fastseg.quantize import calibration_frames

    val = fastseg.data.get_dataset("camvid", camvid_root, "val")
    fresh = tmp_path / "camvid.int8.onnx"
    quantize(fastseg.models.pretrained.load(), calibration_frames(camvid_root / "train", 16), fresh)
    fp32 = fastseg.Segmenter()
    base = evaluate(fp32, val, progress=False).plain.compute().miou
    frames = [val[i][0] for i in range(0, len(val), 5)]
    want = [fp32.predict(f).labels for f in frames]
    for seg in (fastseg.Segmenter(precision="int8"), fastseg.Segmenter(fresh, runtime="onnxruntime")):
        assert seg.precision == "int8"
        miou = evaluate(seg, val, progress=False).plain.compute().miou
        equal = float(np.mean([agreement(seg.predict(f).labels, w) for f, w in zip(frames, want)]))
        assert abs(miou - base) <= 0.01, (seg.runtime.name, miou, base)
        assert equal >= 0.97, (seg.runtime.name, equal)
