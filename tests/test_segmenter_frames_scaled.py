"""The CUDA frame path (fastseg/segmenter/cuda_frames.py) for frames resized towards the model's
scale and frames in other pixel formats, on the CPU that stands in for the device (as in
test_segmenter_frames.py): its answer against the generic path's (the native resize_normalize),
eager and replayed, and the routing: on CUDA every frame takes the frame path. What only a GPU can
show (no host waits, graph capture) is in test_segmenter_cuda.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastseg.ops.resize_normalize import parse
from fastseg.segmenter import Segmenter
from fastseg.segmenter.cuda_frames import CudaFrames, FrameLoop

from _images import agreement, frame_in, image
from _zoo import Local, one_torch_thread  # noqa: F401  (autouse: one torch thread per test module)

FORMATS = ["rgb", "bgr", "nv12", "yuyv", "nv12:bt709:full"]


def segmenter(stride: int, trained=(24, 32), **kw) -> Segmenter:
    return Segmenter(Local(stride=stride, classes=6, trained=trained), runtime="torch", **kw)


def _run(frames: CudaFrames, batch, fmt, confidence=True, loop=None):
    with torch.inference_mode():
        return frames.run(batch, confidence, loop, None, parse(fmt))


def _same(got, expected, min_agreement=0.999):
    """Labels (mostly: float rounding of the two resize routes flips near-ties) and confidence."""
    labels, conf = got.labels, got.confidence
    want, want_conf = expected.labels, expected.confidence
    for g, e, gc, ec in zip(*(x if isinstance(x, list) else [x] for x in (labels, want, conf, want_conf))):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype
        assert agreement(g, e) >= min_agreement
        np.testing.assert_allclose(np.asarray(gc), np.asarray(ec), rtol=0, atol=2e-4)


# (frame height, width, batch) -> shrunk, enlarged, odd sizes, batches; the model runs at 24x32
SHAPES = [(48, 64, None), (60, 90, 2), (14, 20, None), (10, 38, 3), (24, 32, None), (126, 80, None)]


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("stride", [1, 4])
def test_scaled_frames_give_the_generic_paths_answer(name, shape, stride):
    h, w, n = shape
    seg = segmenter(stride)
    batch = frame_in(name, h, w, seed=h + w, n=n)
    expected = seg.predict(batch, return_confidence=True, pixel_format=name)
    got = _run(CudaFrames(seg), batch, name)
    _same(got, expected)
    assert np.asarray(got.labels).shape == ((n,) if n else ()) + (h, w)


@pytest.mark.parametrize("name", FORMATS)
def test_torch_frames_and_lists_of_sizes(name):
    seg = segmenter(2, scale=0.75)
    frames = [torch.from_numpy(frame_in(name, 40, 52, seed=1)), torch.from_numpy(frame_in(name, 22, 30, seed=2)),
              torch.from_numpy(frame_in(name, 40, 52, seed=3))]
    if name in ("rgb", "bgr"):
        frames = [f.permute(2, 0, 1) for f in frames]  # torch images are [3,H,W]
    _same(_run(CudaFrames(seg), frames, name), seg.predict(frames, return_confidence=True, pixel_format=name))


def test_float_frames_resized():
    seg = segmenter(1, size=(30, 20))
    x = torch.from_numpy(image(45, 61, seed=4, n=2)).permute(0, 3, 1, 2).float() / 255
    _same(_run(CudaFrames(seg), x, "rgb"), seg.predict(x, return_confidence=True))


@pytest.mark.parametrize("name", ["rgb", "nv12", "yuyv"])
def test_replayed_loop_reads_each_new_scaled_frame(name):
    """A replayed graph reads its static input, resized into its static network input: each frame's
    answer is its own (nothing stale), in the loop's own readback buffers."""
    seg = segmenter(4)
    frames = [frame_in(name, 52, 70, seed=s) for s in range(4)]
    loop, fr = FrameLoop(graphs=True), CudaFrames(seg)
    got = []
    for f in frames:
        r = _run(fr, f, name, loop=loop)
        got.append((r.labels.copy(), r.confidence.copy()))
    for f, (labels, conf) in zip(frames, got):
        expected = seg.predict(f, return_confidence=True, pixel_format=name)
        assert agreement(labels, expected.labels) >= 0.999
        np.testing.assert_allclose(conf, expected.confidence, rtol=0, atol=2e-4)
    assert not np.array_equal(got[0][1], got[1][1])
    assert len(loop._slots) == 1
    (slot,) = loop._slots._values.values()
    assert tuple(slot.x.shape) == (1, 3, 24, 32)  # the network's input: at the model's scale


class _CRF:
    def __call__(self, image, z, logits, return_labels):
        self.image = image
        return z, z.argmax(1).to(torch.uint8)


@pytest.mark.parametrize("name", ["bgr", "nv12"])
def test_crf_sees_the_rgb_frame_at_its_own_size(name):
    crf = _CRF()
    seg = segmenter(2, crf=crf)
    f = frame_in(name, 40, 56, seed=9)
    expected = seg.predict(f, pixel_format=name).labels
    want_image = crf.image.clone()
    got = _run(CudaFrames(seg), f, name, confidence=False)
    assert agreement(got.labels, expected) >= 0.999
    assert torch.equal(crf.image, want_image) and tuple(crf.image.shape) == (1, 40, 56, 3)


# ----------------------------------------------------------------------------- routing
def _fake_cuda(seg: Segmenter, monkeypatch) -> list:
    """`seg` as on CUDA: its frame path set up (the CPU stands in for the device), its generic path
    forbidden; returns the pixel formats of the frame path's calls."""
    seg._frames = CudaFrames(seg)
    calls = []
    run = seg._frames.run

    def recorded(batch, confidence, loop, stream, fmt):
        calls.append(fmt.name)
        return run(batch, confidence, loop, stream, fmt)

    def generic(*args, **kwargs):
        raise AssertionError("a frame took the generic path on CUDA")

    monkeypatch.setattr(seg._frames, "run", recorded)
    monkeypatch.setattr(seg, "_run", generic)
    return calls


@pytest.mark.parametrize("scaling", [{}, {"scale": 1}, {"size": 20}, {"scale": 0.5}])
def test_on_cuda_every_frame_takes_the_frame_path(scaling, monkeypatch):
    """The packaged model's default (resize towards its training size), scale=1, other sizes, every
    pixel format, predict and stream: all on the frame path."""
    seg = segmenter(1, **scaling)
    calls = _fake_cuda(seg, monkeypatch)
    for name in FORMATS:
        f = frame_in(name, 36, 48, seed=3)
        assert np.asarray(seg.predict(f, pixel_format=name).labels).shape == (36, 48)
        assert [r.labels.shape for r in seg.stream(iter([f, f]), pixel_format=name)] == [(36, 48)] * 2
    assert calls == [fmt for name in FORMATS for fmt in [name.split(":")[0]] * 3]
    nv12 = segmenter(1, pixel_format="nv12", **scaling)
    calls = _fake_cuda(nv12, monkeypatch)
    assert nv12.predict(frame_in("nv12", 36, 48, seed=3)).labels.shape == (36, 48)
    nv12.warmup([(36, 48)])  # warm-up frames are RGB whatever the Segmenter's format
    assert calls == ["nv12"] + ["rgb"] * 3


def test_preprocess_on_cuda_is_the_frame_paths(monkeypatch):
    """Segmenter.preprocess (evaluation's entry) on CUDA resizes and converts as the frame path does."""
    seg = segmenter(1)
    expected = seg.preprocess(torch.from_numpy(frame_in("yuyv", 30, 40, seed=5))[None], hwc=False, size=(15, 20),
                              pixel_format=parse("yuyv"))
    _fake_cuda(seg, monkeypatch)
    got = seg.preprocess(torch.from_numpy(frame_in("yuyv", 30, 40, seed=5))[None], hwc=False, size=(15, 20),
                         pixel_format=parse("yuyv"))
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("name", ["rgb", "nv12"])
def test_the_packaged_model_by_default(name):
    """The packaged model (trained at 360x480) on a 480x640 frame: resized on the frame path, labels
    at the frame's own size, as the generic path gives them (the same runtime: only the resize differs)."""
    seg = Segmenter(runtime="torch")
    f = frame_in(name, 480, 640, seed=12)
    expected = seg.predict(f, return_confidence=True, pixel_format=name)
    got = _run(CudaFrames(seg), f, name)
    assert got.labels.shape == (480, 640)
    _same(got, expected)
