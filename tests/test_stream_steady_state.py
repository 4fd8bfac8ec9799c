"""A video loop's steady state wastes nothing: after warm-up, a frame of an unchanged size starts no
thread (Python or native) and makes no allocation of the frame's order of size, on the CPU runtime
that runs fastseg's kernels around ONNX Runtime (its preprocessing and fused tail)."""
from __future__ import annotations

import threading
import tracemalloc

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from fastseg import _native
from fastseg.segmenter import Segmenter

from _images import image


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the kernels' parallel regions then use a second thread
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_a_steady_frame_starts_no_thread_and_allocates_no_frame(model_file, two_threads, monkeypatch, runtime):
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    seg = Segmenter(str(model_file), runtime=runtime)
    h, w = 192, 256
    frames = [image(h, w, seed=i) for i in range(8)]
    stream = seg.stream(iter(frames))
    first = next(stream).labels
    next(stream)  # warm-up: buffers made, worker threads started

    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self))[1])
    native = _native.ext().threads_started()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        labels = [next(stream).labels for _ in range(2)]
        numpy_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:  # apart: it allocates too
        labels += [next(stream).labels for _ in range(2)]

    assert started == [] and _native.ext().threads_started() == native
    assert all(lab is first for lab in labels)
    # numpy allocations (tracemalloc: their peak, beside a few kB of Python objects per frame) and
    # torch's (its profiler) of a quarter of the frame's labels or more; the torch runtime's own
    # activations are the network's, not the loop's: only ONNX Runtime's arena-backed run is held to none
    small = h * w // 4
    assert numpy_peak < small
    if runtime == "onnxruntime":
        big = [(e.name, e.cpu_memory_usage) for e in prof.events() if e.cpu_memory_usage >= small]
        assert big == []


def test_native_workers_are_started_once(two_threads):
    """Each kernel call around ONNX Runtime used to start its own threads."""
    x = torch.randn(1, 5, 24, 32)
    with _native.own_threads():
        from fastseg.ops import upsample_argmax

        upsample_argmax(x, (96, 128))
        before = _native.ext().threads_started()
        for _ in range(5):
            upsample_argmax(x, (96, 128))
    assert _native.ext().threads_started() == before


def test_winograd_and_confusion_matrix_use_the_same_workers(two_threads):
    """Around another runtime, every native kernel runs on fastseg's one pool: the Winograd transforms
    (a dilated ResNet's convolutions) and the confusion matrix (an evaluation's metric) start no
    thread once the pool is up, and OpenMP's pool is not asked for."""
    from fastseg.metrics import confusion_matrix
    from fastseg.ops import upsample_argmax, winograd

    x = torch.randn(1, 16, 40, 48)
    w = torch.randn(24, 16, 3, 3)
    pred = torch.randint(0, 19, (2, 720, 960), dtype=torch.uint8)
    with _native.own_threads():
        upsample_argmax(torch.randn(1, 5, 240, 320), (960, 1280), return_confidence=True)  # workers started
        before = _native.ext().threads_started()
        assert before >= 1
        for _ in range(3):
            winograd.conv2d(x, w, dilation=2)
            confusion_matrix(pred, pred, 19)
    assert _native.ext().threads_started() == before
