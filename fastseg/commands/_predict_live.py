"""`fastseg predict --live SOURCE`: segment a camera, a stream URL or a file played at its own frame
rate, always the newest frame (older ones are dropped while the model runs, so latency stays bounded).

Writes OUT/{labels,color,overlay}/NAME.{mkv,mp4} (as for a video file, see _predict_video.py) with
each segmented frame at its capture time, NAME being the file's name or "live", until the source
ends or Ctrl-C; then prints the frames received, segmented and dropped, and the latency percentiles.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._predict_video import VideoOutputs, output_paths


def run_live(args, seg, palette: np.ndarray) -> int:
    from ..video.reader import VideoDecodeError

    key = Path(args.live).stem if Path(args.live).is_file() else "live"
    paths = output_paths(args.out, key, args.save)
    latencies: list[float] = []
    stream = seg.stream(args.live, live=True)
    outputs = None
    status, start = 0, None
    try:
        with stream, tqdm(unit="frame", desc=f"live {args.live}", file=sys.stderr) as bar:
            for result in stream:
                if outputs is None:  # the size is known from the first frame
                    h, w = result.labels.shape
                    outputs = VideoOutputs(paths, w, h, None, palette, args.alpha).__enter__()
                    start = result.timestamp
                outputs.write(result.frame, result.labels, result.timestamp - start)
                latencies.append(result.latency)
                bar.update()
                bar.set_postfix(dropped=stream.dropped, latency_ms=f"{1e3 * result.latency:.0f}")
    except KeyboardInterrupt:  # the usual way to end a camera: keep what was written
        pass
    except (VideoDecodeError, ImportError) as exc:
        print(f"fastseg predict: --live: {exc}", file=sys.stderr)
        status = 1
    finally:
        if outputs is not None:
            outputs.__exit__(None, None, None)
    _report(stream, latencies, time.perf_counter() - (start or time.perf_counter()))
    return status if latencies else 1


def _report(stream, latencies: list[float], seconds: float) -> None:
    if not latencies:
        print("no frame segmented")
        return
    ms = 1e3 * np.asarray(latencies)
    p50, p99 = np.percentile(ms, [50, 99])
    print(f"done: {stream.processed} frames segmented of {stream.received} received, {stream.dropped} dropped; "
          f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {ms.max():.0f} ms; "
          f"{stream.processed / max(seconds, 1e-9):.1f} frames/s")
