"""`fastseg export`: the written ONNX graph, run by ONNX Runtime, gives the model's labels."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fastseg
from fastseg.commands import export

from _cli import fastseg_cli
from _images import image, normalise
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)


def assert_same_labels(labels, model, x):
    """Equal to the model's fused-tail labels except at near-ties of the two best logits (there float
    rounding picks either class); those are rare."""
    with torch.no_grad():
        expected = model.predict(x).numpy()
        z = model(x)
    top2 = z.topk(2, dim=1).values
    tie = ((top2[:, 0] - top2[:, 1]) <= 1e-4 * z.abs().amax()).numpy()
    assert labels.shape == expected.shape
    assert ((labels != expected) & ~tie).sum() == 0
    assert (labels == expected).mean() >= 0.99


def test_export_matches_pytorch_on_any_batch_and_size(tmp_path, model_file, capsys):
    path = tmp_path / "m.onnx"
    assert fastseg_cli("export", model_file, "--output", path, "--check") == 0
    text = capsys.readouterr().out
    assert "check: passed" in text and "uint8 [N,H,W,3]" in text and "0 different away from near-ties" in text
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]        # no temporary file left

    model = fastseg.models.load(model_file)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in ((1, 64, 96), (3, 45, 71), (2, 128, 40)):          # dynamic batch and size
        batch = image(h, w, seed=h, n=n)
        labels = session.run(None, {"image": batch})[0]
        assert labels.shape == (n, h, w) and labels.dtype == np.uint8
        assert_same_labels(labels, model, normalise(batch, model))
        assert len(np.unique(labels)) >= 2


def test_export_float_input_and_int64_labels(tmp_path, model_file):
    path = tmp_path / "m.onnx"
    assert fastseg_cli("export", model_file, "-o", path, "--float-input", "--labels-dtype", "int64",
                       "--check") == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = fastseg.models.load(model_file)
    x = normalise(image(50, 70, seed=5, n=2), model)
    labels = session.run(None, {"image": x.numpy()})[0]
    assert labels.dtype == np.int64
    assert_same_labels(labels, model, x)


def test_check_detects_a_wrong_graph(tmp_path, model_file):
    """--check compares against PyTorch for real: another model's graph fails it."""
    path = tmp_path / "m.onnx"
    assert fastseg_cli("export", model_file, "-o", path) == 0
    other = fastseg.models.load(model_file)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1)
    results = export.check(path, other).values()
    assert min(agreement for agreement, _ in results) < 0.9 and min(wrong for _, wrong in results) > 100
    assert all(wrong == 0 for _, wrong in export.check(path, fastseg.models.load(model_file)).values())


def test_export_errors(tmp_path, capsys):
    assert fastseg_cli("export", tmp_path / "missing.safetensors", "-o", tmp_path / "m.onnx") == 2
    assert "not a packaged model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fastseg_cli("export", "camvid")                                 # --output is required
