"""Same-run, interleaved timing: the only kind of speed claim these noisy machines support."""
from __future__ import annotations

import statistics
import time


def interleaved_medians(candidates: dict, rounds: int, warmup: int = 1) -> dict:
    """Median seconds per call of each candidate, timed round-robin so drift hits all alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}
