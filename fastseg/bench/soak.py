"""A long soak: many frames through the default Segmenter, the resident set and the latency sampled
along the way, to show that neither drifts (a leak, a cache that grows, a slowing allocator).

    python -m fastseg.bench.soak                         # 20,000 frames, runs/soak/soak.json
    python -m fastseg.bench.soak --frames 2000 --every 200 --out runs/soak/short.json

Frames are video-sized (360x480 by default), a few different ones in turn, through `predict` (or
`--api stream`). Every `--every` frames a sample records the frame count, the resident set and that
window's median and 99th-percentile latency. The JSON file holds the machine, the samples and a
summary: the resident set at the start (after a warm-up) and the end, its largest sample, and the
latency percentiles over the whole run. It is a benchmark, not a test: it takes long, and its
figures are for reading (a growing resident set is the finding), not for a pass / fail.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from .measure import smooth_image
from .memory import _status

WARMUP = 20  # frames before the first sample: first-call costs and the allocators' first requests


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def soak(frames: int, every: int, size: tuple[int, int], api: str, progress=None) -> dict:
    from .. import Segmenter

    seg = Segmenter()
    images = [smooth_image(*size, seed=s) for s in range(8)]
    for i in range(WARMUP):
        seg.predict(images[i % len(images)])

    latencies: list[float] = []
    samples = [{"frame": 0, "rss_bytes": _status("VmRSS"), "p50_ms": None, "p99_ms": None}]
    started = time.perf_counter()

    def timed_frames():
        for i in range(frames):
            yield images[i % len(images)]

    def results():
        if api == "stream":
            yield from seg.stream(timed_frames())
        else:
            for image in timed_frames():
                yield seg.predict(image)

    window: list[float] = []
    t0 = time.perf_counter()
    for done, _ in enumerate(results(), 1):
        t1 = time.perf_counter()
        window.append(t1 - t0)
        if done % every == 0 or done == frames:
            samples.append({"frame": done, "rss_bytes": _status("VmRSS"),
                            "p50_ms": 1e3 * statistics.median(window), "p99_ms": 1e3 * percentile(window, 99)})
            latencies += window
            window = []
            if progress:
                progress(samples[-1])
        t0 = time.perf_counter()
    seconds = time.perf_counter() - started
    rss = [s["rss_bytes"] for s in samples]
    return {
        "frames": frames, "size": list(size), "api": api, "runtime": seg.runtime.name, "seconds": seconds,
        "seconds_per_1000_frames": 1000 * seconds / max(frames, 1),
        "rss_start_bytes": rss[0], "rss_end_bytes": rss[-1], "rss_max_bytes": max(rss),
        "p50_ms": 1e3 * statistics.median(latencies), "p99_ms": 1e3 * percentile(latencies, 99),
        "samples": samples,
    }


def summary(result: dict) -> str:
    mib = 2**20
    return (f"{result['frames']} frames {result['size'][0]}x{result['size'][1]} ({result['api']}, "
            f"{result['runtime']}): resident {result['rss_start_bytes'] / mib:.0f} MiB at the start, "
            f"{result['rss_end_bytes'] / mib:.0f} MiB at the end (largest {result['rss_max_bytes'] / mib:.0f} MiB); "
            f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
            f"{result['seconds_per_1000_frames']:.0f} s per 1,000 frames")


def main(argv=None) -> int:
    from .._atomic import write_text
    from . import results

    parser = argparse.ArgumentParser(prog="python -m fastseg.bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=500, help="frames between samples")
    parser.add_argument("--size", default="360x480", help="HxW of the frames")
    parser.add_argument("--api", choices=("predict", "stream"), default="predict")
    parser.add_argument("--out", type=Path, default=Path("runs") / "soak" / "soak.json")
    args = parser.parse_args(argv)
    h, _, w = args.size.partition("x")
    if args.frames < 1 or args.every < 1 or not (h.isdigit() and w.isdigit()):
        parser.error("--frames and --every must be positive, --size HxW")
    machine, started = results.machine(), results.now()

    def progress(sample):
        print(f"  {sample['frame']:>6} frames: resident {sample['rss_bytes'] / 2**20:.0f} MiB, "
              f"p50 {sample['p50_ms']:.1f} ms, p99 {sample['p99_ms']:.1f} ms", file=sys.stderr, flush=True)

    result = soak(args.frames, args.every, (int(h), int(w)), args.api, progress)
    result = {"machine": machine, "started": started.isoformat(), **result}
    write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(summary(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
