"""One Segmenter shared by several threads: every thread gets exactly the labels a single thread gets.

Each thread streams (and predicts) its own frames; all threads go through the same sizes at the same
time (the size changes every few frames), so any state shared between calls (reuse buffers, output
arrays) shows up as wrong labels.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastseg.models import base as model_base
from fastseg.segmenter import Segmenter

from _images import image

pytestmark = pytest.mark.reliability  # part of the reliability suite (ARCHITECTURE.md)

THREADS = 3
CALLS = 40
SIZES = [(96, 128), (80, 112)]


class ReadsInputLate(model_base.SegmentationModel):
    """A small model that reads its input at the start and again at the end of its run, so an input
    overwritten by another thread while it runs changes its labels (a real network reads it once,
    at its first convolution, and shows the same fault less often)."""

    output_stride = 4

    def __init__(self, classes=5, width=32):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.body = nn.Sequential(*(m for _ in range(6) for m in (nn.Conv2d(width, width, 3, padding=1), nn.ReLU())))
        self.classify = nn.Conv2d(width, classes, 1)
        self.late = nn.Conv2d(3, classes, 1)

    def forward_logits(self, x):
        return self.classify(self.body(self.embed(x))) + 4 * self.late(F.avg_pool2d(x, 4))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReadsInputLate().eval()


def _frames(thread: int) -> list[np.ndarray]:
    """This thread's own frames; the size changes every few frames, as it does for the other threads."""
    return [image(*SIZES[i // 8 % len(SIZES)], seed=100 * thread + i) for i in range(CALLS)]


def _run_threads(work) -> list:
    results: list = [None] * THREADS
    errors: list = []
    start = threading.Barrier(THREADS)

    def body(t):
        try:
            start.wait()
            results[t] = work(t)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_threads_sharing_a_segmenter_get_single_thread_labels(model, runtime):
    seg = Segmenter(model, runtime=runtime)
    frames = [_frames(t) for t in range(THREADS)]
    expected = [[seg.predict(f).labels.copy() for f in fs] for fs in frames]

    def stream(t):
        return [r.labels.copy() for r in seg.stream(iter(frames[t]))]

    def predict(t):
        return [seg.predict(f).labels for f in frames[t]]

    for work in (stream, predict):
        got = _run_threads(work)
        wrong = [(t, i) for t in range(THREADS) for i in range(CALLS)
                 if not np.array_equal(got[t][i], expected[t][i])]
        assert not wrong, f"{work.__name__}: {len(wrong)} of {THREADS * CALLS} calls gave other labels: {wrong[:8]}"
