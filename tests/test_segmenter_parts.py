"""The Segmenter's parts on their own: keyword arguments, warmup, the ONNX graph cache, the model-spec
resolver, the runtimes' contract."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from fastseg.models import base as model_base
from fastseg.segmenter import Segmenter, onnx_cache, resolve_model
from fastseg.segmenter.choice import choose_runtime

from _images import image
from _runtimes import fp32_auto
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)


class Tiny(model_base.SegmentationModel):
    output_stride = 2

    def __init__(self, classes=4):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.classify = nn.Conv2d(8, classes, 1)

    def forward_logits(self, x):
        return self.classify(torch.relu(self.embed(x)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Tiny().eval()


def _entries(folder):
    return sorted((folder / "onnx").glob("logits-*.onnx")) if (folder / "onnx").is_dir() else []


# ----------------------------------------------------------------------------- keyword arguments
def test_unknown_keyword_arguments_are_named(tiny):
    with pytest.raises(TypeError, match=r"^Segmenter\(\) got an unexpected keyword argument 'tta_flips'$"):
        Segmenter(tiny, tta_flips=True)
    with pytest.raises(TypeError, match=r"'tile' \(use tiling=Tiling"):
        Segmenter(tiny, tile=(32, 32))
    with pytest.raises(TypeError, match=r"'tta_flip' \(use tta=TTA\(flip=True\)\)"):
        Segmenter(tiny, tta_flip=True)
    with pytest.raises(TypeError, match="'depth'"):
        Segmenter("unet_resnet18", num_classes=3, depth=3)  # create() arguments are no longer passed through


# ----------------------------------------------------------------------------- warmup
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "inductor"])
def test_warmup_runs_each_size(tiny, cache, runtime):
    seg = Segmenter(tiny, runtime=runtime)
    seconds = seg.warmup([(30, 44), (24, 32)])
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert len(seg.warmup((24, 32), batch=2)) == len(seg.warmup(np.array([24, 32]))) == 1
    frame = image(30, 44, seed=1)
    assert np.array_equal(seg.predict(frame).labels, Segmenter(tiny, runtime="torch").predict(frame).labels)


# ----------------------------------------------------------------------------- the ONNX graph cache
def test_cache_hit_needs_no_export(tiny, cache):
    folder, exports = cache
    frame = image(32, 48, seed=2)
    first = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    assert len(exports) == 1 and len(_entries(folder)) == 1
    second = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    assert len(exports) == 1, "the second Segmenter of the same model exported again"
    np.testing.assert_array_equal(first, second)


def test_cache_misses_on_changed_weights(tiny, cache):
    folder, exports = cache
    frame = image(32, 48, seed=3)
    before = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    with torch.no_grad():
        tiny.classify.bias[0] += 100.0  # class 0 everywhere
    after = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    assert len(exports) == 2 and len(_entries(folder)) == 2
    assert (after == 0).all() and not (before == 0).all()


def test_corrupt_cache_entry_is_rebuilt(tiny, cache):
    folder, exports = cache
    frame = image(32, 48, seed=4)
    want = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    (entry,) = _entries(folder)
    for damage in (b"not an onnx graph", entry.read_bytes()[:100]):
        entry.write_bytes(damage)
        with pytest.warns(RuntimeWarning, match="rebuilding"):
            seg = Segmenter(tiny, runtime="onnxruntime")
        np.testing.assert_array_equal(seg.predict(frame).labels, want)
        assert onnx_cache.entry_path(seg.model) == entry and entry.stat().st_size > 1000  # written anew
    assert len(exports) == 3
    assert not [p for p in (folder / "onnx").iterdir() if p.name.startswith(".")]  # no temporary left


def test_unwritable_cache_folder_still_runs(tiny, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("FASTSEG_CACHE", str(blocker / "cache"))
    frame = image(32, 48, seed=5)
    labels = Segmenter(tiny, runtime="onnxruntime").predict(frame).labels
    np.testing.assert_array_equal(labels, Segmenter(tiny, runtime="torch").predict(frame).labels)


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTSEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache.cache_dir() == tmp_path / "xdg" / "fastseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert onnx_cache.cache_dir() == onnx_cache.Path.home() / ".cache" / "fastseg"
    monkeypatch.setenv("FASTSEG_CACHE", str(tmp_path / "mine"))
    assert onnx_cache.cache_dir() == tmp_path / "mine"


def test_graph_key_depends_on_weights_and_architecture(tiny):
    key = onnx_cache.graph_key(tiny)
    assert onnx_cache.graph_key(tiny) == key
    other = Tiny()
    other.load_state_dict(tiny.state_dict())
    assert onnx_cache.graph_key(other) == key  # same weights, same code: the same graph
    assert onnx_cache.graph_key(Tiny(classes=5)) != key
    with torch.no_grad():
        other.embed.weight[0, 0, 0, 0] += 1e-6
    assert onnx_cache.graph_key(other) != key


# ----------------------------------------------------------------------------- model specs
def test_resolver_names_the_callers_arguments(tiny, tmp_path):
    import fastseg

    assert resolve_model(tiny).kind == "module"
    assert resolve_model(None).kind == resolve_model("camvid").kind == "packaged"
    path = tmp_path / "m.safetensors"
    fastseg.models.save(fastseg.models.create("lraspp_mobilenet_v3_large", num_classes=3), path)
    loaded = resolve_model(str(path))
    assert loaded.kind == "file" and loaded.source == str(path)
    assert resolve_model("lraspp_mobilenet_v3_large", 3).kind == "registered"
    cases = [(("unet_resnet18",), "--model unet_resnet18: a registered name needs --num-classes"),
             ((str(tmp_path),), "is a directory"),
             (("nope",), "neither an existing file nor a registered model"),
             (("camvid", 3), "--num-classes applies only to a registered model name"),
             ((str(path), 3), "--num-classes applies only")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            resolve_model(*args, spec_arg="--model", classes_arg="--num-classes")


# ----------------------------------------------------------------------------- runtimes
@pytest.mark.parametrize("name, dtype, channels_last", [
    ("torch", torch.float32, True), ("onnxruntime", torch.float32, False), ("inductor", torch.float32, True)])
def test_runtimes_own_their_input_form(tiny, cache, name, dtype, channels_last):
    rt = choose_runtime(name, tiny, torch.device("cpu"), "fp32")
    assert rt.name == name and rt.dtype == dtype and rt.channels_last == channels_last and rt.threads >= 1
    x = torch.randn(2, 3, 16, 24).contiguous(memory_format=rt.memory_format)
    with torch.inference_mode():
        torch.testing.assert_close(rt(x), tiny.forward_logits(x), atol=1e-5, rtol=1e-5)
    assert os.environ["FASTSEG_CACHE"]


def test_auto_honours_a_torch_layout(tiny, cache):
    assert Segmenter(tiny).runtime.name == fp32_auto("onnxruntime")
    seg = Segmenter(tiny, channels_last=True)
    assert seg.runtime.name == "torch" and seg.runtime.channels_last
