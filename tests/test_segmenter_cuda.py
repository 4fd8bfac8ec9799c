"""The Segmenter on a real CUDA device: its answer against the CPU's in fp32 / fp16 / bf16, a frame
captured whole as a CUDA graph (a capture fails on any synchronisation), a frame loop under
torch.cuda.set_sync_debug_mode, cuda_graph=True loops, the caller's stream, the CRF with host frames;
the same for frames resized towards the model's scale and in BGR / NV12 / YUYV, and the device's
resize_normalize against the CPU's.

Skipped where torch sees no GPU; `make gpu-check` runs them (marker `gpu`) where one exists. The
CPU-side logic of the same path is tested everywhere in test_segmenter_frames.py.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch

import fastseg
from fastseg import _native
from fastseg.ops.resize_normalize import device as device_resize
from fastseg.ops.resize_normalize import parse, resize_normalize
from fastseg.segmenter import Segmenter

from _images import agreement, frame_in, image

NO_GPU = "needs a CUDA GPU: torch sees none on this machine (make gpu-check runs these where one exists)"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

# labels equal to the CPU's fp32 answer (the packaged model, trained: real margins, few near-ties)
AGREE = {"fp32": 0.999, "fp16": 0.995, "bf16": 0.98}
CONFIDENCE_ATOL = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}
H, W = 360, 480


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return image(H, W, seed=7)


@pytest.fixture(scope="module")
def cpu_answer(frame):
    return Segmenter().predict(frame, return_confidence=True)


@pytest.fixture(scope="module")
def fp16():
    seg = Segmenter(device="cuda", precision="fp16")
    seg.warmup([(H, W)])
    return seg


def _device_frame(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1)[None].contiguous().cuda()


def _bf16_or_skip(precision: str) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} has no bf16")


@pytest.fixture
def ieee_fp32(monkeypatch):
    """fp32 convolutions in full precision: cuDNN's default TF32 keeps 10 mantissa bits, as fp16 does."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_matches_the_cpu(frame, cpu_answer, precision, ieee_fp32):
    _bf16_or_skip(precision)
    seg = Segmenter(device="cuda", precision=precision)
    assert seg.runtime.channels_last and seg.runtime.dtype == seg.dtype
    result = seg.predict(frame, return_confidence=True)
    assert isinstance(result.labels, np.ndarray) and result.labels.dtype == np.uint8
    assert agreement(result.labels, cpu_answer.labels) >= AGREE[precision]
    np.testing.assert_allclose(result.confidence, cpu_answer.confidence, rtol=0, atol=CONFIDENCE_ATOL[precision])
    assert set(result.timings) == {"preprocess", "model", "tail", "total"} and result.timings["model"] > 0

    # a CUDA tensor in: labels stay on the device, with the event that says when they are written
    on_device = seg.predict(_device_frame(frame))
    assert on_device.labels.is_cuda and isinstance(on_device.ready, torch.cuda.Event)
    on_device.ready.synchronize()
    assert agreement(on_device.labels[0].cpu().numpy(), result.labels) >= 0.9999
    # a CPU tensor in: labels read back into page-locked memory
    host = seg.predict(torch.from_numpy(frame).permute(2, 0, 1))
    assert host.labels.device.type == "cpu" and host.labels.is_pinned()
    # a list of sizes
    small = image(120, 200, seed=8)
    both = seg.predict([frame, small])
    assert [b.shape for b in both.labels] == [(H, W), (120, 200)]
    assert agreement(both.labels[1], Segmenter().predict(small).labels) >= AGREE[precision] - 0.01


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_preprocess_on_the_device_equals_the_cpus(frame, precision):
    """One kernel on the device (what evaluation calls too) against the CPU's native normalize."""
    images = torch.from_numpy(frame)[None]
    expected = Segmenter(runtime="torch").preprocess(images, hwc=True)
    seg = Segmenter(device="cuda", precision=precision)
    got = seg.preprocess(images.cuda(), hwc=True)
    assert got.dtype == seg.dtype and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float().cpu(), expected, rtol=1e-3 if precision == "fp16" else 0, atol=1e-6)


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "lraspp_mobilenet_v3_large"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_zoo_models_as_on_the_cpu(name, precision, ieee_fp32):
    torch.manual_seed(0)
    model = fastseg.models.create(name, num_classes=21).eval()
    img = image(200, 264, seed=3)
    expected = Segmenter(model).predict(img).labels
    seg = Segmenter(model, device="cuda", precision=precision)
    got = seg.predict(img).labels
    assert got.shape == expected.shape and got.dtype == expected.dtype
    # random weights: small logit margins, so reduced precision flips near-ties
    assert agreement(got, expected) >= (0.999 if precision == "fp32" else 0.9)
    by_name = Segmenter(name, num_classes=21, device="cuda", precision=precision)
    assert by_name.predict(img).labels.shape == img.shape[:2]


def test_crf_with_host_frames(frame):
    if not _native.has_cuda():
        pytest.skip("fastseg._C was built without CUDA (no nvcc at build time): no CUDA CRF")
    crf = fastseg.crf.DenseCRF()
    expected = Segmenter(crf=crf).predict(frame).labels
    seg = Segmenter(device="cuda", crf=crf)
    for batch in (frame, torch.from_numpy(frame).permute(2, 0, 1), [frame, image(100, 140, seed=2)]):
        labels = seg.predict(batch).labels
        first = labels[0] if isinstance(labels, list) else labels
        assert agreement(np.asarray(first), expected) >= 0.99
    on_device = seg.predict(_device_frame(frame))
    on_device.ready.synchronize()
    assert agreement(on_device.labels[0].cpu().numpy(), expected) >= 0.99


def _captured(run):
    """run() once on a side stream (first-call costs), then captured whole: (the graph, its result)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    return graph, captured


def test_a_frame_captures_whole_as_a_cuda_graph(fp16, frame):
    """Capture fails on anything that waits for the device (a sync, a blocking copy, .item(), a
    stream synchronisation inside an extension): a steady-state frame must capture whole."""
    x = _device_frame(frame)
    graph, captured = _captured(lambda: fp16.predict(x, return_confidence=True))
    assert captured.ready is None and captured.timings["total"] == 0.0  # no events inside a capture
    other = image(H, W, seed=9)
    x.copy_(_device_frame(other))
    graph.replay()
    torch.cuda.synchronize()
    expected = fp16.predict(other)
    assert agreement(captured.labels.cpu().numpy()[0], expected.labels) == 1.0


def test_a_frame_loop_does_not_synchronise(fp16, frame):
    frames = [_device_frame(image(H, W, seed=s)) for s in range(5)]
    torch.cuda.synchronize()
    results = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for result in fp16.stream(iter(frames)):  # CUDA tensors in: labels stay on the device
            results.append(result.labels.clone())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    for x, labels in zip(frames, results):
        assert torch.equal(labels, fp16.predict(x).labels)

    # host frames: the readback is the one wait of a frame
    host = [image(H, W, seed=s) for s in range(5)]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in fp16.stream(iter(host)):
                pass
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= len(host), [str(w.message) for w in syncs]


def test_cuda_graph_loop_equals_the_eager_one(frame):
    eager = Segmenter(device="cuda", precision="fp16")
    graphed = Segmenter(device="cuda", precision="fp16", cuda_graph=True)
    graphed.warmup([(H, W)])
    frames = [image(H, W, seed=s) for s in range(4)] + [image(120, 200, seed=5), image(H, W, seed=6)]
    for f, result in zip(frames, graphed.stream(iter(frames), return_confidence=True)):
        expected = eager.predict(f, return_confidence=True)
        assert agreement(result.labels, expected.labels) >= 0.9999  # the same kernels, replayed
        np.testing.assert_allclose(result.confidence, expected.confidence, rtol=0, atol=1e-3)
    device = [_device_frame(f) for f in frames[:3]]
    for x, result in zip(device, graphed.stream(iter(device))):
        result.ready.synchronize()
        assert torch.equal(result.labels, eager.predict(x).labels)


def test_the_callers_stream_is_used(fp16, frame):
    """The frame's kernels must run on the caller's stream, after what was queued there before: a
    frame written into the input on that stream behind a long wait must be the one segmented."""
    first, second = _device_frame(image(H, W, seed=10)), _device_frame(frame)
    expected = fp16.predict(second).labels
    stream = torch.cuda.Stream()
    x = first.clone()
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU clock cycles
        x.copy_(second)
        current = fp16.predict(x)        # the current stream: `stream`
    given = fp16.predict(x, stream=stream)
    assert not given.ready.query()       # queued behind the wait
    stream.synchronize()
    assert torch.equal(current.labels, expected) and torch.equal(given.labels, expected)


def test_two_threads_loop_on_one_segmenter():
    """Two stream loops on one Segmenter from two threads, each on its own stream, capturing graphs
    while the other runs: each gets its own frames' answers."""
    seg = Segmenter(device="cuda", precision="fp16", cuda_graph=True)
    seg.warmup([(H, W)])
    frames = {t: [image(H, W, seed=10 * t + k) for k in range(4)] for t in range(2)}
    got: dict = {}

    def loop(t):
        stream = torch.cuda.Stream()
        got[t] = [r.labels.copy() for r in seg.stream(iter(frames[t]), stream=stream)]

    threads = [threading.Thread(target=loop, args=(t,)) for t in frames]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    eager = Segmenter(device="cuda", precision="fp16")
    for t in frames:
        for f, labels in zip(frames[t], got[t]):
            assert agreement(labels, eager.predict(f).labels) >= 0.9999


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_second_device(frame, cpu_answer):
    seg = Segmenter(device="cuda:1", precision="fp16")
    result = seg.predict(frame)
    assert agreement(result.labels, cpu_answer.labels) >= AGREE["fp16"]
    on_device = seg.predict(_device_frame(frame).to("cuda:1"))
    assert on_device.labels.device == torch.device("cuda:1")


# ----------------------------------------------------------------------------- scaled frames, pixel formats
FORMATS = ["rgb", "bgr", "nv12", "yuyv"]
BIG = (720, 960)  # the packaged model runs it at 360x480: resized on the device, labels at 720x960


def _device_frames(name: str, h: int, w: int, seed: int) -> torch.Tensor:
    """A batch of one frame in pixel format `name` on the GPU ([1,3,H,W] for RGB / BGR)."""
    f = torch.from_numpy(frame_in(name, h, w, seed=seed))[None]
    return (f.permute(0, 3, 1, 2) if name in ("rgb", "bgr") else f).contiguous().cuda()


@pytest.mark.parametrize("case", [((1, 720, 960), (360, 480)), ((2, 38, 54), (11, 29)), ((1, 100, 76), (240, 180)),
                                  ((1, 2880, 3840), (360, 480)), ((1, 10, 4), (3, 1)), ((2, 124, 78), (2, 1)),
                                  ((1, 64, 64), (64, 21)), ((3, 18, 32), (18, 32))], ids=str)
@pytest.mark.parametrize("name", FORMATS + ["nv12:bt709:full"])
def test_device_resize_normalize_equals_the_cpus(case, name):
    """The frame path's preprocessing on CUDA tensors (torch's CUDA antialiased kernel) against the
    CPU's native kernel, within that kernel's own tolerance against its reference."""
    (N, H, W), size = case
    host = torch.from_numpy(frame_in(name, H, W, seed=H + W, n=N))
    if name in ("rgb", "bgr"):
        host = host.permute(0, 3, 1, 2)
    scale, shift = torch.rand(3) * 0.02 + 0.01, torch.rand(3) * 2
    want = resize_normalize(host, size, scale, shift, pixel_format=name)
    out = torch.empty((N, 3, *size), device="cuda").contiguous(memory_format=torch.channels_last)
    got = device_resize.resize_normalize_into(host.cuda(), parse(name), scale.cuda().view(1, 3, 1, 1),
                                              -shift.cuda().view(1, 3, 1, 1), out)
    torch.testing.assert_close(got.cpu(), want, atol=2e-4, rtol=0)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_scaled_frames_match_the_cpu(name, precision, ieee_fp32):
    """The packaged model's default on a GPU: frames resized towards its training size on the frame
    path, labels at the frame's own size, as on the CPU."""
    seg = Segmenter(device="cuda", precision=precision)
    cpu = Segmenter()
    for h, w in (BIG, (500, 614)):  # even sizes: NV12 and YUYV need them
        f = frame_in(name, h, w, seed=h)
        expected = cpu.predict(f, return_confidence=True, pixel_format=name)
        result = seg.predict(f, return_confidence=True, pixel_format=name)
        assert result.labels.shape == (h, w) and result.labels.dtype == np.uint8
        assert agreement(result.labels, expected.labels) >= AGREE[precision]
        np.testing.assert_allclose(result.confidence, expected.confidence, rtol=0, atol=CONFIDENCE_ATOL[precision])
        on_device = seg.predict(_device_frames(name, h, w, seed=h), pixel_format=name)
        on_device.ready.synchronize()
        assert agreement(on_device.labels[0].cpu().numpy(), result.labels) >= 0.9999


@pytest.mark.parametrize("name", ["nv12", "bgr"])
def test_a_scaled_frame_captures_whole_as_a_cuda_graph(fp16, name):
    """Conversion, antialiased resize, network and tail to the frame's own size: no synchronisation."""
    x = _device_frames(name, *BIG, seed=1)
    graph, captured = _captured(lambda: fp16.predict(x, pixel_format=name))
    assert tuple(captured.labels.shape) == (1, *BIG)
    x.copy_(_device_frames(name, *BIG, seed=2))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured.labels, fp16.predict(x, pixel_format=name).labels)


@pytest.mark.parametrize("name", FORMATS)
def test_a_scaled_frame_loop_does_not_synchronise(fp16, name):
    frames = [_device_frames(name, *BIG, seed=s) for s in range(4)]
    for _ in fp16.stream(iter(frames[:1]), pixel_format=name):  # first-call costs of this size
        pass
    torch.cuda.synchronize()
    results = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for result in fp16.stream(iter(frames), pixel_format=name):
            results.append(result.labels.clone())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    for x, labels in zip(frames, results):
        assert torch.equal(labels, fp16.predict(x, pixel_format=name).labels)

    host = [frame_in(name, *BIG, seed=s) for s in range(4)]
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in fp16.stream(iter(host), pixel_format=name):
                pass
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= len(host), [str(w.message) for w in syncs]


@pytest.mark.parametrize("name", ["rgb", "yuyv"])
def test_cuda_graph_loop_of_scaled_frames_equals_the_eager_one(name):
    eager = Segmenter(device="cuda", precision="fp16")
    graphed = Segmenter(device="cuda", precision="fp16", cuda_graph=True)
    frames = [frame_in(name, *BIG, seed=s) for s in range(4)] + [frame_in(name, 240, 320, seed=5)]
    for f, result in zip(frames, graphed.stream(iter(frames), return_confidence=True, pixel_format=name)):
        expected = eager.predict(f, return_confidence=True, pixel_format=name)
        assert result.labels.shape == f.shape[:2]
        assert agreement(result.labels, expected.labels) >= 0.9999  # the same kernels, replayed
        np.testing.assert_allclose(result.confidence, expected.confidence, rtol=0, atol=1e-3)
