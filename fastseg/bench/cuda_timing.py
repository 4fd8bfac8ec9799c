"""Timing on a CUDA device: the same interleaved medians as `timing.interleaved_medians`, measured
with CUDA events (host clocks would time the launch, not the work), and the latency of frames in a
Segmenter loop as a real-time caller sees it."""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import torch


def event_medians(candidates: dict, rounds: int, warmup: int = 1, settle: float = 0.0) -> dict:
    """Median seconds per call of each candidate, round-robin, each call between two CUDA events on
    the current stream; the host waits for the device only between rounds, outside every timed span.
    settle: unused (a GPU has no spinning thread pools); kept for `measure`'s timer signature."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    samples: dict = {name: [] for name in candidates}
    for _ in range(rounds):
        spans = []
        for name, fn in candidates.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            spans.append((name, start, end))
        torch.cuda.synchronize()
        for name, start, end in spans:
            samples[name].append(start.elapsed_time(end) / 1e3)
    return {name: statistics.median(s) for name, s in samples.items()}


def frame_latencies(loop: Iterator, seconds: float, min_frames: int = 10, max_frames: int = 300) -> list[float]:
    """Seconds from one result of `loop` (an iterator of results, e.g. `Segmenter.stream`) to the next,
    host clock: what a caller waits per frame, readback included. Runs for about `seconds`, at
    least `min_frames` frames, after a first frame left untimed (where the loop allocates its
    buffers, or captures its CUDA graph)."""
    out: list[float] = []
    next(loop, None)
    start = last = time.perf_counter()
    for _ in loop:
        now = time.perf_counter()
        out.append(now - last)
        last = now
        if len(out) >= max_frames or (len(out) >= min_frames and now - start >= seconds):
            break
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the nearest ranks."""
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)
