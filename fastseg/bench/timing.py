"""Same-run, interleaved timing: the only kind of speed claim these noisy machines support (every
benchmark case times its candidates with interleaved_medians)."""
from __future__ import annotations

import statistics
import time

# Idle seconds after each call when a candidate runs on ONNX Runtime: torch's OpenMP workers spin
# for ~5 ms after a parallel region, and an ORT run started in that window lost ~10 % to them, so
# each candidate is timed from a machine at rest, as when it is called alone.
SETTLE = 0.03


def interleaved_medians(candidates: dict, rounds: int, warmup: int = 1, settle: float = 0.0) -> dict:
    """Median seconds per call of each candidate, timed round-robin so drift hits all alike.

    settle: idle seconds after each call, untimed. Thread pools keep spinning for a while after
    their work is done (libgomp's OpenMP workers for milliseconds); without a pause the next
    candidate, when it runs on another pool (ONNX Runtime), would pay for the previous one's spin."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
            if settle:
                time.sleep(settle)
    return {name: statistics.median(s) for name, s in samples.items()}
