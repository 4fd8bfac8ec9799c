"""The "openvino" runtime: the cached logits graph in OpenVINO, fp32 and bf16 pinned, shapes compiled
and kept, requests per concurrent call, and when "auto" picks it."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from fastseg.models import base as model_base
from fastseg.segmenter import Segmenter, openvino_runtime, precision
from fastseg.segmenter.choice import choose_runtime

from _images import agreement, image
from _zoo import one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

pytest.importorskip("openvino")


class Small(model_base.SegmentationModel):
    output_stride = 4

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.classify = nn.Conv2d(32, classes, 1)

    def forward_logits(self, x):
        return self.classify(self.stem(x))


@pytest.fixture
def small():
    torch.manual_seed(0)
    return Small().eval()


def test_fp32_logits_match_torch_and_graph_is_shared_with_onnxruntime(small, cache):
    rt = choose_runtime("openvino", small, torch.device("cpu"), "fp32")
    assert rt.name == "openvino" and rt.dtype == torch.float32 and not rt.channels_last and rt.threads >= 1
    for shape in ((1, 3, 32, 48), (2, 3, 20, 28)):
        x = torch.randn(shape)
        with torch.inference_mode():
            torch.testing.assert_close(rt(x), small.forward_logits(x), atol=1e-4, rtol=1e-4)
    assert rt.precision_in_use((1, 3, 32, 48)) == "f32"  # pinned: never bf16 behind the caller's back
    choose_runtime("onnxruntime", small, torch.device("cpu"), "fp32")
    assert len(cache[1]) == 1  # one export, read by both engines


def test_bf16_is_pinned_and_close(small, cache):
    rt = choose_runtime("openvino", small, torch.device("cpu"), "bf16")
    x = torch.randn(1, 3, 32, 48)
    if precision.native_bf16():
        assert rt.precision_in_use(tuple(x.shape)) == "bf16"
    with torch.inference_mode():
        ref = small.forward_logits(x)
        got = rt(x)
    assert got.dtype == torch.float32  # fp32 logits into the fused tail
    assert float((got - ref).abs().max() / ref.abs().max()) < 0.05  # bf16 keeps 8 bits of mantissa


def test_compiled_shapes_are_kept_and_bounded(small, cache):
    rt = openvino_runtime.OpenVinoRuntime(small)
    first = rt.compiled((1, 3, 16, 16))[0]
    assert rt.compiled((1, 3, 16, 16))[0] is first
    for w in range(20, 20 + 4 * openvino_runtime.KEEP_SHAPES, 4):
        rt.compiled((1, 3, 16, w))
    assert len(rt._compiled) == openvino_runtime.KEEP_SHAPES
    assert rt.compiled((1, 3, 16, 16))[0] is not first  # evicted, compiled again


def test_a_larger_shape_left_idle_is_dropped(small, cache):
    """A compiled model of a larger input than the one being run goes after IDLE_CALLS calls unused
    (it holds that input's activation memory); smaller ones, and sizes that alternate, stay."""
    rt = openvino_runtime.OpenVinoRuntime(small)
    video, large, small_shape = (1, 3, 16, 24), (1, 3, 48, 64), (1, 3, 8, 8)
    rt.compiled(small_shape)
    rt.compiled(large)
    for _ in range(openvino_runtime.IDLE_CALLS):
        rt.compiled(video)
    assert (large, False) in rt._compiled  # idle for IDLE_CALLS calls: not yet
    rt.compiled(video)
    assert (large, False) not in rt._compiled and (small_shape, False) in rt._compiled
    for _ in range(3 * openvino_runtime.IDLE_CALLS):  # alternating sizes keep both
        rt.compiled(video)
        rt.compiled(large)
    assert {(video, False), (large, False)} <= set(rt._compiled)


def test_segmenter_labels_and_concurrent_calls(small, cache):
    seg = Segmenter(small, runtime="openvino")
    frames = [image(36 + 4 * i, 52, seed=i) for i in range(3)]
    want = [Segmenter(small, runtime="torch").predict(f).labels for f in frames]
    for f, w in zip(frames, want):
        assert agreement(seg.predict(f).labels, w) >= 0.999
    got: dict = {}

    def work(k):
        got[k] = [seg.predict(frames[(k + i) % 3]).labels for i in range(6)]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, labels in got.items():
        for i, lab in enumerate(labels):
            np.testing.assert_array_equal(lab, seg.predict(frames[(k + i) % 3]).labels)


def test_errors(small, cache):
    with pytest.raises(ValueError, match="channels_last"):
        Segmenter(small, runtime="openvino", channels_last=True)
    with pytest.raises(ValueError, match="openvino"):
        Segmenter(small, runtime="openvino", precision="fp16", allow_emulated_precision=True)


@pytest.mark.parametrize("native", [True, False])
def test_auto_runtime_for_bf16_follows_the_cpu(small, cache, monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    rt = choose_runtime("auto", small, torch.device("cpu"), "bf16")
    assert rt.name == ("openvino" if native else "torch")
    monkeypatch.setattr(openvino_runtime, "available", lambda: False)
    assert choose_runtime("auto", small, torch.device("cpu"), "bf16").name == "torch"


@pytest.fixture
def inputs_seen(monkeypatch):
    """The dtype of every input the openvino runtime is called with."""
    seen: list = []
    call = openvino_runtime.OpenVinoRuntime.__call__
    monkeypatch.setattr(openvino_runtime.OpenVinoRuntime, "__call__", lambda rt, x: seen.append(x.dtype) or call(rt, x))
    return seen


@pytest.mark.parametrize("precision_name", ["fp32", "bf16"])
@pytest.mark.parametrize("n,h,w", [(1, 36, 52), (2, 20, 28), (3, 17, 33)])
def test_uint8_frames_are_normalised_inside_like_the_float_input(small, cache, precision_name, n, h, w):
    rt = openvino_runtime.OpenVinoRuntime(small, precision_name)
    assert rt.takes_uint8_hwc
    frames = torch.from_numpy(image(h, w, seed=n, n=n))
    x = Segmenter(small, runtime="torch").preprocess(frames, hwc=True)
    with torch.inference_mode():
        got, want = rt(frames), rt(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    if precision_name == "fp32":
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    else:  # both rounded to bf16 inside; the normalisation's own rounding may differ by one bf16 step
        assert float((got - want).abs().max() / want.abs().max()) < 0.05
    assert rt.precision_in_use(tuple(frames.shape), uint8_hwc=True) == rt.precision_in_use(tuple(x.shape))
    assert ((n, h, w, 3), True) in rt._compiled and ((n, 3, h, w), False) in rt._compiled  # one graph each
    with pytest.raises(ValueError, match=r"\[N,H,W,3\]"):
        rt(frames.permute(0, 3, 1, 2))


def test_segmenter_hands_whole_uint8_frames_to_openvino(small, cache, inputs_seen):
    seg, ref = Segmenter(small, runtime="openvino"), Segmenter(small, runtime="torch")
    batch = image(28, 44, seed=3, n=2)
    frames = [image(36, 52, seed=1), batch, [image(20, 28, seed=2), image(36, 52, seed=4)],
              image(40, 60, seed=5)[3:35, 4:52]]  # a crop: a strided view
    for f in frames:
        got, want = seg.predict(f).labels, ref.predict(f).labels
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            assert agreement(g, w) >= 0.999
    assert inputs_seen and set(inputs_seen) == {torch.uint8}


@pytest.mark.parametrize("case", ["resize", "bgr", "tta", "pad_to", "tiles", "split batch", "float frames",
                                  "torch NCHW"])
def test_segmenter_normalises_itself_where_frames_cannot_go_as_they_are(small, cache, inputs_seen, case):
    from fastseg.segmenter import TTA

    options = {"resize": {"scale": 0.5}, "bgr": {"pixel_format": "bgr"}, "tta": {"tta": TTA(flip=True)},
               "pad_to": {"pad_to": 8}, "tiles": {"max_pixels": 24 * 24}, "split batch": {"max_pixels": 36 * 52}}
    kwargs = options.get(case, {})
    frames = image(36, 52, seed=6, n=2)
    if case == "float frames":
        frames = frames.astype(np.float32) / 255
    elif case == "torch NCHW":
        frames = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    seg, ref = Segmenter(small, runtime="openvino", **kwargs), Segmenter(small, runtime="torch", **kwargs)
    got, want = seg.predict(frames).labels, ref.predict(frames).labels
    assert agreement(np.asarray(got), np.asarray(want)) >= 0.999
    assert inputs_seen and torch.uint8 not in inputs_seen
