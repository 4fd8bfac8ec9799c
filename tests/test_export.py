"""ONNX export: the graph from image to labels, run by onnxruntime, equals the model's own answer on
several sizes and batch sizes (one exported graph, dynamic axes)."""
from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import fastseg
from fastseg.export import export_logits_onnx, export_onnx

from _images import agreement, image, normalise, reference_labels
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

AGREE = 0.999
SIZES = [(1, 64, 96), (2, 45, 77), (3, 33, 130)]  # (batch, H, W): odd sizes, batch > 1


def session(blob: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])


def exported(model, **kwargs) -> bytes:
    buffer = io.BytesIO()
    export_onnx(model, buffer, **kwargs)
    return buffer.getvalue()


# lraspp: the CPU benchmark model; deeplabv3 on MobileNetV3: ASPP (the fused-ASPP path traced);
# unet: nearest resizes to the skip maps' sizes; segformer: attention reshapes, all dynamic
@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large",
                                  "unet_resnet18", "segformer_b0"])
def test_labels_equal_the_model_on_several_sizes(name):
    torch.manual_seed(0)
    model = fastseg.models.create(name, num_classes=6).eval()
    sess = session(exported(model))
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "image" and inp.type == "tensor(uint8)" and out.name == "labels"
    for n, h, w in SIZES:
        img = image(h, w, seed=h, n=n)
        labels = sess.run(None, {"image": img})[0]
        assert labels.dtype == np.uint8 and labels.shape == (n, h, w)
        assert agreement(labels, reference_labels(model, img)) >= AGREE


def test_int64_labels_and_float_input(tmp_path):
    torch.manual_seed(1)
    model = fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=5).eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, labels_dtype="int64", uint8_input=False)
    onnx.checker.check_model(onnx.load(str(path)))
    sess = session(path.read_bytes())
    assert sess.get_inputs()[0].type == "tensor(float)"
    for n, h, w in SIZES[:2]:
        img = image(h, w, seed=w, n=n)
        labels = sess.run(None, {"image": normalise(img, model).numpy()})[0]
        assert labels.dtype == np.int64 and labels.shape == (n, h, w)
        assert agreement(labels, reference_labels(model, img)) >= AGREE


def test_logits_graph():
    torch.manual_seed(2)
    model = fastseg.models.create("deeplabv3_mobilenet_v3_large", num_classes=4).eval()
    buffer = io.BytesIO()
    export_logits_onnx(model, buffer)
    sess = session(buffer.getvalue())
    for n, h, w in SIZES[:2]:
        x = normalise(image(h, w, seed=n, n=n), model)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = model.forward_logits(x).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "unet_resnet18"])
def test_logits_graph_of_fused_cpu_paths(name):
    """Models whose fused form runs fastseg's native CPU paths (the fused ASPP, which writes its
    branches into one preallocated tensor; Winograd; the in-place bottleneck): the export must trace
    the plain torch ops instead. Batch-norm statistics are randomised so that every branch counts
    (with fresh statistics a lost ASPP branch hid in a 2 % error)."""
    torch.manual_seed(3)
    model = fastseg.models.create(name, num_classes=5).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    buffer = io.BytesIO()
    export_logits_onnx(model, buffer)
    sess = session(buffer.getvalue())
    for n, h, w in [(1, 64, 96), (2, 72, 104)]:
        x = normalise(image(h, w, seed=n, n=n), model)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            want = model.forward_logits(x).numpy()
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), np.abs(got - want).max() / np.abs(want).max()


def test_export_errors():
    model = fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=300)
    with pytest.raises(ValueError, match="labels_dtype"):
        export_onnx(model, io.BytesIO())  # uint8 cannot hold 300 classes
    with pytest.raises(ValueError, match="labels_dtype"):
        export_onnx(model, io.BytesIO(), labels_dtype="float32")
    with pytest.raises(TypeError, match="fastseg model"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), io.BytesIO())
